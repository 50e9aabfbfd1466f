// File: migration/transport/connection.h
//
// Connection: one connected stream socket (TCP or Unix), the byte pipe a
// migration channel runs over. Every operation takes a timeout and returns an
// absl::Status; nothing throws and nothing raises SIGPIPE.
//
//   LIVEMIG_ASSIGN_OR_RETURN(auto conn,
//                            Connection::Connect(to, absl::Seconds(5)));
//   iovec pieces[] = {{header, 32}, {message, n}};
//   LIVEMIG_RETURN_IF_ERROR(conn->WriteAll(pieces, absl::Seconds(30)));
//
// Implementation: an Asio socket (boost::asio::ip::tcp::socket or
// boost::asio::local::stream_protocol::socket) in non-blocking mode. Reads and
// writes are sendmsg/recvmsg calls on its native handle with as many iovecs as
// the kernel takes (up to IOV_MAX per call); when one would block, the
// operation poll(2)s the socket and a shutdown eventfd until its deadline.
// TCP sockets have TCP_NODELAY set.
//
// TLS: StartTls() upgrades a connection to mutual TLS 1.3 (tls_context.h);
// from then on every operation below moves plaintext through OpenSSL over
// the same non-blocking socket, with the same deadlines, codes and
// thread-safety, and the byte counters count plaintext.
//
// Error codes, common to every operation:
//   Cancelled         Shutdown() was called (before or during the operation),
//                     or Interrupt() (see there).
//   DeadlineExceeded  the whole operation did not finish within `timeout`.
//   Unavailable       the peer closed or reset the connection before the
//                     operation transferred anything (reads), or at any point
//                     (writes: EPIPE, ECONNRESET); refused/unreachable connect.
//   DataLoss          a read ended (EOF or reset) after some but not all of
//                     its bytes: the stream is truncated.
// After an error other than DeadlineExceeded the connection is unusable; after
// DeadlineExceeded an unknown number of bytes may have moved (see
// bytes_written()/bytes_read()), so the stream's framing is lost too. The one
// exception is Interrupt(): after it, WriteLast() may still send one last
// message, as long as no write was stopped part-way.
//
// Ownership: a Connection owns its socket and closes it when destroyed. The
// iovecs passed to WriteAll/ReadExact are borrowed for the call only.
// Thread safety: at most one thread writes (WriteAll, WriteLast,
// ShutdownWrite) and at most one thread reads (ReadExact, ReadSome) at a
// time; those two may run concurrently. Shutdown(), Interrupt(), bytes_*()
// and peer() may be called from any thread at any time.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_CONNECTION_H_
#define LIVEMIG_MIGRATION_TRANSPORT_CONNECTION_H_

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "migration/transport/endpoint.h"

namespace livemig {

namespace transport_internal {
struct AnySocket;
class Deadline;
enum class WaitResult;
}  // namespace transport_internal

class Listener;
class TlsContext;
namespace transport_internal {
class TlsStream;
}  // namespace transport_internal

class Connection {
 public:
  // Connects to `to` (a TCP name may resolve to several addresses: each is
  // tried in turn within the same deadline; an fd endpoint of one
  // descriptor is FromFd, of several InvalidArgument: one per channel). DeadlineExceeded after
  // `timeout`; Unavailable if refused or unreachable (or, for Unix, no socket
  // file); the message names the endpoint. InvalidArgument for an endpoint
  // that cannot be used (empty host, Unix path too long). With `cancel`:
  // Cancelled within 50 ms of it becoming true (a connect that waits for a
  // slow or full listener).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Connection>> Connect(
      const Endpoint& to, absl::Duration timeout,
      const std::atomic<bool>* cancel = nullptr);

  // A connection on a dup() of `fd`, an already connected TCP or Unix
  // stream socket (the caller keeps `fd`). InvalidArgument naming the
  // descriptor if it is not one.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Connection>> FromFd(int fd);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();  // Closes the socket. No other thread may be using it.

  // Writes every byte of `pieces`, in order. OK only when all were handed to
  // the kernel. Codes: see above.
  [[nodiscard]] absl::Status WriteAll(absl::Span<const iovec> pieces,
                                      absl::Duration timeout);

  // Fills every byte of `pieces` (scatter), in order. An EOF before the first
  // byte is Unavailable("peer closed the connection"); an EOF after some is
  // DataLoss("connection closed mid-read after N of M bytes"). A zero-byte
  // read returns OK at once.
  [[nodiscard]] absl::Status ReadExact(absl::Span<const iovec> pieces,
                                       absl::Duration timeout);

  // Reads whatever is available, between 1 and `size` bytes, waiting up to
  // `timeout` for the first. EOF is Unavailable("peer closed the
  // connection"). For proxies and tests; protocol code uses ReadExact.
  // REQUIRES: size > 0.
  [[nodiscard]] absl::StatusOr<size_t> ReadSome(void* data, size_t size,
                                                absl::Duration timeout);

  // The bytes the peer sent that are still in the kernel's receive buffer,
  // up to `max`, waiting up to `wait` for the first. Works after Shutdown()
  // and after the peer closed (Linux keeps received bytes readable): a
  // failed migration reads the peer's last words, its Abort, this way.
  // Empty when there are none. Call from the reading thread, or once no
  // thread reads.
  std::string ReadLeftover(size_t max, absl::Duration wait);

  // Upgrades this connection to TLS in `context`'s role (the source
  // connects, the destination accepts); both sides verify the other's
  // certificate. Call once, before any other I/O on it, from one thread.
  // Codes: Unauthenticated (a certificate was refused; the message says by
  // which side), FailedPrecondition (the peer does not speak TLS 1.3),
  // DeadlineExceeded, Unavailable (the peer closed), Cancelled. In TLS 1.3 a
  // destination refuses a source's certificate after the source finished
  // its handshake: the source learns it from its first read.
  [[nodiscard]] absl::Status StartTls(const TlsContext& context, absl::Duration timeout);
  bool tls() const { return tls_ != nullptr; }
  // The TLS peer's certificate subject and the cipher suite; empty without TLS.
  std::string tls_peer() const;
  std::string tls_cipher() const;

  // Up to `size` bytes the peer sent first, without consuming them: waits
  // until `size` bytes are there, the peer closed, or `timeout` passed
  // (then returns what there is). On the raw socket, also after StartTls.
  [[nodiscard]] absl::StatusOr<std::string> Peek(size_t size, absl::Duration timeout);

  // Half-close: the peer reads EOF once it has read everything written so
  // far; this side can still read. Call from the writing thread.
  [[nodiscard]] absl::Status ShutdownWrite();

  // Makes every current and future WriteAll/ReadExact/ReadSome return
  // Cancelled promptly: sets a flag, wakes pollers, and shuts the socket down
  // both ways (the peer sees EOF). Idempotent; thread-safe. Does not close
  // the descriptor: the destructor does.
  void Shutdown();
  bool is_shut_down() const {
    return shut_down_.load(std::memory_order_acquire);
  }

  // Asks this connection's users to stop at a frame boundary, so that one
  // last message (an Abort saying why) can still follow what was written:
  // from now on reads, and writes that have not begun, return Cancelled
  // promptly; a write already under way may finish while it moves: once
  // `grace` passes (from the interrupt, or from its last byte moved) with
  // nothing moved, it returns Cancelled and leaves the write side torn. So
  // a slow link still finishes its frame (within the write's own timeout),
  // and a peer that stopped reading costs `grace`. Unlike Shutdown() the
  // socket stays open for WriteLast(); Shutdown() ends it. Idempotent (the
  // first call's grace counts); thread-safe.
  void Interrupt(absl::Duration grace);
  bool is_interrupted() const {
    return interrupted_.load(std::memory_order_acquire);
  }

  // WriteAll() that Interrupt() does not stop: the last message after it.
  // FailedPrecondition if an earlier write stopped part-way (the peer would
  // read these bytes as the rest of that one); Cancelled after Shutdown().
  [[nodiscard]] absl::Status WriteLast(absl::Span<const iovec> pieces,
                                       absl::Duration timeout);

  // Bytes moved so far. Each counter is written only by the thread doing
  // that direction's I/O; relaxed is enough because they are statistics and
  // imply nothing about other memory.
  uint64_t bytes_written() const {
    return bytes_written_.load(std::memory_order_relaxed);
  }
  uint64_t bytes_read() const {
    return bytes_read_.load(std::memory_order_relaxed);
  }

  // Bytes written that the peer has not taken yet (SIOCOUTQ: over TCP not
  // acknowledged, over a Unix socket not read), or -1 where the kernel does
  // not say. Any thread.
  int64_t unacknowledged_bytes() const;

  // The other end, for messages: "127.0.0.1:41234", "[::1]:7000",
  // "unix:/path" (accepted Unix connections name the listening path).
  std::string peer() const { return peer_; }

 private:
  friend class Listener;

  // Takes an open, connected socket: sets it non-blocking (and TCP_NODELAY)
  // and creates the shutdown eventfd.
  static absl::StatusOr<std::unique_ptr<Connection>> Adopt(
      std::unique_ptr<transport_internal::AnySocket> socket, std::string peer);

  Connection(std::unique_ptr<transport_internal::AnySocket> socket, int wake_fd,
             std::string peer);

  absl::Status CancelledError(const char* operation) const;
  absl::Status InterruptedMidWrite(size_t done, size_t total) const;

  enum class Direction { kRead, kWrite };
  // Whether an operation must end now with Cancelled: always after
  // Shutdown(); after Interrupt() unless it is a write that may go on
  // (`may_go_on`: it has begun, or it is the last one).
  bool MustStop(bool may_go_on) const;
  // Waits for the socket to be ready for `events`; kWoken when the
  // operation must stop (MustStop). An operation that may go on after
  // Interrupt() no longer polls the eventfd (it stays readable), and a
  // write under way (not the last one) waits until the grace ends at most
  // (`grace` after the later of the interrupt and `moved`, when that write
  // last moved a byte): then kWoken too, with *grace_over set.
  absl::StatusOr<transport_internal::WaitResult> Await(
      short events, bool may_go_on, bool last, const transport_internal::Deadline& deadline,
      std::chrono::steady_clock::time_point moved, bool* grace_over) const;
  // When a transfer moved bytes: now if interrupted (the grace counts from
  // there), else the epoch (the interrupt's own time counts).
  std::chrono::steady_clock::time_point Moved() const;
  // WriteAll and WriteLast: the torn-stream bookkeeping around Transfer.
  absl::Status Write(absl::Span<const iovec> pieces, absl::Duration timeout, bool last);
  // WriteAll and ReadExact: moves every byte of `pieces` in `direction`,
  // polling for readiness until the deadline.
  absl::Status Transfer(Direction direction, absl::Span<const iovec> pieces,
                        absl::Duration timeout, bool last = false);
  absl::Status TlsTransfer(Direction direction, absl::Span<const iovec> pieces,
                           absl::Duration timeout, bool last);

  const std::unique_ptr<transport_internal::AnySocket> socket_;
  const int fd_;       // socket_'s native handle, valid until destruction.
  const int wake_fd_;  // eventfd made readable by Shutdown().
  const std::string peer_;
  // Set once by StartTls(), before any concurrent use; null: plaintext.
  std::unique_ptr<transport_internal::TlsStream> tls_;
  // Written by Shutdown() (any thread), read by the I/O threads after every
  // wake-up. The release/acquire pair is not needed for data, only to make
  // the happens-before explicit for readers of is_shut_down().
  std::atomic<bool> shut_down_{false};
  // Set by Interrupt() (any thread) after grace_end_ns_; the acquire load
  // that sees it true also sees the grace's end (release/acquire pair).
  std::atomic<bool> interrupted_{false};
  std::atomic<int64_t> grace_end_ns_{0};  // steady_clock, since its epoch.
  std::atomic<int64_t> grace_ns_{0};      // The grace itself (same pair).
  // A write stopped part-way: only the writing thread reads or writes it.
  bool write_torn_ = false;
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> bytes_read_{0};
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_TRANSPORT_CONNECTION_H_
