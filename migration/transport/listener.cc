// File: migration/transport/listener.cc
#include "migration/transport/listener.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/socket_base.hpp>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/transport/internal/socket_util.h"

namespace livemig {
namespace {

using transport_internal::AnyAcceptor;
using transport_internal::AnySocket;
using transport_internal::Deadline;
using transport_internal::WaitReady;
using transport_internal::WaitResult;

// Whether a process listens on the Unix socket bound at `path`, as the
// kernel's table of Unix sockets says (/proc/net/unix: a listening socket
// has __SO_ACCEPTCON, 0x10000, in its flags). Read, not probed by
// connecting: a probe would be a stray connection to the live listener.
bool SomeoneListensOn(const std::string& path) {
  std::error_code ec;
  const std::string absolute = std::filesystem::absolute(path, ec).lexically_normal().string();
  std::ifstream table("/proc/net/unix");
  std::string line;
  std::getline(table, line);  // Header.
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string num, refs, protocol, flags, type, state, inode, bound;
    if (!(fields >> num >> refs >> protocol >> flags >> type >> state >> inode >> bound)) {
      continue;
    }
    if (bound != path && bound != absolute) continue;
    if ((std::strtoul(flags.c_str(), nullptr, 16) & 0x10000) != 0) return true;
  }
  return false;
}

// Removes a socket file left by a listener that died without cleaning up.
// Anything that is not a socket is left alone (bind will then fail); a
// socket someone still listens on is AlreadyExists.
absl::Status RemoveStaleSocket(const std::string& path) {
  struct stat info;
  if (::lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return PosixError(absl::StrCat("stat ", path), errno);
  }
  if (!S_ISSOCK(info.st_mode)) return absl::OkStatus();
  if (SomeoneListensOn(path)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "unix:", path, " is a live socket: another process listens on it"));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return PosixError(absl::StrCat("remove stale socket ", path), errno);
  }
  return absl::OkStatus();
}

// Accept errors that concern one would-be connection, not the listener.
bool IsTransientAcceptError(int error) {
  return error == ECONNABORTED || error == EPROTO || error == EINTR ||
         error == EPERM || error == ENETDOWN || error == ENOPROTOOPT ||
         error == EHOSTDOWN || error == ENONET || error == EHOSTUNREACH ||
         error == EOPNOTSUPP || error == ENETUNREACH;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Listen(const Endpoint& at) {
  boost::asio::io_context& context = transport_internal::SharedIoContext();
  boost::system::error_code ec;
  const std::string where = at.ToString();
  LIVEMIG_ASSIGN_OR_RETURN(const int wake_fd, transport_internal::MakeWakeFd());
  auto fail = [wake_fd](absl::Status status) {
    ::close(wake_fd);
    return status;
  };

  if (at.kind == Endpoint::Kind::kFd) {
    if (at.fds.empty()) return fail(absl::InvalidArgumentError("an fd endpoint without descriptors"));
    std::vector<std::unique_ptr<Connection>> connections;
    for (int fd : at.fds) {
      absl::StatusOr<std::unique_ptr<Connection>> c = Connection::FromFd(fd);
      if (!c.ok()) return fail(c.status());
      connections.push_back(std::move(*c));
    }
    std::unique_ptr<Listener> listener(new Listener(nullptr, wake_fd, at, false, 0, 0));
    // Accept() pops from the back: channel order as given.
    listener->preconnected_.assign(std::make_move_iterator(connections.rbegin()),
                                   std::make_move_iterator(connections.rend()));
    return listener;
  }
  if (at.kind == Endpoint::Kind::kUnix) {
    absl::StatusOr<boost::asio::local::stream_protocol::endpoint> address =
        transport_internal::UnixAddress(at);
    if (!address.ok()) return fail(address.status());
    absl::Status removed = RemoveStaleSocket(at.path);
    if (!removed.ok()) return fail(removed);
    auto acceptor = std::make_unique<AnyAcceptor>(
        AnyAcceptor{transport_internal::UnixAcceptor(context)});
    auto& unix_acceptor =
        std::get<transport_internal::UnixAcceptor>(acceptor->acceptor);
    unix_acceptor.open(boost::asio::local::stream_protocol(), ec);
    if (ec)
      return fail(PosixError(absl::StrCat("socket for ", where), ec.value()));
    unix_acceptor.bind(*address, ec);
    if (ec) return fail(PosixError(absl::StrCat("bind ", where), ec.value()));
    struct stat info;
    const bool owns_file = ::stat(at.path.c_str(), &info) == 0;
    unix_acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
    if (!ec) unix_acceptor.non_blocking(true, ec);
    if (ec) {
      if (owns_file) ::unlink(at.path.c_str());
      return fail(PosixError(absl::StrCat("listen on ", where), ec.value()));
    }
    return std::unique_ptr<Listener>(
        new Listener(std::move(acceptor), wake_fd, at, owns_file,
                     owns_file ? info.st_dev : 0, owns_file ? info.st_ino : 0));
  }

  absl::StatusOr<std::vector<boost::asio::ip::tcp::endpoint>> addresses =
      transport_internal::ResolveTcp(at);
  if (!addresses.ok()) return fail(addresses.status());
  const boost::asio::ip::tcp::endpoint& address = addresses->front();
  auto acceptor = std::make_unique<AnyAcceptor>(
      AnyAcceptor{transport_internal::TcpAcceptor(context)});
  auto& tcp_acceptor =
      std::get<transport_internal::TcpAcceptor>(acceptor->acceptor);
  tcp_acceptor.open(address.protocol(), ec);
  if (ec)
    return fail(PosixError(absl::StrCat("socket for ", where), ec.value()));
  tcp_acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (ec) return fail(PosixError("setsockopt(SO_REUSEADDR)", ec.value()));
  tcp_acceptor.bind(address, ec);
  if (ec) return fail(PosixError(absl::StrCat("bind ", where), ec.value()));
  tcp_acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (!ec) tcp_acceptor.non_blocking(true, ec);
  if (ec)
    return fail(PosixError(absl::StrCat("listen on ", where), ec.value()));
  const boost::asio::ip::tcp::endpoint bound = tcp_acceptor.local_endpoint(ec);
  if (ec) return fail(PosixError("getsockname", ec.value()));
  return std::unique_ptr<Listener>(
      new Listener(std::move(acceptor), wake_fd,
                   transport_internal::FromAsio(bound), false, 0, 0));
}

Listener::Listener(std::unique_ptr<AnyAcceptor> acceptor, int wake_fd,
                   Endpoint local, bool owns_file, dev_t file_device,
                   ino_t file_inode)
    : acceptor_(std::move(acceptor)),
      fd_(acceptor_ != nullptr ? acceptor_->native_handle() : -1),
      wake_fd_(wake_fd),
      local_(std::move(local)),
      owns_file_(owns_file),
      file_device_(file_device),
      file_inode_(file_inode) {}

Listener::~Listener() {
  if (acceptor_ != nullptr) acceptor_->Close();
  ::close(wake_fd_);
  if (owns_file_) {
    struct stat info;
    if (::lstat(local_.path.c_str(), &info) == 0 &&
        info.st_dev == file_device_ && info.st_ino == file_inode_) {
      ::unlink(local_.path.c_str());
    }
  }
}

void Listener::Close() {
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  transport_internal::SignalWakeFd(wake_fd_);
  // On Linux, shutdown() of a listening socket stops it listening: pending
  // and new connection attempts are refused.
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

void Listener::Wake() { transport_internal::SignalWakeFd(wake_fd_); }

absl::StatusOr<std::unique_ptr<Connection>> Listener::Accept(
    absl::Duration timeout) {
  const Deadline deadline(timeout);
  const std::string where = local_.ToString();
  // The wake fd fired: Close() (which sets closed_ before it signals, so a
  // later Accept() sees it at its start) or Wake().
  auto woken = [this, &where]() -> absl::Status {
    if (closed_.load(std::memory_order_acquire)) {
      return absl::CancelledError(absl::StrCat("accept on ", where, ": listener was closed"));
    }
    transport_internal::DrainWakeFd(wake_fd_);
    return absl::DeadlineExceededError(absl::StrCat("accept on ", where, ": woken"));
  };
  auto cancelled = [&where] {
    return absl::CancelledError(
        absl::StrCat("accept on ", where, ": listener was closed"));
  };
  if (acceptor_ == nullptr) {  // Fd endpoint: what was handed over, then nothing.
    if (closed_.load(std::memory_order_acquire)) return cancelled();
    if (!preconnected_.empty()) {
      std::unique_ptr<Connection> next = std::move(preconnected_.back());
      preconnected_.pop_back();
      return next;
    }
    LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited, WaitReady(-1, 0, wake_fd_, deadline));
    if (waited == WaitResult::kWoken) return woken();
    return absl::DeadlineExceededError(absl::StrCat(
        "accept on ", where, ": every descriptor was taken; no more connections come"));
  }
  boost::asio::io_context& context = transport_internal::SharedIoContext();
  while (true) {
    if (closed_.load(std::memory_order_acquire)) return cancelled();
    boost::system::error_code ec;
    std::unique_ptr<AnySocket> socket;
    std::string peer;
    if (auto* tcp = std::get_if<transport_internal::TcpAcceptor>(
            &acceptor_->acceptor)) {
      socket = std::make_unique<AnySocket>(
          AnySocket{transport_internal::TcpSocket(context)});
      boost::asio::ip::tcp::endpoint remote;
      tcp->accept(std::get<transport_internal::TcpSocket>(socket->socket),
                  remote, ec);
      if (!ec) peer = transport_internal::FromAsio(remote).ToString();
    } else {
      auto& unix_acceptor =
          std::get<transport_internal::UnixAcceptor>(acceptor_->acceptor);
      socket = std::make_unique<AnySocket>(
          AnySocket{transport_internal::UnixSocket(context)});
      unix_acceptor.accept(
          std::get<transport_internal::UnixSocket>(socket->socket), ec);
      if (!ec) peer = where;
    }
    if (!ec) return Connection::Adopt(std::move(socket), std::move(peer));

    if (closed_.load(std::memory_order_acquire)) return cancelled();
    const int error = ec.value();
    if (ec == boost::asio::error::would_block ||
        ec == boost::asio::error::try_again) {
      LIVEMIG_ASSIGN_OR_RETURN(const WaitResult waited,
                               WaitReady(fd_, POLLIN, wake_fd_, deadline));
      if (waited == WaitResult::kWoken) return woken();
      if (waited == WaitResult::kTimedOut) {
        return absl::DeadlineExceededError(
            absl::StrCat("accept on ", where, ": no connection within ",
                         transport_internal::FormatTimeout(timeout)));
      }
      continue;
    }
    if (IsTransientAcceptError(error)) continue;
    return PosixError(absl::StrCat("accept on ", where), error);
  }
}

}  // namespace livemig
