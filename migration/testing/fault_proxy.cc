// File: migration/testing/fault_proxy.cc
#include "migration/testing/fault_proxy.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"

namespace livemig {
namespace {

// How long blocking calls wait before re-checking `stopping_`.
constexpr absl::Duration kPollInterval = absl::Milliseconds(50);
constexpr absl::Duration kConnectTimeout = absl::Seconds(5);
constexpr absl::Duration kWriteTimeout = absl::Seconds(10);
constexpr size_t kBufferSize = 64 * 1024;
constexpr uint64_t kNoCut = UINT64_MAX;

// Follows the frames of one direction's stream to find the stream position
// of a cut given as "`offset` bytes into PAGE_BATCH `batch` of `round`".
class FrameTracker {
 public:
  FrameTracker(int round, int batch, uint64_t offset)
      : round_(static_cast<uint32_t>(round)), batch_(batch), offset_(offset) {}

  // Consumes the next `n` stream bytes.
  void Feed(const char* data, size_t n) {
    while (n > 0 && !lost_) {
      if (body_left_ > 0) {
        const uint64_t take = std::min<uint64_t>(body_left_, n);
        body_left_ -= take;
        position_ += take;
        data += take;
        n -= take;
        continue;
      }
      const size_t take = std::min(n, header_.size() - have_);
      std::memcpy(header_.data() + have_, data, take);
      have_ += take;
      position_ += take;
      data += take;
      n -= take;
      if (have_ == header_.size()) Header();
    }
  }

  uint64_t cut() const { return cut_; }

 private:
  void Header() {
    have_ = 0;
    absl::StatusOr<wire::FrameHeader> header = wire::DecodeFrameHeader(
        absl::MakeConstSpan(header_.data(), header_.size()));
    if (!header.ok()) {  // Not livemig frames (e.g. TLS): nothing to follow.
      lost_ = true;
      return;
    }
    const uint64_t frame_start = position_ - wire::kFrameHeaderSize;
    body_left_ = header->message_len + header->payload_len;
    const uint64_t size = wire::kFrameHeaderSize + body_left_;
    if (cut_ == kNoCut && rounds_seen_ == round_ &&
        header->type == wire::FrameType::kPageBatch && batches_seen_++ == batch_) {
      cut_ = frame_start +
             std::clamp<uint64_t>(offset_, wire::kFrameHeaderSize + 1, size - 1);
    }
    if (header->type == wire::FrameType::kIterationMarker) ++rounds_seen_;
  }

  const uint32_t round_;
  const int batch_;
  const uint64_t offset_;
  int batches_seen_ = 0;  // Of round_.
  std::array<uint8_t, wire::kFrameHeaderSize> header_{};
  size_t have_ = 0;
  uint64_t body_left_ = 0;
  uint64_t position_ = 0;
  uint32_t rounds_seen_ = 0;
  bool lost_ = false;
  uint64_t cut_ = kNoCut;
};

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
  const bool throttle = armed && fault_.kind == Fault::Kind::kThrottle &&
                        fault_.bytes_per_second > 0;
  constexpr size_t kThrottleStep = 16 * 1024;
  absl::Time next_send = absl::Now();
  std::optional<FrameTracker> tracker;
  if (cut && fault_.in_round >= 0) {
    tracker.emplace(fault_.in_round, fault_.batch, fault_.offset);
  }
  // Where the cut goes: known up front, or once the tracker found it.
  uint64_t cut_at = cut && !tracker ? fault_.offset : kNoCut;

  std::vector<char> buffer(kBufferSize);
  uint64_t position = 0;  // Bytes seen in this direction so far.
  while (!stopping_.load(std::memory_order_acquire)) {
    if (position >= cut_at) {
      session.ShutdownBoth();
      break;
    }
    size_t want = buffer.size();
    if (cut_at != kNoCut) want = std::min<uint64_t>(want, cut_at - position);
    if (throttle) {
      want = std::min(want, kThrottleStep);
      absl::SleepFor(next_send - absl::Now());  // Nothing read meanwhile: the link is slow.
    }
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
    size_t forward = *n;
    if (tracker) {
      // The cut is at least a header past where the tracker learns it, so
      // it is never behind bytes already forwarded.
      tracker->Feed(buffer.data(), *n);
      cut_at = tracker->cut();
      if (cut_at < position + forward) forward = cut_at - position;
    }
    position += forward;
    const iovec piece = {buffer.data(), forward};
    if (!to.WriteAll(absl::MakeConstSpan(&piece, 1), kWriteTimeout).ok()) {
      session.ShutdownBoth();
      break;
    }
    bytes_forwarded_.fetch_add(forward, std::memory_order_relaxed);
    if (throttle) {
      next_send = std::max(next_send, absl::Now() - absl::Milliseconds(50)) +
                  absl::Seconds(static_cast<double>(forward) /
                                static_cast<double>(fault_.bytes_per_second));
    }
  }
  session.pumps_done.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace livemig
