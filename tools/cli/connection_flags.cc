#include "tools/cli/connection_flags.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace livemig::cli {

absl::StatusOr<Endpoint> EndpointFromFlags(const char* tcp_flag, const std::string& tcp,
                                           const std::string& unix_path,
                                           const std::string& fds) {
  if (int(!unix_path.empty()) + int(!tcp.empty()) + int(!fds.empty()) > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("give one of --", tcp_flag, ", --unix and --fd"));
  }
  if (!unix_path.empty()) return Endpoint::Unix(unix_path);
  if (!fds.empty()) {
    absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(absl::StrCat("fd:", fds));
    if (!endpoint.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--fd: ", endpoint.status().message()));
    }
    return endpoint;
  }
  if (tcp.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, "=HOST:PORT, --unix=PATH or --fd=N[,N...] is required"));
  }
  absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(tcp);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, ": ", endpoint.status().message()));
  }
  return endpoint;
}

absl::StatusOr<absl::Duration> IoTimeoutFromFlag(double seconds) {
  const double s = seconds;
  if (!(s > 0) || !std::isfinite(s)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--io-timeout-s=", s, ": expected a finite number of seconds above 0"));
  }
  return absl::Seconds(s);
}

absl::StatusOr<std::shared_ptr<const TlsContext>> DestinationTlsFromFlags(
    const std::string& dir) {
  if (dir.empty()) return std::shared_ptr<const TlsContext>();
  auto tls = TlsContext::ForDestination(dir);
  if (!tls.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-dir: ", tls.status().message()));
  }
  return *tls;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> SourceTlsFromFlags(
    const std::string& dir, const std::string& hostname, const Endpoint& destination) {
  if (dir.empty()) {
    if (!hostname.empty()) {
      return absl::InvalidArgumentError("--tls-hostname needs --tls-dir");
    }
    return std::shared_ptr<const TlsContext>();
  }
  std::string name = hostname;
  if (name.empty()) {
    if (destination.kind != Endpoint::Kind::kTcp) {
      return absl::InvalidArgumentError(
          "--tls-dir over --unix or --fd needs --tls-hostname: the name the destination's "
          "certificate must carry");
    }
    name = destination.host;
  }
  auto tls = TlsContext::ForSource(dir, name);
  if (!tls.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-dir: ", tls.status().message()));
  }
  return *tls;
}

}  // namespace livemig::cli
