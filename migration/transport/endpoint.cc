// File: migration/transport/endpoint.cc
#include "migration/transport/endpoint.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace livemig {
namespace {

constexpr std::string_view kUnixPrefix = "unix:";
constexpr char kUnixPrefixCStr[] = "unix:";

absl::Status Invalid(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "bad endpoint \"", absl::string_view(text.data(), text.size()),
      "\": ", absl::string_view(why.data(), why.size()),
      " (want HOST:PORT, [IPV6]:PORT, unix:PATH or fd:N[,N...])"));
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

Endpoint Endpoint::Tcp(std::string host, uint16_t port) {
  Endpoint endpoint;
  endpoint.kind = Kind::kTcp;
  endpoint.host = std::move(host);
  endpoint.port = port;
  return endpoint;
}

Endpoint Endpoint::Unix(std::string path) {
  Endpoint endpoint;
  endpoint.kind = Kind::kUnix;
  endpoint.path = std::move(path);
  return endpoint;
}

Endpoint Endpoint::Fds(std::vector<int> fds) {
  Endpoint endpoint;
  endpoint.kind = Kind::kFd;
  endpoint.fds = std::move(fds);
  return endpoint;
}

absl::StatusOr<Endpoint> Endpoint::Parse(std::string_view text) {
  if (text.substr(0, 3) == "fd:") {
    std::vector<int> fds;
    std::string_view rest = text.substr(3);
    while (true) {
      const size_t comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      int fd = 0;
      if (item.empty() || !AllDigits(item) || item.size() > 9 ||
          !absl::SimpleAtoi(absl::string_view(item.data(), item.size()), &fd)) {
        return Invalid(text, "file descriptors must be decimal numbers, comma-separated");
      }
      for (int seen : fds) {
        if (seen == fd) return Invalid(text, absl::StrCat("descriptor ", fd, " given twice"));
      }
      fds.push_back(fd);
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
    return Fds(std::move(fds));
  }
  if (text.substr(0, kUnixPrefix.size()) == kUnixPrefix) {
    std::string_view path = text.substr(kUnixPrefix.size());
    if (path.empty()) return Invalid(text, "empty Unix socket path");
    if (path.size() > kMaxUnixPathLength) {
      return Invalid(text, absl::StrCat("Unix socket path longer than ",
                                        kMaxUnixPathLength, " bytes"));
    }
    if (path.find('\0') != std::string_view::npos) {
      return Invalid(text, "NUL byte in Unix socket path");
    }
    return Unix(std::string(path));
  }

  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return Invalid(text, "missing ']' after IPv6 address");
    }
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return Invalid(text, "missing ':PORT' after ']'");
    }
    port_text = rest.substr(1);
    if (host.find(':') == std::string_view::npos) {
      return Invalid(text, "brackets are only for IPv6 addresses");
    }
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return Invalid(text, "missing ':PORT'");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return Invalid(text, "an IPv6 address must be written [ADDRESS]:PORT");
    }
  }
  if (host.empty()) return Invalid(text, "empty host");
  for (char c : host) {
    if (c == ' ' || c == '\t' || c == '\0' || c == '[' || c == ']' ||
        c == '/') {
      return Invalid(text, "bad character in host");
    }
  }
  uint32_t port = 0;
  if (!AllDigits(port_text) || port_text.size() > 5 ||
      !absl::SimpleAtoi(absl::string_view(port_text.data(), port_text.size()),
                        &port) ||
      port > 65535) {
    return Invalid(text, "port must be a decimal number 0..65535");
  }
  return Tcp(std::string(host), static_cast<uint16_t>(port));
}

std::string Endpoint::ToString() const {
  if (kind == Kind::kUnix) return absl::StrCat(kUnixPrefixCStr, path);
  if (kind == Kind::kFd) return absl::StrCat("fd:", absl::StrJoin(fds, ","));
  if (host.find(':') != std::string::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace livemig
