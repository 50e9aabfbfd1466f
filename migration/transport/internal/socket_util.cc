// File: migration/transport/internal/socket_util.cc
#include "migration/transport/internal/socket_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <boost/asio/ip/address.hpp>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/posix_error.h"

namespace livemig::transport_internal {

boost::asio::io_context& SharedIoContext() {
  // Leaked on purpose: sockets may be closed by static destructors of other
  // translation units, after this one would have been destroyed.
  static auto* const context = new boost::asio::io_context(1);
  return *context;
}

absl::StatusOr<std::unique_ptr<AnySocket>> AdoptConnectedFd(int fd, std::string* peer) {
  const std::string name = absl::StrCat("fd ", fd);
  int type = 0;
  socklen_t type_length = sizeof(type);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": not a socket (", std::strerror(errno), ")"));
  }
  sockaddr_storage address{};
  socklen_t address_length = sizeof(address);
  if (type != SOCK_STREAM ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a stream socket"));
  }
  sockaddr_storage remote{};
  socklen_t remote_length = sizeof(remote);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&remote), &remote_length) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not connected"));
  }
  const int family = address.ss_family;
  if (family != AF_INET && family != AF_INET6 && family != AF_UNIX) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": socket family ", family,
                                                   " (want TCP or Unix)"));
  }
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return PosixError(absl::StrCat("dup ", name), errno);
  boost::asio::io_context& context = SharedIoContext();
  boost::system::error_code ec;
  std::unique_ptr<AnySocket> socket;
  if (family == AF_UNIX) {
    socket = std::make_unique<AnySocket>(AnySocket{UnixSocket(context)});
    std::get<UnixSocket>(socket->socket).assign(boost::asio::local::stream_protocol(), copy, ec);
  } else {
    socket = std::make_unique<AnySocket>(AnySocket{TcpSocket(context)});
    std::get<TcpSocket>(socket->socket)
        .assign(family == AF_INET ? boost::asio::ip::tcp::v4() : boost::asio::ip::tcp::v6(),
                copy, ec);
  }
  if (ec) {
    ::close(copy);
    return PosixError(absl::StrCat("adopt ", name), ec.value());
  }
  *peer = name;
  return socket;
}

int AnySocket::native_handle() {
  return std::visit([](auto& s) { return static_cast<int>(s.native_handle()); },
                    socket);
}

void AnySocket::Close() {
  std::visit(
      [](auto& s) {
        boost::system::error_code ignored;
        s.close(ignored);
      },
      socket);
}

int AnyAcceptor::native_handle() {
  return std::visit([](auto& a) { return static_cast<int>(a.native_handle()); },
                    acceptor);
}

void AnyAcceptor::Close() {
  std::visit(
      [](auto& a) {
        boost::system::error_code ignored;
        a.close(ignored);
      },
      acceptor);
}

Deadline::Deadline(absl::Duration timeout)
    : infinite_(timeout > absl::Hours(24 * 365)),
      when_(std::chrono::steady_clock::now()) {
  if (!infinite_ && timeout > absl::ZeroDuration()) {
    when_ += absl::ToChronoNanoseconds(timeout);
  }
}

bool Deadline::Expired() const {
  return !infinite_ && std::chrono::steady_clock::now() >= when_;
}

int Deadline::PollTimeoutMs() const {
  if (infinite_) return -1;
  const auto remaining = when_ - std::chrono::steady_clock::now();
  if (remaining <= std::chrono::steady_clock::duration::zero()) return 0;
  const auto ms =
      std::chrono::ceil<std::chrono::milliseconds>(remaining).count();
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

Deadline Deadline::Until(std::chrono::steady_clock::time_point when) const {
  Deadline earlier = *this;
  if (infinite_ || when < when_) {
    earlier.infinite_ = false;
    earlier.when_ = when;
  }
  return earlier;
}

absl::StatusOr<WaitResult> WaitReady(int fd, short events, int wake_fd,
                                     const Deadline& deadline) {
  while (true) {
    pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
    const int nfds = wake_fd >= 0 ? 2 : 1;
    const int timeout_ms = deadline.PollTimeoutMs();
    const int ready = ::poll(fds, nfds, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return PosixError("poll", errno);
    }
    if (nfds == 2 && (fds[1].revents & POLLIN) != 0) return WaitResult::kWoken;
    if (fds[0].revents != 0) return WaitResult::kReady;
    // Nothing ready: either the deadline passed or poll rounded down a hair.
    if (timeout_ms == 0 || deadline.Expired()) return WaitResult::kTimedOut;
  }
}

absl::StatusOr<int> MakeWakeFd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return PosixError("eventfd", errno);
  return fd;
}

void SignalWakeFd(int wake_fd) {
  const uint64_t one = 1;
  // EAGAIN (counter saturated) still leaves it readable: ignore the result.
  [[maybe_unused]] const ssize_t n = ::write(wake_fd, &one, sizeof(one));
}

void DrainWakeFd(int wake_fd) {
  uint64_t count = 0;
  // EAGAIN: nothing to drain (someone else drained it).
  [[maybe_unused]] const ssize_t n = ::read(wake_fd, &count, sizeof(count));
}

absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>> ResolveTcp(
    const Endpoint& endpoint) {
  using boost::asio::ip::tcp;
  if (endpoint.host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint ", endpoint.ToString(), " has an empty host"));
  }
  boost::system::error_code ec;
  const boost::asio::ip::address address =
      boost::asio::ip::make_address(endpoint.host, ec);
  if (!ec)
    return std::vector<tcp::endpoint>{tcp::endpoint(address, endpoint.port)};

  tcp::resolver resolver(SharedIoContext());
  const auto results =
      resolver.resolve(endpoint.host, std::to_string(endpoint.port),
                       tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return absl::NotFoundError(absl::StrCat("cannot resolve ", endpoint.host,
                                            " (endpoint ", endpoint.ToString(),
                                            "): ", ec.message()));
  }
  std::vector<tcp::endpoint> endpoints;
  for (const auto& entry : results) endpoints.push_back(entry.endpoint());
  return endpoints;
}

absl::StatusOr<boost::asio::local::stream_protocol::endpoint> UnixAddress(
    const Endpoint& endpoint) {
  if (endpoint.path.empty() ||
      endpoint.path.size() > Endpoint::kMaxUnixPathLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Unix socket path of ", endpoint.ToString(), " must be 1..",
        Endpoint::kMaxUnixPathLength, " bytes, is ", endpoint.path.size()));
  }
  // Checked above: this constructor throws on an over-long path.
  return boost::asio::local::stream_protocol::endpoint(endpoint.path);
}

Endpoint FromAsio(const boost::asio::ip::tcp::endpoint& endpoint) {
  return Endpoint::Tcp(endpoint.address().to_string(), endpoint.port());
}

std::string FormatTimeout(absl::Duration timeout) {
  return absl::FormatDuration(timeout);
}

}  // namespace livemig::transport_internal
