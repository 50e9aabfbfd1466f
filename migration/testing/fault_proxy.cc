// File: migration/testing/fault_proxy.cc
#include "migration/testing/fault_proxy.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace livemig {
namespace {

// How long blocking calls wait before re-checking `stopping_`.
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
constexpr absl::Duration kConnectTimeout = absl::Seconds(5);
constexpr absl::Duration kWriteTimeout = absl::Seconds(10);
constexpr size_t kBufferSize = 64 * 1024;

}  // namespace

struct FaultProxy::Session {
  int index = 0;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
  std::thread up;    // client -> server
  std::thread down;  // server -> client
  // Incremented by each pump as it ends; read by Reap(). acq_rel so a reaper
  // that sees 2 also sees everything the pumps did.
  std::atomic<int> pumps_done{0};

  void ShutdownBoth() {
    client->Shutdown();
    server->Shutdown();
  }
};

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(Endpoint target,
                                                              Fault fault) {
  absl::StatusOr<std::unique_ptr<Listener>> listener =
      Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  if (!listener.ok()) return listener.status();
  std::unique_ptr<FaultProxy> proxy(
      new FaultProxy(std::move(target), fault, std::move(*listener)));
  proxy->accept_thread_ = std::thread([p = proxy.get()] { p->AcceptLoop(); });
  return proxy;
}

FaultProxy::FaultProxy(Endpoint target, Fault fault,
                       std::unique_ptr<Listener> listener)
    : target_(std::move(target)),
      fault_(fault),
      listener_(std::move(listener)),
      endpoint_(listener_->local_endpoint()) {}

FaultProxy::~FaultProxy() {
  stopping_.store(true, std::memory_order_release);
  listener_->Close();
  if (accept_thread_.joinable()) accept_thread_.join();
  // The accept thread has ended: nobody else touches sessions_ now.
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& session : sessions_) session->ShutdownBoth();
  for (auto& session : sessions_) {
    if (session->up.joinable()) session->up.join();
    if (session->down.joinable()) session->down.join();
  }
  sessions_.clear();
}

void FaultProxy::AcceptLoop() {
  int accepted = 0;
  while (!stopping_.load(std::memory_order_acquire)) {
    Reap();
    absl::StatusOr<std::unique_ptr<Connection>> client =
        listener_->Accept(kPollInterval);
    if (absl::IsDeadlineExceeded(client.status())) continue;
    if (!client.ok()) return;  // Cancelled by the destructor, or broken.
    const int index = accepted++;
    absl::StatusOr<std::unique_ptr<Connection>> server =
        Connection::Connect(target_, kConnectTimeout);
    if (!server.ok())
      continue;  // Dropping `client` closes it: the test sees EOF.

    auto session = std::make_unique<Session>();
    session->index = index;
    session->client = std::move(*client);
    session->server = std::move(*server);
    Session& s = *session;
    std::lock_guard<std::mutex> lock(mutex_);
    s.up = std::thread([this, &s] { Pump(s, /*client_to_server=*/true); });
    s.down = std::thread([this, &s] { Pump(s, /*client_to_server=*/false); });
    sessions_.push_back(std::move(session));
  }
}

void FaultProxy::Reap() {
  std::vector<std::unique_ptr<Session>> finished;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if ((*it)->pumps_done.load(std::memory_order_acquire) == 2) {
        finished.push_back(std::move(*it));
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& session : finished) {
    session->up.join();
    session->down.join();
  }
  // Destroying the sessions closes their sockets.
}

void FaultProxy::Pump(Session& session, bool client_to_server) {
  Connection& from = client_to_server ? *session.client : *session.server;
  Connection& to = client_to_server ? *session.server : *session.client;
  const bool armed =
      fault_.kind != Fault::Kind::kNone &&
      fault_.client_to_server == client_to_server &&
      (fault_.connection_index < 0 || fault_.connection_index == session.index);
  const bool cut = armed && fault_.kind == Fault::Kind::kCutAfter;
  const bool corrupt = armed && fault_.kind == Fault::Kind::kCorruptAt;

  std::vector<char> buffer(kBufferSize);
  uint64_t position = 0;  // Bytes seen in this direction so far.
  while (!stopping_.load(std::memory_order_acquire)) {
    if (cut && position >= fault_.offset) {
      session.ShutdownBoth();
      break;
    }
    size_t want = buffer.size();
    if (cut) want = std::min<uint64_t>(want, fault_.offset - position);
    absl::StatusOr<size_t> n =
        from.ReadSome(buffer.data(), want, kPollInterval);
    if (absl::IsDeadlineExceeded(n.status())) continue;
    if (absl::IsUnavailable(n.status()) && !from.is_shut_down()) {
      // EOF (or reset) from this side: pass the end of stream on.
      if (!to.ShutdownWrite().ok()) session.ShutdownBoth();
      break;
    }
    if (!n.ok()) {
      session.ShutdownBoth();
      break;
    }
    if (corrupt && fault_.offset >= position && fault_.offset < position + *n) {
      buffer[fault_.offset - position] ^= 0x01;
    }
    position += *n;
    const iovec piece = {buffer.data(), *n};
    if (!to.WriteAll(absl::MakeConstSpan(&piece, 1), kWriteTimeout).ok()) {
      session.ShutdownBoth();
      break;
    }
    bytes_forwarded_.fetch_add(*n, std::memory_order_relaxed);
  }
  session.pumps_done.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace livemig
