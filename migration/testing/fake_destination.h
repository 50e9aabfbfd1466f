// File: migration/testing/fake_destination.h
//
// FakeDestination: a hand-driven destination for tests of the Sender against
// a hostile or broken peer (hostile_destination_test). It listens on
// 127.0.0.1, accepts the source's channels and answers each Hello as a test
// says (by default as livemig's receiver would), then lets the test drive
// channel 0 frame by frame (acks, aborts, silence) while drainer threads read
// the other channels; it can also read at a trickle. ReadAnyFrame() reads one
// whole frame of any type.
//
// Thread safety: the test thread drives channel 0; the drainers touch only
// their own channels and the recorded markers and encodings (under mu_).
#ifndef LIVEMIG_MIGRATION_TESTING_FAKE_DESTINATION_H_
#define LIVEMIG_MIGRATION_TESTING_FAKE_DESTINATION_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::testing {

// Every read and write of the fake's own, unless a call says otherwise.
inline constexpr absl::Duration kFakeDestinationIo = absl::Seconds(3);

struct Frame {
  wire::FrameType type;
  proto::PageBatch batch;         // kPageBatch
  proto::IterationMarker marker;  // kIterationMarker
  proto::Ack ack;                 // kAck
  proto::Abort abort;             // kAbort
  std::string message;
};

// Reads one whole frame (payload drained).
inline absl::StatusOr<Frame> ReadAnyFrame(Connection& conn,
                                          absl::Duration timeout = kFakeDestinationIo) {
  absl::StatusOr<wire::IncomingFrame> in = wire::ReadFrameStart(conn, timeout);
  if (!in.ok()) return in.status();
  Frame f;
  f.type = in->header.type;
  f.message = in->message;
  if (f.type == wire::FrameType::kPageBatch) {
    if (!f.batch.ParseFromString(in->message)) return absl::DataLossError("bad batch");
    std::vector<uint8_t> buf(in->header.payload_len);
    iovec piece{buf.data(), buf.size()};
    absl::Status st = wire::ReadPayloadAndVerify(
        conn, *in, buf.empty() ? absl::Span<const iovec>() : absl::MakeConstSpan(&piece, 1),
        timeout);
    if (!st.ok()) return st;
    return f;
  }
  if (in->header.payload_len != 0) return absl::DataLossError("payload on a non-batch frame");
  if (f.type == wire::FrameType::kIterationMarker) {
    f.marker.ParseFromString(in->message);
  } else if (f.type == wire::FrameType::kAck) {
    f.ack.ParseFromString(in->message);
  } else if (f.type == wire::FrameType::kAbort) {
    f.abort.ParseFromString(in->message);
  }
  return f;
}

// A fake destination. Accept() takes the sender's channels; the test thread
// drives channel 0, drainer threads read the other channels.
class FakeDestination {
 public:
  explicit FakeDestination(uint32_t channels) : channels_(channels) {
    auto l = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
    EXPECT_TRUE(l.ok()) << l.status();
    listener_ = std::move(*l);
  }
  ~FakeDestination() { Close(); }

  Endpoint endpoint() const { return listener_->local_endpoint(); }

  // Accepts every channel and reads its Hello; `reply` decides the answer
  // (nullopt: no answer).
  absl::Status AcceptAll(
      std::function<std::optional<proto::Hello>(uint32_t index, const proto::Hello&)> reply =
          nullptr) {
    conns_.resize(channels_);
    for (uint32_t i = 0; i < channels_; ++i) {
      auto c = listener_->Accept(absl::Seconds(10));
      if (!c.ok()) return c.status();
      proto::Hello hello;
      absl::Status st = ReadExpected(**c, wire::FrameType::kHello, &hello, kFakeDestinationIo);
      if (!st.ok()) return st;
      source_hellos_.push_back(hello);
      std::optional<proto::Hello> answer =
          reply ? reply(hello.channel_index(), hello) : std::optional<proto::Hello>(Agree(hello));
      if (answer.has_value()) {
        st = wire::WriteFrame(**c, wire::FrameType::kHello, *answer, kFakeDestinationIo);
        if (!st.ok()) return st;
      }
      conns_[hello.channel_index()] = std::move(*c);
    }
    return absl::OkStatus();
  }

  static proto::Hello Agree(const proto::Hello& source) {
    proto::Hello reply = MakeHello(proto::ROLE_DESTINATION, source.channel_index(),
                                   source.channel_count(), source.migration_id());
    reply.set_features(AgreedFeatures(source));
    reply.set_compression(source.compression());
    return reply;
  }

  Connection& ch(uint32_t i) { return *conns_[i]; }

  // Reads the RegionTable and answers with `ack` (default: ACK_REGION_TABLE).
  absl::Status TableAndAck(std::optional<proto::Ack> ack = std::nullopt) {
    absl::StatusOr<Frame> f = ReadAnyFrame(ch(0));
    if (!f.ok()) return f.status();
    if (f->type != wire::FrameType::kRegionTable) return absl::DataLossError("want table");
    proto::Ack a;
    a.set_kind(proto::ACK_REGION_TABLE);
    absl::Status st =
        wire::WriteFrame(ch(0), wire::FrameType::kAck, ack ? *ack : a, kFakeDestinationIo);
    if (!st.ok()) return st;
    StartDrainers();
    return absl::OkStatus();
  }

  // Reads channel 0 until its END marker of some round; waits until every
  // other channel saw that marker too. Returns the marker.
  absl::StatusOr<proto::IterationMarker> ReadRound() {
    while (true) {
      absl::StatusOr<Frame> f = ReadAnyFrame(ch(0));
      if (!f.ok()) return f.status();
      Record(0, *f);
      if (f->type == wire::FrameType::kIterationMarker) {
        std::unique_lock<std::mutex> lock(mu_);
        const uint32_t r = f->marker.round();
        const bool all = cv_.wait_for(lock, std::chrono::seconds(5), [&] {
          for (uint32_t c = 1; c < channels_; ++c)
            if (markers_[c].count(r) == 0) return false;
          return true;
        });
        if (!all) return absl::DeadlineExceededError("other channels did not end the round");
        return f->marker;
      }
      if (f->type != wire::FrameType::kPageBatch) {
        return absl::DataLossError(absl::StrCat("unexpected frame ", wire::FrameTypeName(f->type)));
      }
    }
  }

  absl::Status SendAck(proto::AckKind kind, uint32_t round = 0, int32_t status = 0,
                       uint64_t expected_us = 0, const std::string& message = "") {
    proto::Ack a;
    a.set_kind(kind);
    a.set_round(round);
    a.set_status_code(status);
    a.set_message(message);
    if (kind == proto::ACK_ROUND) a.set_expected_completion_us(expected_us);
    return wire::WriteFrame(ch(0), wire::FrameType::kAck, a, kFakeDestinationIo);
  }

  absl::Status SendAbort(absl::StatusCode code, const std::string& why) {
    return wire::WriteFrame(ch(0), wire::FrameType::kAbort,
                            AbortFromStatus(absl::Status(code, why), proto::ROLE_DESTINATION),
                            kFakeDestinationIo);
  }

  // Live rounds acknowledged until the final marker arrives. Returns the
  // final round's number.
  absl::StatusOr<uint32_t> AckRoundsUntilFinal() {
    while (true) {
      absl::StatusOr<proto::IterationMarker> m = ReadRound();
      if (!m.ok()) return m.status();
      if (m->final()) return m->round();
      absl::Status st = SendAck(proto::ACK_ROUND, m->round());
      if (!st.ok()) return st;
    }
  }

  // After the final marker: reads DeviceState frames and the Completion.
  absl::Status ReadDeviceStateAndCompletion() {
    while (true) {
      absl::StatusOr<Frame> f = ReadAnyFrame(ch(0));
      if (!f.ok()) return f.status();
      if (f->type == wire::FrameType::kDeviceState) continue;
      if (f->type == wire::FrameType::kCompletion) return absl::OkStatus();
      return absl::DataLossError(absl::StrCat("unexpected ", wire::FrameTypeName(f->type)));
    }
  }

  // Everything up to (and including) reading the Completion.
  absl::StatusOr<uint32_t> UpToCompletion() {
    if (absl::Status s = AcceptAll(); !s.ok()) return s;
    if (absl::Status s = TableAndAck(); !s.ok()) return s;
    absl::StatusOr<uint32_t> final_round = AckRoundsUntilFinal();
    if (!final_round.ok()) return final_round.status();
    if (absl::Status s = ReadDeviceStateAndCompletion(); !s.ok()) return s;
    return *final_round;
  }

  // Encodings seen in page batches, over every channel.
  std::set<int> encodings() {
    std::lock_guard<std::mutex> lock(mu_);
    return encodings_;
  }
  const std::vector<proto::Hello>& source_hellos() const { return source_hellos_; }

  void Close() {
    for (auto& c : conns_)
      if (c) c->Shutdown();
    for (auto& t : drainers_) t.join();
    drainers_.clear();
    listener_->Close();
  }

 private:
  void Record(uint32_t c, const Frame& f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (f.type == wire::FrameType::kPageBatch) encodings_.insert(f.batch.encoding());
    if (f.type == wire::FrameType::kIterationMarker) markers_[c].insert(f.marker.round());
    cv_.notify_all();
  }
  void StartDrainers() {
    for (uint32_t c = 1; c < channels_; ++c) {
      drainers_.emplace_back([this, c] {
        while (!trickle_.load()) {
          absl::StatusOr<Frame> f = ReadAnyFrame(ch(c), absl::Seconds(30));
          if (!f.ok()) return;
          Record(c, *f);
        }
        Trickle(c);
      });
    }
  }

  const uint32_t channels_;
  std::unique_ptr<Listener> listener_;

 public:
  // From the next frame boundary on, drainers (and Trickle() callers) read
  // 32 KiB every 20 ms (at most 1.6 MB/s a channel): every 1 MiB batch goes
  // through well within a 3 s io timeout.
  std::atomic<bool> trickle_{false};
  std::atomic<uint64_t> trickled_{0};
  void Trickle(uint32_t c) {
    std::vector<char> buf(32 * 1024);
    while (true) {
      absl::StatusOr<size_t> n = ch(c).ReadSome(buf.data(), buf.size(), absl::Seconds(5));
      if (!n.ok()) return;
      trickled_ += *n;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }

 private:
  std::vector<std::unique_ptr<Connection>> conns_;
  std::vector<proto::Hello> source_hellos_;
  std::vector<std::thread> drainers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint32_t, std::set<uint32_t>> markers_;
  std::set<int> encodings_;
};

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_FAKE_DESTINATION_H_
