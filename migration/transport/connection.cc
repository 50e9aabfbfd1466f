// File: migration/transport/connection.cc
#include "migration/transport/connection.h"

#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/transport/internal/socket_util.h"
#include "migration/transport/internal/tls_stream.h"
#include "migration/transport/tls_context.h"

namespace livemig {
namespace {

using transport_internal::AnySocket;
using transport_internal::TlsStream;
using transport_internal::Deadline;
using transport_internal::FormatTimeout;
using transport_internal::WaitReady;
using transport_internal::WaitResult;

// Errors that mean "nobody is there": Unavailable rather than Internal.
bool IsUnreachable(int error) {
  switch (error) {
    case ECONNREFUSED:
    case ENOENT:  // Unix: no socket file.
    case ECONNRESET:
    case ECONNABORTED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
    case EADDRNOTAVAIL:  // e.g. ::1 on a host without IPv6.
      return true;
    default:
      return false;
  }
}

absl::Status ConnectError(const Endpoint& to, int error) {
  const std::string context = absl::StrCat("connect to ", to.ToString());
  if (IsUnreachable(error)) {
    return absl::UnavailableError(
        absl::StrCat(context, ": ", std::strerror(error)));
  }
  if (error == ETIMEDOUT) {
    return absl::DeadlineExceededError(
        absl::StrCat(context, ": ", std::strerror(error)));
  }
  return PosixError(context, error);
}

absl::Status ConnectTimeout(const Endpoint& to, absl::Duration timeout) {
  return absl::DeadlineExceededError(
      absl::StrCat("connect to ", to.ToString(), ": timed out after ", FormatTimeout(timeout)));
}

// Non-blocking connect of `fd` with the deadline; `fd` must be non-blocking.
// `cancel` (may be null) is looked at every 50 ms at most.
absl::Status ConnectNative(int fd, const sockaddr* address, socklen_t length, const Endpoint& to,
                           absl::Duration timeout, const Deadline& deadline,
                           const std::atomic<bool>* cancel) {
  // Relaxed: the flag only says "stop"; whoever set it does the rest.
  const auto cancelled = [&] {
    return cancel != nullptr && cancel->load(std::memory_order_relaxed);
  };
  const auto cancelled_error = [&] {
    return absl::CancelledError(absl::StrCat("connect to ", to.ToString(), ": cancelled"));
  };
  while (true) {
    if (cancelled()) return cancelled_error();
    if (::connect(fd, address, length) == 0) return absl::OkStatus();
    int error = errno;
    if (error == EISCONN) return absl::OkStatus();
    if (error == EAGAIN) {
      // Unix sockets: the listener's backlog is full. Retry until the
      // deadline; there is nothing to poll for.
      if (deadline.Expired()) return ConnectTimeout(to, timeout);
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::clamp(deadline.PollTimeoutMs(), 0, 5)));
      continue;
    }
    if (error == EINPROGRESS || error == EALREADY || error == EINTR) {
      WaitResult waited;
      do {  // With `cancel`, in slices of at most 50 ms, so that it is seen.
        const int left = deadline.PollTimeoutMs();
        const bool slice = cancel != nullptr && (left < 0 || left > 50);
        LIVEMIG_ASSIGN_OR_RETURN(
            waited,
            WaitReady(fd, POLLOUT, -1, slice ? Deadline(absl::Milliseconds(50)) : deadline));
        if (waited == WaitResult::kTimedOut && cancelled()) return cancelled_error();
      } while (waited == WaitResult::kTimedOut && !deadline.Expired());
      if (waited == WaitResult::kTimedOut) return ConnectTimeout(to, timeout);
      int so_error = 0;
      socklen_t so_error_length = sizeof(so_error);
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &so_error_length) != 0) {
        return PosixError("getsockopt(SO_ERROR)", errno);
      }
      if (so_error == 0) return absl::OkStatus();
      error = so_error;
    }
    return ConnectError(to, error);
  }
}

// Drops the first `n` bytes of `iov[*index...]`, advancing *index past the
// pieces that are now empty.
void Advance(std::vector<iovec>& iov, size_t* index, size_t n) {
  while (n > 0) {
    iovec& piece = iov[*index];
    if (n < piece.iov_len) {
      piece.iov_base = static_cast<char*>(piece.iov_base) + n;
      piece.iov_len -= n;
      return;
    }
    n -= piece.iov_len;
    ++*index;
  }
}

// The non-empty pieces, copied (the caller's are const and must stay so),
// and their total size.
std::vector<iovec> CopyPieces(absl::Span<const iovec> pieces, size_t* total) {
  std::vector<iovec> iov;
  iov.reserve(pieces.size());
  *total = 0;
  for (const iovec& piece : pieces) {
    if (piece.iov_len == 0) continue;
    iov.push_back(piece);
    *total += piece.iov_len;
  }
  return iov;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(
    const Endpoint& to, absl::Duration timeout, const std::atomic<bool>* cancel) {
  const Deadline deadline(timeout);
  boost::asio::io_context& context = transport_internal::SharedIoContext();
  boost::system::error_code ec;

  if (to.kind == Endpoint::Kind::kFd) {
    if (to.fds.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          to.ToString(), ": ", to.fds.size(), " descriptors make one connection each"));
    }
    return FromFd(to.fds[0]);
  }
  if (to.kind == Endpoint::Kind::kUnix) {
    LIVEMIG_ASSIGN_OR_RETURN(const auto address,
                             transport_internal::UnixAddress(to));
    auto socket = std::make_unique<AnySocket>(
        AnySocket{transport_internal::UnixSocket(context)});
    auto& unix_socket =
        std::get<transport_internal::UnixSocket>(socket->socket);
    unix_socket.open(boost::asio::local::stream_protocol(), ec);
    if (!ec) unix_socket.non_blocking(true, ec);
    if (ec) return PosixError("socket(AF_UNIX)", ec.value());
    LIVEMIG_RETURN_IF_ERROR(ConnectNative(unix_socket.native_handle(),
                                          address.data(), address.size(), to,
                                          timeout, deadline, cancel));
    return Adopt(std::move(socket), to.ToString());
  }

  LIVEMIG_ASSIGN_OR_RETURN(const auto addresses,
                           transport_internal::ResolveTcp(to));
  absl::Status last_error = absl::UnavailableError(
      absl::StrCat("connect to ", to.ToString(), ": no address"));
  for (const auto& address : addresses) {
    auto socket = std::make_unique<AnySocket>(
        AnySocket{transport_internal::TcpSocket(context)});
    auto& tcp_socket = std::get<transport_internal::TcpSocket>(socket->socket);
    tcp_socket.open(address.protocol(), ec);
    if (!ec) tcp_socket.non_blocking(true, ec);
    if (ec) {
      last_error = PosixError("socket(AF_INET)", ec.value());
      continue;
    }
    absl::Status connected = ConnectNative(
        tcp_socket.native_handle(), address.data(),
        static_cast<socklen_t>(address.size()), to, timeout, deadline, cancel);
    if (connected.ok()) {
      std::string peer = to.ToString();
      if (to.host != address.address().to_string()) {
        absl::StrAppend(&peer, " (",
                        transport_internal::FromAsio(address).ToString(), ")");
      }
      return Adopt(std::move(socket), std::move(peer));
    }
    if (absl::IsDeadlineExceeded(connected)) return connected;
    last_error = std::move(connected);
  }
  return last_error;
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::FromFd(int fd) {
  std::string peer;
  LIVEMIG_ASSIGN_OR_RETURN(std::unique_ptr<AnySocket> socket,
                           transport_internal::AdoptConnectedFd(fd, &peer));
  return Adopt(std::move(socket), std::move(peer));
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Adopt(
    std::unique_ptr<AnySocket> socket, std::string peer) {
  boost::system::error_code ec;
  std::visit([&ec](auto& s) { s.non_blocking(true, ec); }, socket->socket);
  if (ec) return PosixError("set O_NONBLOCK", ec.value());
  if (socket->is_tcp()) {
    std::get<transport_internal::TcpSocket>(socket->socket)
        .set_option(boost::asio::ip::tcp::no_delay(true), ec);
    if (ec) return PosixError("setsockopt(TCP_NODELAY)", ec.value());
  }
  LIVEMIG_ASSIGN_OR_RETURN(const int wake_fd, transport_internal::MakeWakeFd());
  return std::unique_ptr<Connection>(
      new Connection(std::move(socket), wake_fd, std::move(peer)));
}

Connection::Connection(std::unique_ptr<AnySocket> socket, int wake_fd,
                       std::string peer)
    : socket_(std::move(socket)),
      fd_(socket_->native_handle()),
      wake_fd_(wake_fd),
      peer_(std::move(peer)) {}

Connection::~Connection() {
  socket_->Close();
  ::close(wake_fd_);
}

absl::Status Connection::CancelledError(const char* operation) const {
  return absl::CancelledError(absl::StrCat(
      operation, " ", peer_,
      is_shut_down() ? ": connection was shut down" : ": connection was interrupted"));
}

bool Connection::MustStop(bool may_go_on) const {
  return is_shut_down() || (!may_go_on && is_interrupted());
}

void Connection::Interrupt(absl::Duration grace) {
  if (is_interrupted()) return;
  const auto end = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(grace);
  int64_t unset = 0;  // The first call's grace counts.
  if (grace_end_ns_.compare_exchange_strong(
          unset,
          std::chrono::duration_cast<std::chrono::nanoseconds>(end.time_since_epoch()).count(),
          std::memory_order_relaxed)) {
    grace_ns_.store(absl::ToInt64Nanoseconds(grace), std::memory_order_relaxed);
  }
  if (interrupted_.exchange(true, std::memory_order_acq_rel)) return;
  transport_internal::SignalWakeFd(wake_fd_);
}

std::chrono::steady_clock::time_point Connection::Moved() const {
  return is_interrupted() ? std::chrono::steady_clock::now()
                          : std::chrono::steady_clock::time_point{};
}

absl::StatusOr<WaitResult> Connection::Await(short events, bool may_go_on, bool last,
                                             const Deadline& deadline,
                                             std::chrono::steady_clock::time_point moved,
                                             bool* grace_over) const {
  *grace_over = false;
  if (MustStop(may_go_on)) return WaitResult::kWoken;
  if (!may_go_on || !is_interrupted()) {
    LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited, WaitReady(fd_, events, wake_fd_, deadline));
    if (waited != WaitResult::kWoken || MustStop(may_go_on)) return waited;
    // Interrupted while a write that may go on waited: it waits on below.
    // This acquire load that sees true also makes grace_end_ns_ visible.
    if (!is_interrupted()) return WaitResult::kReady;  // Spurious: try again.
  }
  // Without the eventfd: Shutdown() still ends the wait, as it shuts the
  // socket itself down.
  if (last) return WaitReady(fd_, events, -1, deadline);
  // The grace runs from the interrupt, and again from each byte this write
  // moved or the peer took from the socket's send queue (the kernel wakes a
  // writer only once a good part of that queue is free, which on a slow
  // link can take longer than the grace while bytes flow all along).
  const auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::nanoseconds(grace_ns_.load(std::memory_order_relaxed)));
  std::chrono::steady_clock::time_point grace_end = std::max(
      std::chrono::steady_clock::time_point{std::chrono::duration_cast<
          std::chrono::steady_clock::duration>(
          std::chrono::nanoseconds(grace_end_ns_.load(std::memory_order_relaxed)))},
      moved + grace);
  int64_t queued = unacknowledged_bytes();
  for (;;) {
    LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited,
                             WaitReady(fd_, events, -1, deadline.Until(grace_end)));
    if (waited != WaitResult::kTimedOut || deadline.Expired()) return waited;
    const int64_t now_queued = queued < 0 ? -1 : unacknowledged_bytes();
    if (now_queued < 0 || now_queued >= queued) {
      *grace_over = true;
      return WaitResult::kWoken;
    }
    queued = now_queued;
    grace_end = std::chrono::steady_clock::now() + grace;
  }
}

int64_t Connection::unacknowledged_bytes() const {
  int queued = 0;
  return ::ioctl(fd_, SIOCOUTQ, &queued) == 0 ? queued : -1;
}

void Connection::Shutdown() {
  if (shut_down_.exchange(true, std::memory_order_acq_rel)) return;
  // Wakes pollers first, then makes the socket itself report EOF/EPIPE so a
  // thread between its flag check and its syscall cannot block either.
  transport_internal::SignalWakeFd(wake_fd_);
  ::shutdown(fd_, SHUT_RDWR);
}

absl::Status Connection::ShutdownWrite() {
  if (MustStop(false)) return CancelledError("shutdown write to");
  if (tls_ != nullptr) tls_->CloseNotify();
  if (::shutdown(fd_, SHUT_WR) != 0) {
    return PosixError(absl::StrCat("shutdown write to ", peer_), errno);
  }
  return absl::OkStatus();
}

absl::Status Connection::StartTls(const TlsContext& context, absl::Duration timeout) {
  if (tls_ != nullptr) return absl::FailedPreconditionError("TLS already started");
  if (MustStop(false)) return CancelledError("TLS handshake with");
  LIVEMIG_ASSIGN_OR_RETURN(std::unique_ptr<TlsStream> stream, TlsStream::Create(context, fd_));
  const Deadline deadline(timeout);
  // Until the handshake is done the stream holds part of it: a message
  // written after a failed one (WriteLast) would be read as handshake bytes.
  write_torn_ = true;
  while (true) {
    const TlsStream::Step step = stream->Handshake();
    if (MustStop(false)) return CancelledError("TLS handshake with");
    switch (step.state) {
      case TlsStream::Step::State::kDone:
        tls_ = std::move(stream);
        write_torn_ = false;
        return absl::OkStatus();
      case TlsStream::Step::State::kWantRead:
      case TlsStream::Step::State::kWantWrite: {
        const bool read = step.state == TlsStream::Step::State::kWantRead;
        LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited,
                                 WaitReady(fd_, read ? POLLIN : POLLOUT, wake_fd_, deadline));
        if (waited == WaitResult::kWoken) return CancelledError("TLS handshake with");
        if (waited == WaitResult::kTimedOut) {
          return absl::DeadlineExceededError(absl::StrCat(
              "TLS handshake with ", peer_, ": timed out after ", FormatTimeout(timeout)));
        }
        continue;
      }
      case TlsStream::Step::State::kEnd:
        return absl::UnavailableError(absl::StrCat(
            "TLS handshake with ", peer_,
            ": the peer closed the connection (does it use TLS with the same CA?)"));
      case TlsStream::Step::State::kFailed:
        return absl::Status(step.error.code(),
                            absl::StrCat(peer_, ": ", step.error.message()));
    }
  }
}

std::string Connection::tls_peer() const { return tls_ ? tls_->PeerSubject() : ""; }
std::string Connection::tls_cipher() const { return tls_ ? tls_->cipher() : ""; }

absl::StatusOr<std::string> Connection::Peek(size_t size, absl::Duration timeout) {
  const Deadline deadline(timeout);
  std::string out(size, '\0');
  while (true) {
    const ssize_t n = ::recv(fd_, out.data(), size, MSG_PEEK | MSG_DONTWAIT);
    const int error = errno;
    if (MustStop(false)) return CancelledError("peek at");
    if (n >= 0 && static_cast<size_t>(n) == size) return out;
    if (n == 0) return std::string();  // The peer closed before sending.
    if (n < 0 && error == EINTR) continue;
    if (n < 0 && error != EAGAIN && error != EWOULDBLOCK) {
      if (error == ECONNRESET) return std::string();
      return PosixError(absl::StrCat("peek at ", peer_), error);
    }
    if (deadline.Expired()) {
      out.resize(n > 0 ? static_cast<size_t>(n) : 0);
      return out;
    }
    if (n > 0) {
      // Some bytes but not all: poll would return at once; wait a little.
      std::this_thread::sleep_for(std::chrono::milliseconds(
          std::clamp(deadline.PollTimeoutMs(), 0, 2)));
      continue;
    }
    LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited,
                             WaitReady(fd_, POLLIN, wake_fd_, deadline));
    if (waited == WaitResult::kWoken) return CancelledError("peek at");
  }
}

absl::Status Connection::TlsTransfer(Direction direction, absl::Span<const iovec> pieces,
                                     absl::Duration timeout, bool last) {
  const bool write = direction == Direction::kWrite;
  const char* const operation = write ? "write to" : "read from";
  const Deadline deadline(timeout);
  size_t total = 0;
  for (const iovec& piece : pieces) total += piece.iov_len;
  size_t done = 0;
  std::chrono::steady_clock::time_point moved{};  // See Moved().
  // Moves [data, data + size) in `direction`, waiting as OpenSSL asks.
  auto move = [&](char* data, size_t size) -> absl::Status {
    while (size > 0) {
      const TlsStream::Step step = write ? tls_->Write(data, size) : tls_->Read(data, size);
      // A TLS write has begun once OpenSSL was called: it may hold part of
      // a record.
      if (MustStop(write)) return CancelledError(operation);
      switch (step.state) {
        case TlsStream::Step::State::kDone:
          data += step.bytes;
          size -= step.bytes;
          done += step.bytes;
          (write ? bytes_written_ : bytes_read_)
              .fetch_add(step.bytes, std::memory_order_relaxed);
          moved = Moved();
          continue;
        case TlsStream::Step::State::kWantRead:
        case TlsStream::Step::State::kWantWrite: {
          const bool read = step.state == TlsStream::Step::State::kWantRead;
          bool grace_over = false;
          LIVEMIG_ASSIGN_OR_RETURN(
              const WaitResult waited,
              Await(read ? POLLIN : POLLOUT, write, last, deadline, moved, &grace_over));
          if (waited == WaitResult::kWoken) {
            return grace_over ? InterruptedMidWrite(done, total) : CancelledError(operation);
          }
          if (waited == WaitResult::kTimedOut) {
            return absl::DeadlineExceededError(absl::StrCat(
                operation, " ", peer_, ": timed out after ", FormatTimeout(timeout), " with ",
                done, " of ", total, write ? " bytes written" : " bytes read"));
          }
          continue;
        }
        case TlsStream::Step::State::kEnd:
          if (write) {
            return absl::UnavailableError(absl::StrCat("write to ", peer_,
                                                       ": peer closed the connection after ",
                                                       done, " of ", total, " bytes"));
          }
          if (done == 0) return absl::UnavailableError("peer closed the connection");
          return absl::DataLossError(absl::StrCat("connection closed mid-read after ", done,
                                                  " of ", total, " bytes"));
        case TlsStream::Step::State::kFailed:
          return absl::Status(step.error.code(), absl::StrCat(operation, " ", peer_, ": ",
                                                              step.error.message()));
      }
    }
    return absl::OkStatus();
  };
  if (!write) {
    for (const iovec& piece : pieces) {
      LIVEMIG_RETURN_IF_ERROR(move(static_cast<char*>(piece.iov_base), piece.iov_len));
    }
    return absl::OkStatus();
  }
  // Small pieces (frame headers, messages) are gathered so they share a
  // record instead of costing one record (and one syscall) each.
  constexpr size_t kGather = 16 * 1024;
  std::string staging;
  for (const iovec& piece : pieces) {
    if (piece.iov_len < kGather) {
      staging.append(static_cast<const char*>(piece.iov_base), piece.iov_len);
      if (staging.size() < kGather) continue;
    }
    if (!staging.empty()) {
      LIVEMIG_RETURN_IF_ERROR(move(staging.data(), staging.size()));
      staging.clear();
    }
    if (piece.iov_len >= kGather) {
      LIVEMIG_RETURN_IF_ERROR(move(static_cast<char*>(piece.iov_base), piece.iov_len));
    }
  }
  if (!staging.empty()) LIVEMIG_RETURN_IF_ERROR(move(staging.data(), staging.size()));
  return absl::OkStatus();
}

absl::Status Connection::WriteAll(absl::Span<const iovec> pieces,
                                  absl::Duration timeout) {
  return Write(pieces, timeout, /*last=*/false);
}

absl::Status Connection::WriteLast(absl::Span<const iovec> pieces, absl::Duration timeout) {
  if (write_torn_) {
    return absl::FailedPreconditionError(
        absl::StrCat("write to ", peer_,
                     ": an earlier write stopped part-way, so no message can follow it"));
  }
  return Write(pieces, timeout, /*last=*/true);
}

absl::Status Connection::Write(absl::Span<const iovec> pieces, absl::Duration timeout,
                               bool last) {
  if (MustStop(last)) return CancelledError("write to");
  const uint64_t before = bytes_written_.load(std::memory_order_relaxed);
  absl::Status status = Transfer(Direction::kWrite, pieces, timeout, last);
  // Bytes of it went out (or OpenSSL may hold part of a record): a later
  // message would be read as the rest of this one.
  if (!status.ok() &&
      (tls_ != nullptr || bytes_written_.load(std::memory_order_relaxed) != before)) {
    write_torn_ = true;
  }
  return status;
}

absl::Status Connection::InterruptedMidWrite(size_t done, size_t total) const {
  return absl::CancelledError(absl::StrCat("write to ", peer_,
                                           ": connection was interrupted mid-write after ", done,
                                           " of ", total, " bytes"));
}

absl::Status Connection::ReadExact(absl::Span<const iovec> pieces,
                                   absl::Duration timeout) {
  return Transfer(Direction::kRead, pieces, timeout);
}

absl::Status Connection::Transfer(Direction direction,
                                  absl::Span<const iovec> pieces,
                                  absl::Duration timeout, bool last) {
  const bool write = direction == Direction::kWrite;
  const char* const operation = write ? "write to" : "read from";
  if (MustStop(last)) return CancelledError(operation);
  if (tls_ != nullptr) return TlsTransfer(direction, pieces, timeout, last);
  const Deadline deadline(timeout);
  size_t total = 0;
  std::vector<iovec> iov = CopyPieces(pieces, &total);
  size_t index = 0;
  size_t done = 0;
  std::chrono::steady_clock::time_point moved{};  // See Moved().
  while (index < iov.size()) {
    msghdr message{};
    message.msg_iov = &iov[index];
    message.msg_iovlen = std::min<size_t>(iov.size() - index, IOV_MAX);
    const ssize_t n = write ? ::sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT)
                            : ::recvmsg(fd_, &message, MSG_DONTWAIT);
    if (n > 0) {
      Advance(iov, &index, static_cast<size_t>(n));
      done += static_cast<size_t>(n);
      (write ? bytes_written_ : bytes_read_)
          .fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      moved = Moved();
      continue;
    }
    const int error = errno;
    // A write under way (or the last one) may go on after Interrupt().
    const bool may_go_on = write && (last || done > 0);
    if (MustStop(may_go_on)) return CancelledError(operation);
    if (n < 0 && error == EINTR) continue;
    if (n < 0 && (error == EAGAIN || error == EWOULDBLOCK)) {
      bool grace_over = false;
      LIVEMIG_ASSIGN_OR_RETURN(
          const WaitResult waited,
          Await(write ? POLLOUT : POLLIN, may_go_on, last, deadline, moved, &grace_over));
      if (waited == WaitResult::kWoken) {
        return grace_over ? InterruptedMidWrite(done, total) : CancelledError(operation);
      }
      if (waited == WaitResult::kTimedOut) {
        return absl::DeadlineExceededError(absl::StrCat(
            operation, " ", peer_, ": timed out after ", FormatTimeout(timeout),
            " with ", done, " of ", total, write ? " bytes written" : " bytes read"));
      }
      continue;
    }
    if (write) {
      if (n < 0 && (error == EPIPE || error == ECONNRESET)) {
        return absl::UnavailableError(absl::StrCat(
            "write to ", peer_, ": peer closed the connection (",
            std::strerror(error), ") after ", done, " of ", total, " bytes"));
      }
      return PosixError(absl::StrCat("write to ", peer_), n < 0 ? error : EIO);
    }
    // EOF (n == 0) or a reset: the stream ended.
    if (n == 0 || error == ECONNRESET || error == EPIPE) {
      if (done == 0) {
        return absl::UnavailableError("peer closed the connection");
      }
      return absl::DataLossError(absl::StrCat(
          "connection closed mid-read after ", done, " of ", total, " bytes"));
    }
    return PosixError(absl::StrCat("read from ", peer_), error);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> Connection::ReadSome(void* data, size_t size,
                                            absl::Duration timeout) {
  if (MustStop(false)) return CancelledError("read from");
  if (size == 0) {
    return absl::InvalidArgumentError("ReadSome of 0 bytes");
  }
  const Deadline deadline(timeout);
  while (tls_ != nullptr) {
    const TlsStream::Step step = tls_->Read(data, size);
    if (MustStop(false)) return CancelledError("read from");
    switch (step.state) {
      case TlsStream::Step::State::kDone:
        bytes_read_.fetch_add(step.bytes, std::memory_order_relaxed);
        return step.bytes;
      case TlsStream::Step::State::kWantRead:
      case TlsStream::Step::State::kWantWrite: {
        LIVEMIG_ASSIGN_OR_RETURN(
            const WaitResult waited,
            WaitReady(fd_, step.state == TlsStream::Step::State::kWantRead ? POLLIN : POLLOUT,
                      wake_fd_, deadline));
        if (waited == WaitResult::kWoken) return CancelledError("read from");
        if (waited == WaitResult::kTimedOut) {
          return absl::DeadlineExceededError(absl::StrCat(
              "read from ", peer_, ": timed out after ", FormatTimeout(timeout)));
        }
        continue;
      }
      case TlsStream::Step::State::kEnd:
        return absl::UnavailableError("peer closed the connection");
      case TlsStream::Step::State::kFailed:
        return absl::Status(step.error.code(),
                            absl::StrCat("read from ", peer_, ": ", step.error.message()));
    }
  }
  while (true) {
    const ssize_t n = ::recv(fd_, data, size, MSG_DONTWAIT);
    if (n > 0) {
      bytes_read_.fetch_add(static_cast<uint64_t>(n),
                            std::memory_order_relaxed);
      return static_cast<size_t>(n);
    }
    const int error = errno;
    if (MustStop(false)) return CancelledError("read from");
    if (n < 0 && error == EINTR) continue;
    if (n < 0 && (error == EAGAIN || error == EWOULDBLOCK)) {
      LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited,
                               WaitReady(fd_, POLLIN, wake_fd_, deadline));
      if (waited == WaitResult::kWoken) return CancelledError("read from");
      if (waited == WaitResult::kTimedOut) {
        return absl::DeadlineExceededError(absl::StrCat(
            "read from ", peer_, ": timed out after ", FormatTimeout(timeout)));
      }
      continue;
    }
    if (n == 0 || error == ECONNRESET || error == EPIPE) {
      return absl::UnavailableError("peer closed the connection");
    }
    return PosixError(absl::StrCat("read from ", peer_), error);
  }
}

std::string Connection::ReadLeftover(size_t max, absl::Duration wait) {
  std::string out;
  const absl::Time deadline = absl::Now() + wait;
  char buffer[64 * 1024];
  while (tls_ != nullptr && out.size() < max) {
    // Only what already arrived: decrypted a record at a time.
    const TlsStream::Step step = tls_->Read(buffer, std::min(sizeof(buffer), max - out.size()));
    if (step.state == TlsStream::Step::State::kDone) {
      out.append(buffer, step.bytes);
      continue;
    }
    if (step.state != TlsStream::Step::State::kWantRead || !out.empty()) break;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) break;
  }
  while (tls_ == nullptr && out.size() < max) {
    const ssize_t n = ::recv(fd_, buffer, std::min(sizeof(buffer), max - out.size()),
                             MSG_DONTWAIT);
    if (n > 0) {
      out.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && out.empty()) {
      // Nothing yet: the peer's last frame may still be on its way.
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) break;
      continue;
    }
    break;  // EOF, an error, or everything buffered was read.
  }
  bytes_read_.fetch_add(out.size(), std::memory_order_relaxed);
  return out;
}

}  // namespace livemig
