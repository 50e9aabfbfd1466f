// File: migration/transport/internal/socket_util.h
//
// Internal to //migration/transport: the Asio socket types behind Connection
// and Listener, kept out of the public headers so users do not compile Asio,
// and the deadline/poll helper every blocking operation is built on.
// Thread safety: Deadline is a value; WaitReady is thread-safe; AnySocket and
// AnyAcceptor follow Asio's rule (one thread mutates an object at a time) and
// their native handles may be used from any thread while they are open.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_SOCKET_UTIL_H_
#define LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_SOCKET_UTIL_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/transport/endpoint.h"

namespace livemig::transport_internal {

using TcpSocket = boost::asio::ip::tcp::socket;
using UnixSocket = boost::asio::local::stream_protocol::socket;
using TcpAcceptor = boost::asio::ip::tcp::acceptor;
using UnixAcceptor = boost::asio::local::stream_protocol::acceptor;

// The process-wide io_context every socket is created on. Sockets here are
// only used synchronously (non-blocking calls plus poll), so it is never run;
// it exists because Asio objects need one. Never destroyed.
boost::asio::io_context& SharedIoContext();

// One open stream socket of either family.
struct AnySocket {
  std::variant<TcpSocket, UnixSocket> socket;

  int native_handle();
  bool is_tcp() const { return socket.index() == 0; }
  void Close();  // Errors ignored: nothing useful can be done about them.
};

// One listening socket of either family.
struct AnyAcceptor {
  std::variant<TcpAcceptor, UnixAcceptor> acceptor;

  int native_handle();
  void Close();
};

// A point in steady time after which an operation gives up. Built from a
// timeout; absl::InfiniteDuration() (or anything beyond a year) never
// expires, zero or negative has already expired (one non-blocking attempt).
class Deadline {
 public:
  explicit Deadline(absl::Duration timeout);

  bool Expired() const;
  // Milliseconds to pass to poll(2): -1 when infinite, 0 when expired,
  // otherwise the remaining time rounded up.
  int PollTimeoutMs() const;
  // The earlier of this deadline and `when`.
  Deadline Until(std::chrono::steady_clock::time_point when) const;

 private:
  bool infinite_;
  std::chrono::steady_clock::time_point when_;
};

enum class WaitResult {
  kReady,     // `fd` reported one of `events` (or an error/hangup).
  kWoken,     // `wake_fd` became readable: the object was shut down.
  kTimedOut,  // The deadline passed first.
};

// poll(2) on `fd` for `events` and on `wake_fd` for POLLIN, until one is
// ready or `deadline` passes. Retries EINTR. `wake_fd` may be -1.
absl::StatusOr<WaitResult> WaitReady(int fd, short events, int wake_fd,
                                     const Deadline& deadline);

// A socket of the right family holding a dup() of `fd`, which must be a
// connected stream socket (AF_INET, AF_INET6 or AF_UNIX); *peer names the
// other end. InvalidArgument naming the descriptor otherwise.
absl::StatusOr<std::unique_ptr<AnySocket>> AdoptConnectedFd(int fd, std::string* peer);

// An eventfd used to wake pollers on shutdown (non-blocking, close-on-exec).
absl::StatusOr<int> MakeWakeFd();
// Makes `wake_fd` readable forever; safe from any thread, any number of times.
void SignalWakeFd(int wake_fd);
// Makes `wake_fd` unreadable again (reads its counter), after a wake-up that
// was not a shutdown.
void DrainWakeFd(int wake_fd);

// The addresses a kTcp endpoint names, in the resolver's order of
// preference. Numeric hosts are not looked up. InvalidArgument for an empty
// host; NotFound when the name does not resolve.
absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>> ResolveTcp(
    const Endpoint& endpoint);

// The Asio endpoint of a kUnix Endpoint. InvalidArgument for an empty path or
// one longer than Endpoint::kMaxUnixPathLength.
absl::StatusOr<boost::asio::local::stream_protocol::endpoint> UnixAddress(
    const Endpoint& endpoint);

// An Endpoint naming an Asio TCP endpoint (IPv6 printed bracketed by
// Endpoint::ToString).
Endpoint FromAsio(const boost::asio::ip::tcp::endpoint& endpoint);

// "1.5s", "250ms" — for messages.
std::string FormatTimeout(absl::Duration timeout);

}  // namespace livemig::transport_internal

#endif  // LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_SOCKET_UTIL_H_
