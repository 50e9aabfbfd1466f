// File: migration/sender.h
//
// Sender: the source side of a pre-copy live migration, embedded in a VMM.
//
//   SenderOptions options;
//   options.destination = Endpoint::Tcp("127.0.0.1", 7000);
//   Sender sender(options);
//   absl::StatusOr<MigrationStats> stats = sender.Migrate(memory, vm);
//
// Migrate() connects `channels` connections, sends the region table, then
// rounds: round 0 sends every page (zero pages as ZERO runs, never their
// bytes), each later round harvests the regions' AtomicBitmaps (after every
// dirty source collected and VmControl::CollectDirty merged) and sends the dirty pages, spread over every
// channel, and waits for the receiver's acknowledgement of the round. After
// each round the switchover rule (migration/convergence.h) budgets the whole
// pause: pending dirty bytes and VmControl::DeviceStateSizeHint() over the
// measured bandwidth, plus the completion step's measured cost (the
// receiver's, reported in its round acknowledgement, the sender's own digest
// refresh, verify=full's re-hash, two round trips); it switches over when
// that is <= downtime_limit. Round limit or timeout: OnLimit::kCancel fails
// with the VM running, kForce switches over anyway. A dirty volume that does
// not shrink for `stall_rounds` rounds escalates: a throttle step with
// auto_converge, the limit policy without. Auto-converge (QEMU's steps: 20%,
// +10%, max 99%) also throttles when the guest dirties more than half of
// what a round sends, two rounds in a row. Switchover: Pause(), final
// harvest and send, DeviceState(), Completion with the page-hash digests of
// every region (migration/verification.h), then wait for the receiver's
// verified acknowledgement, hand the guest over and wait for the receiver to
// confirm it committed (protocol.h).
//
// Verification (`verify`):
//   kSent (default)  the receiver compares the hash of every page version
//                    sent with the hash of what landed (O(final dirty set)
//                    in the pause); a mismatch fails the migration (DataLoss
//                    naming the region and pages). After the commit the
//                    paused source re-hashes its memory against what it sent
//                    (the source audit, migration/source_audit.h): pages
//                    written without being marked dirty are reported in
//                    stats.audit — the migration has succeeded, the
//                    destination holds their older version.
//   kFull            as kSent, and that audit runs before the handover, in
//                    the pause (O(memory), stats.downtime_breakdown.verify_ms):
//                    such a page fails the migration with DataLoss, the VM
//                    resumed.
//   kOff             neither: frames are still checked page by page.
//
// Failure (any error, Cancel(), peer abort, limit with kCancel) before the
// handover is sent: every page harvested during the attempt is marked dirty
// again, the VM is resumed if it was paused, the throttle is reset to 0, and
// the error is returned; the source memory is never written. A later
// Migrate() starts from scratch and is exact. On success the VM stays paused:
// the destination owns it now.
//
// Failure after the handover was sent, without the receiver's confirmation:
// Unknown ("handover in doubt"), stats status "in-doubt". The receiver may
// have committed, so the VM stays paused (resuming it could run the guest
// twice); every harvested page is still marked dirty again, so resuming it
// once the destination is known not to run the guest, and migrating again,
// loses nothing. A receiver that answers the handover with a failure
// discarded its copy: that is an ordinary failure and the VM is resumed.
//
// Cancel() before the handover is sent makes Migrate() fail with Cancelled
// promptly in any phase (every connection is shut down); a Cancel() while no
// Migrate() runs makes the next one fail with Cancelled at once. From the
// handover on — the point of no return — Cancel() has no effect. Each
// Migrate() clears the request when it returns.
//
// Thread safety: Migrate() runs on the caller's thread (it starts one worker
// thread per channel) and must not run twice at once on one Sender. Cancel()
// may be called from any thread. `memory` and `vm` must outlive Migrate().
#ifndef LIVEMIG_MIGRATION_SENDER_H_
#define LIVEMIG_MIGRATION_SENDER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/guest_memory.h"
#include "migration/stats.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/vm_control.h"
#include "migration/wire/compression.h"

namespace livemig {

namespace migration_internal {
class Failure;
}  // namespace migration_internal

struct SenderOptions {
  // TCP, Unix, or connected sockets (Endpoint::Fds: one per channel, so
  // exactly `channels` of them; each used through its own dup()).
  Endpoint destination;
  uint32_t channels = 2;
  absl::Duration downtime_limit = absl::Milliseconds(300);
  uint32_t max_rounds = 30;
  // The whole pre-copy phase, from Migrate() to the switchover decision;
  // past it the limit policy applies (on_limit). kCancel also cuts a round
  // still going out at that moment (a slow link or destination cannot
  // stretch it); kForce lets that round finish, then switches over. Ten
  // minutes move some 600 GB at 1 GB/s: raise it for larger guests or slower
  // links; absl::InfiniteDuration() for none.
  absl::Duration timeout = absl::Minutes(10);
  enum class OnLimit { kCancel, kForce };
  OnLimit on_limit = OnLimit::kCancel;
  uint32_t stall_rounds = 5;
  bool auto_converge = false;
  int throttle_initial = 20;
  int throttle_increment = 10;
  int throttle_max = 99;
  uint64_t max_bandwidth = 0;  // Bytes per second over all channels; 0: no cap.
  absl::Duration io_timeout = absl::Seconds(30);  // Every read and write.
  // The longest the guest may stay paused before the handover (the final
  // round, device state, verification; internal/pause_budget.h): past it
  // the attempt fails with DeadlineExceeded and the guest resumes, however
  // fast the destination answers each read or write. A forced switchover
  // (kForce) with much left to send may need more. InfiniteDuration: none.
  absl::Duration max_pause = absl::Minutes(1);
  // Pages per PageBatch frame (1 MiB). Under max_bandwidth, fewer: one batch
  // goes out within io_timeout / 4 at each channel's share of the cap
  // (max_bandwidth / channels: the channels take turns), so neither side
  // waits out its timeout for a channel's next bytes; a cap too low for one
  // page per channel in that time is InvalidArgument.
  uint32_t batch_pages = 256;
  // Mutual TLS on every channel (migration/transport/tls_context.h, the
  // source's role, which names the destination); null: plaintext.
  std::shared_ptr<const TlsContext> tls;
  // Relative path under the receiver's root for each file-backed region, by
  // region index — the index in `memory`, whose regions are sorted by guest
  // address — missing or empty: "region-<index>.mem".
  std::vector<std::string> file_names;
  std::string migration_id;  // Empty: a random one.
  // Sources of writes the tracked API does not see (KVM's dirty log or ring,
  // userfaultfd; core/dirty_sources/), borrowed for each Migrate(): started
  // before round 0, collected before every harvest, stopped when it returns.
  std::vector<DirtySource*> dirty_sources;
  // Page-batch compression (opt-in; protocol.h): every Hello asks for the
  // codec, and a destination that does not accept it makes Migrate() fail
  // with FailedPrecondition naming the codec before any page is sent. Each
  // channel compresses its batches; one that does not shrink is sent raw,
  // and incompressible memory makes the channel back off
  // (migration/wire/compression.h). max_bandwidth counts compressed bytes.
  wire::CompressionSpec compression;
  enum class Verify { kSent, kFull, kOff };
  Verify verify = Verify::kSent;  // See the file comment.
  // Called on the migration thread after every pre-copy round, while the
  // guest runs and the channels are idle, and once more for the final round
  // (round_stats.back().final) after the handover, once the pause is over;
  // never inside the pause.
  std::function<void(const MigrationStats&)> on_round;
  // Called on the migration thread about every `progress_interval` while a
  // live round's pages are being sent (not in the pause, not between
  // rounds: on_round covers those). Keep it short: it delays the round end
  // it runs before.
  std::function<void(const MigrationProgress&)> on_progress;
  absl::Duration progress_interval = absl::Milliseconds(100);
  // Testing only: called for every page about to be sent, after its hash was
  // recorded; true leaves it out (a page the sender thinks it sent).
  std::function<bool(uint32_t region, uint64_t page)> test_drop_page;
};

// "sent", "full", "off".
const char* VerifyName(SenderOptions::Verify verify);

// The lowest max_bandwidth Migrate() accepts with `io_timeout` and
// `channels`: one page per channel must go out within io_timeout / 4 (the
// channels share the cap; below it, Migrate() is InvalidArgument).
uint64_t LowestMaxBandwidth(absl::Duration io_timeout, uint32_t channels = 1);

class Sender {
 public:
  explicit Sender(SenderOptions options);
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // Runs one migration; see the file comment. Error codes: Unavailable (peer
  // unreachable or gone), DataLoss (corrupt stream), DeadlineExceeded
  // (timeout / io_timeout), Aborted (no convergence within max_rounds with
  // kCancel), Cancelled (Cancel()), or the peer's code from its Abort.
  [[nodiscard]] absl::StatusOr<MigrationStats> Migrate(
      const GuestMemory<AtomicBitmap>& memory, VmControl& vm);

  // Makes a running Migrate() fail with Cancelled as soon as possible, unless
  // the handover was sent already (see the file comment). Returns whether
  // the request takes effect: true while no Migrate() runs (the next one
  // then fails at once) or before the running one's point of no return;
  // false from the handover on (the migration goes on to its end).
  bool Cancel();

  // The stats of the last Migrate(), also after it failed: then bytes and
  // pages sent, total_time_ms and (if the guest was paused) downtime_ms
  // cover the whole attempt, including the round that was cut short.
  const MigrationStats& last_stats() const { return last_stats_; }

 private:
  SenderOptions options_;
  // Set by Cancel() on any thread, polled by the migration thread; relaxed:
  // it carries no data, only "stop soon".
  std::atomic<bool> cancelled_{false};
  // The running attempt's failure, which Cancel() sets (shutting its
  // connections down); null outside Migrate() and from the handover on.
  std::mutex mu_;
  migration_internal::Failure* active_ = nullptr;  // Guarded by mu_.
  // The running Migrate() sent its handover: Cancel() no longer applies.
  bool past_no_return_ = false;  // Guarded by mu_.
  MigrationStats last_stats_;

};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_SENDER_H_
