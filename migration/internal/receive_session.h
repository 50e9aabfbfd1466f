// File: migration/internal/receive_session.h
//
// Internal to //migration:receiver: ReceiveSession, one migration being
// received (Receiver::ReceiveOne() makes one per call). Its readers (one
// thread per channel) land page batches, meet at the round barrier, and the
// session's own thread runs the completion, handover and commit
// (migration/protocol.h has the sequence; receiver.h the contract).
//
// Thread safety: as each member says; Run() once, on ReceiveOne()'s thread.
#ifndef LIVEMIG_MIGRATION_INTERNAL_RECEIVE_SESSION_H_
#define LIVEMIG_MIGRATION_INTERNAL_RECEIVE_SESSION_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/internal/channel_acceptor.h"
#include "migration/internal/file_landing.h"
#include "migration/internal/round_barrier.h"
#include "migration/internal/round_pages.h"
#include "migration/internal/torn_pages.h"
#include "migration/internal/writeback_thread.h"
#include "migration/page_hashes.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
#include "migration/transport/connection.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {

// One migration being received.
class ReceiveSession {
 public:
  explicit ReceiveSession(Receiver& receiver) : receiver_(receiver), options_(receiver.options_) {}
  ~ReceiveSession() {
    std::lock_guard<std::mutex> lock(receiver_.mu_);
    receiver_.live_.clear();
    receiver_.session_ = nullptr;
  }

  absl::StatusOr<ReceivedMigration> Run();

  // Receiver::Cancel() of this session, from any thread: before the
  // source's HANDOVER, fails it with Cancelled "migration cancelled by the
  // destination", which the source reads in an Abort; after it, nothing
  // (the commit goes on; the request stops the next ReceiveOne()).
  void CancelByDestination();

 private:
  // Waits for one migration's channels (migration/internal/channel_acceptor.h).
  absl::Status AcceptChannels();
  // Reads channel `index`'s rounds; an error names the channel, its peer
  // and the round (Located).
  absl::Status ReadChannel(size_t index);
  absl::Status ReadRounds(size_t index, uint32_t& round);
  // The next frame's start on `conn`, within the io timeout and what is left
  // of the session (past it: the session's DeadlineExceeded).
  absl::StatusOr<wire::IncomingFrame> ReadSessionFrame(Connection& conn);
  // channel 0's next frame, which must be `type` (ReadExpected), located.
  absl::Status ReadControl(wire::FrameType type, google::protobuf::MessageLite* out,
                           absl::string_view what);
  // `status` with where it happened in front ("channel 1 (127.0.0.1:5000),
  // round 0: peer closed the connection"), unless it says already or is
  // the source's own Abort.
  absl::Status Located(absl::Status status, size_t channel, absl::string_view what) const;
  // The source closed a channel (before or in a frame): an Abort it wrote on
  // channel 0 first may say why.
  static bool SourceGone(const absl::Status& status);
  // After another channel's SourceGone: waits while that Abort may still be
  // on its way on channel 0 -- until a channel failed, or channel 0 took no
  // byte for kAbortQuiet (on a slow link its last frame and the Abort trail
  // the other channel's close by as long as their bytes take), at most the
  // read timeout.
  void AwaitSourceReason();
  static constexpr absl::Duration kAbortQuiet = absl::Milliseconds(500);
  absl::Status ApplyBatch(Connection& conn, wire::IncomingFrame& frame,
                          uint32_t channel_round, migration_internal::FileLanding& landing,
                          wire::BatchDecompressor& decompressor);
  // At each round's end, every channel waiting: refreshes the page-hash
  // digests (so completion only digests the final round) and, when durable,
  // flushes the round's data; measures both for the round acknowledgement.
  void EndOfRound(uint32_t round, bool final);
  absl::Status SendRoundAck(uint32_t round);
  // Compares the source's digests with what landed; on a mismatch asks the
  // source for the first differing chunk's page hashes and names the pages.
  absl::Status Verify(const proto::Completion& completion);
  absl::StatusOr<ReceivedMigration> Finish();
  void Fail(const absl::Status& status);
  void Step(const char* step) {
    if (options_.test_on_step) options_.test_on_step(step);
  }
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return !failure_.ok();
  }
  absl::Status failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }
  void SendAbort(const absl::Status& status);
  // One frame on channel 0, under control_write_mu_.
  absl::Status WriteControl(wire::FrameType type, const google::protobuf::MessageLite& message);
  // A read's timeout: io_timeout, or what is left of the session if less.
  absl::Duration ReadTimeout() const {
    return std::min(options_.io_timeout,
                    std::max(session_deadline_ - absl::Now(), absl::ZeroDuration()));
  }
  absl::Status CheckSessionDeadline() const {
    if (absl::Now() > session_deadline_) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the migration did not finish within the session timeout of ",
          absl::FormatDuration(options_.session_timeout)));
    }
    return absl::OkStatus();
  }
  absl::Status CheckCancelled() const {
    if (receiver_.cancelled_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("migration cancelled by the destination");
    }
    return absl::OkStatus();
  }

  Receiver& receiver_;
  const ReceiverOptions& options_;
  std::vector<std::unique_ptr<Connection>> channels_;
  std::optional<RegionStore> store_;
  // landed_[r]: the hash of every page of region r as it landed.
  std::vector<PageHashes> landed_;
  // file_writes_[r]: taken by the readers landing round-0 pages in region
  // r's file (file_landing.h: they take turns, asleep, not spinning in the
  // kernel's inode lock).
  std::deque<std::mutex> file_writes_;
  std::string migration_id_;
  uint64_t features_ = 0;  // In effect for this migration (proto::Feature bits).
  wire::Codec compression_ = wire::Codec::kNone;  // Agreed in the Hellos.
  // Set once the channels are accepted; CheckSessionDeadline() compares.
  absl::Time session_deadline_ = absl::InfiniteFuture();
  // Serializes writes on channel 0: channel 0's reader acknowledges rounds,
  // the session's thread answers the completion and the handover, any
  // thread may send an Abort (WriteControl).
  std::mutex control_write_mu_;
  // A destination cancel and the commit exclude each other: whichever
  // comes first decides (CancelByDestination, Finish). Once VERIFIED is on
  // its way the source may already have sent its HANDOVER: a cancel then
  // does not abort (the source would be left in doubt, its guest paused)
  // but is kept for the HANDOVER, which is answered COMMITTED{CANCELLED}
  // without committing, so the source resumes.
  std::mutex handover_mu_;
  bool handed_over_ ABSL_GUARDED_BY(handover_mu_) = false;
  bool verified_sent_ ABSL_GUARDED_BY(handover_mu_) = false;
  bool cancel_at_handover_ ABSL_GUARDED_BY(handover_mu_) = false;
  // Written in EndOfRound (under the barrier's lock), read by channel 0's
  // reader after the barrier: the barrier's mutex orders them; relaxed.
  std::atomic<uint64_t> expected_completion_us_{0};

  std::mutex mu_;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  // The first error of a round-end step (durable: SyncData(); round 0: the
  // deferred space claim). Every channel checks it as it leaves the barrier.
  absl::Status sync_error_ ABSL_GUARDED_BY(mu_);
  // Made under mu_ (Fail() reads it from any thread), never reset.
  std::unique_ptr<migration_internal::RoundBarrier> barrier_;
  // Starts writeback of the staging files; lives as long as store_ (its
  // last kick may still run during completion, never waited for there).
  std::optional<migration_internal::WritebackThread> writeback_;
  // Relaxed: each reader adds its own counts; read after the readers joined
  // (raw_pages_ also paces writeback, which orders nothing).
  std::atomic<uint64_t> raw_pages_{0};
  std::atomic<uint64_t> file_pages_{0};  // Of raw_pages_, landed by FileLanding.
  std::atomic<uint64_t> zero_pages_{0};
  std::atomic<uint64_t> compressed_batches_{0};
  std::optional<migration_internal::TornPages> torn_;  // FEATURE_TORN_PAGES; at the table.
  // From the accept on: refuses other sources ("busy") until COMMITTED is
  // written or the session ends.
  std::optional<migration_internal::BusyRefuser> refuser_;
  // The pages that arrived in the current round (a second arrival is
  // refused); made with landed_.
  std::optional<migration_internal::RoundPages> round_pages_;
  std::atomic<uint64_t> decompress_ns_{0};
  std::atomic<uint32_t> rounds_{0};
  std::atomic<bool> abort_sent_{false};  // SendAbort runs once.
  // Channel 0's bytes_read() where its reader last stood between frames
  // (written by that reader; read once the readers are joined).
  std::atomic<uint64_t> control_boundary_{0};
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_INTERNAL_RECEIVE_SESSION_H_
