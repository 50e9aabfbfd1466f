// File: migration/transport/listener.h
//
// Listener: a listening TCP or Unix socket that hands out Connections.
//
//   LIVEMIG_ASSIGN_OR_RETURN(auto listener,
//                            Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
//   Endpoint where = listener->local_endpoint();  // the port it got
//   LIVEMIG_ASSIGN_OR_RETURN(auto conn, listener->Accept(absl::Seconds(30)));
//
// TCP listeners set SO_REUSEADDR. A Unix listener first removes a stale
// socket file at its path (only a socket: any other kind of file makes Listen
// fail), and the destructor removes the file it created.
//
// Ownership: a Listener owns its listening socket (and, for Unix, its socket
// file); accepted Connections are owned by the caller and outlive it freely.
// Thread safety: one thread at a time calls Accept(); Close() and
// local_endpoint() may be called from any thread at any time.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_LISTENER_H_
#define LIVEMIG_MIGRATION_TRANSPORT_LISTENER_H_

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"

namespace livemig {

namespace transport_internal {
struct AnyAcceptor;
}  // namespace transport_internal

class Listener {
 public:
  // Binds `at` and listens. A TCP port of 0 picks a free port (see
  // local_endpoint()). An fd endpoint listens on nothing: its descriptors,
  // already connected (each checked and dup()ed here; InvalidArgument naming
  // one that is not a connected stream socket), are what Accept() returns,
  // in order, once each; after them Accept() waits until its timeout. InvalidArgument for an unusable endpoint; the errno
  // mapping of core/posix_error.h otherwise (e.g. EADDRINUSE is Internal,
  // EACCES PermissionDenied); messages name the endpoint.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Listener>> Listen(
      const Endpoint& at);

  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  // Closes the socket; for Unix, removes the socket file if it is still the
  // one this Listener created. No other thread may be in Accept().
  ~Listener();

  // Where the listener is bound: the real port for TCP (the numeric address,
  // even if `at` named a host), the path for Unix.
  Endpoint local_endpoint() const { return local_; }

  // Waits up to `timeout` for one connection. DeadlineExceeded when none
  // arrived, or at once after Wake() ("woken"); Cancelled after Close().
  [[nodiscard]] absl::StatusOr<std::unique_ptr<Connection>> Accept(
      absl::Duration timeout);

  // Stops listening: new connection attempts are refused and a thread in
  // Accept() returns Cancelled promptly. Idempotent; thread-safe. The
  // descriptor itself is closed by the destructor.
  void Close();

  // Makes the Accept() running now, or the next one, return DeadlineExceeded
  // ("woken") at once without a connection: for a thread that waits for
  // something besides connections (the channel acceptor's handshakes) and
  // must not wait out the accept timeout. Thread-safe; wakes once.
  void Wake();

 private:
  Listener(std::unique_ptr<transport_internal::AnyAcceptor> acceptor,
           int wake_fd, Endpoint local, bool owns_file, dev_t file_device,
           ino_t file_inode);

  const std::unique_ptr<transport_internal::AnyAcceptor> acceptor_;  // Null: fd endpoint.
  const int fd_;       // acceptor_'s native handle (-1 without), valid until destruction.
  // Fd endpoint: the connections Accept() has yet to return (its thread only).
  std::vector<std::unique_ptr<Connection>> preconnected_;
  const int wake_fd_;  // eventfd made readable by Close().
  const Endpoint local_;
  // Unix only: the socket file bind() created, identified so the destructor
  // never removes a file another listener has since put at the same path.
  const bool owns_file_;
  const dev_t file_device_;
  const ino_t file_inode_;
  // Written by Close() (any thread), read by Accept() after each wake-up.
  std::atomic<bool> closed_{false};
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_TRANSPORT_LISTENER_H_
