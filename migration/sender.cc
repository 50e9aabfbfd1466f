#include "migration/sender.h"

#include <algorithm>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "migration/convergence.h"
#include "migration/device_state.h"
#include "migration/internal/channel_totals.h"
#include "migration/internal/dirty_harvest.h"
#include "migration/internal/open_channel.h"
#include "migration/internal/pause_budget.h"
#include "migration/internal/rate_limiter.h"
#include "migration/internal/send_channel.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/region_table.h"
#include "migration/source_audit.h"
#include "migration/transport/connection.h"
#include "migration/verification.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using migration_internal::ChannelCounters;
using migration_internal::ChannelTotals;
using migration_internal::DirtyHarvest;
using migration_internal::Failure;
using migration_internal::OnChannel;
using migration_internal::PacedBatchPages;
using migration_internal::PageWork;
using migration_internal::RateLimiter;
using migration_internal::ReadBehindQueue;
using migration_internal::SendChannel;

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// The most page-hash queries a receiver may make after one Completion (one
// per differing region is all it needs).
constexpr int kMaxHashQueries = 64;

ConvergencePolicy PolicyOf(const SenderOptions& o) {
  ConvergencePolicy p;
  p.downtime_limit = o.downtime_limit;
  p.max_rounds = o.max_rounds;
  p.timeout = o.timeout;
  p.force_at_limit = o.on_limit == SenderOptions::OnLimit::kForce;
  p.stall_rounds = o.stall_rounds;
  p.auto_converge = o.auto_converge;
  p.throttle_initial = o.throttle_initial;
  p.throttle_increment = o.throttle_increment;
  p.throttle_max = o.throttle_max;
  return p;
}

// Pages per batch under the bandwidth cap, sized for each channel's share
// of it (internal/rate_limiter.h).
uint32_t BatchPages(const SenderOptions& o) {
  return PacedBatchPages(migration_internal::ChannelShare(o.max_bandwidth, o.channels),
                         o.io_timeout, o.batch_pages, kMigrationPageSize);
}

// One migration attempt; the Sender owns the policy knobs, this owns state.
class Migration {
 public:
  // `publish` is called with this attempt's Failure once it can be cancelled,
  // with (nullptr, true) at the point of no return, and with (nullptr,
  // false) when the attempt ends.
  Migration(const SenderOptions& options, const GuestMemory<AtomicBitmap>& memory,
            VmControl& vm, const std::atomic<bool>& cancelled, MigrationStats& stats,
            std::function<void(Failure*, bool no_return)> publish)
      : options_(options),
        memory_(memory),
        vm_(vm),
        cancelled_(cancelled),
        stats_(stats),
        publish_(std::move(publish)),
        limiter_(options.max_bandwidth),
        convergence_(PolicyOf(options)),
        harvest_(memory, vm, options.dirty_sources, BatchPages(options)) {}
  ~Migration() { publish_(nullptr, false); }

  absl::Status Run();
  // Restores the source after `error`: re-marks every harvested page, resumes the VM, resets
  // the throttle, then tells the receiver why (when the channels still work). Returns the
  // reason to report: the receiver's own (PeerReason), or the source's Cancel().
  absl::Status RollBack(absl::Status error);
  // Stats of a failed attempt once rolled back: what was sent, how long it ran and paused.
  void RecordFailure();
  bool handed_over() const { return handed_over_; }
  bool left_paused() const { return handed_over_ || !resume_error_.ok(); }

 private:
  absl::Status Setup();
  absl::Status CheckContinue() const;
  // A receiver that fails sends Abort on channel 0 and closes: a write that then fails here
  // (Unavailable) only echoes that. The receiver's reason if channel 0 holds its Abort.
  absl::Status PeerReason(absl::Status error);
  // Gives `work` to the least loaded channel.
  void Queue(PageWork work);
  // Queues the round-end marker on every channel and waits for all writes,
  // reporting progress meanwhile (live rounds).
  absl::Status FinishRound(uint32_t round, bool final);
  // Calls on_progress for the live round being sent.
  void ReportProgress(absl::Time now);
  // Reads the receiver's acknowledgement of round `round`; returns its
  // expected completion cost.
  absl::StatusOr<absl::Duration> ReadRoundAck(uint32_t round);
  // The completion step's expected cost, from what was measured so far.
  double ExpectedCompletionMs(absl::Duration receiver) const;
  absl::Status Switchover(uint32_t round);
  // Re-hashes the paused memory against what was sent (stats_.audit).
  SourceAudit Audit();
  // Sends Completion and answers the receiver's page-hash queries until it
  // acknowledges VERIFIED.
  absl::Status Complete(Connection& control);
  // After the destination verified everything: hands the guest over and
  // waits for it to confirm. Sets handed_over_ once the handover is sent.
  absl::Status HandOver(Connection& control);
  uint64_t BytesWritten() const;
  ChannelTotals Totals() const {
    return migration_internal::ReadTotals(counters_, BytesWritten());
  }
  // stats_'s totals from the channels', and the time so far.
  void RecordTotals();

  const SenderOptions& options_;
  const GuestMemory<AtomicBitmap>& memory_;
  VmControl& vm_;
  const std::atomic<bool>& cancelled_;
  MigrationStats& stats_;
  std::function<void(Failure*, bool)> publish_;
  RateLimiter limiter_;
  Convergence convergence_;
  Failure failure_;
  ChannelCounters counters_;
  std::vector<std::unique_ptr<SendChannel>> channels_;
  // sent_[r]: the hash of the last version of every page of region r sent.
  std::vector<PageHashes> sent_;
  std::vector<migration_internal::KnownZero> known_zero_;  // Per region.
  DirtyHarvest harvest_;
  const DirtyHarvest::Queue queue_ = [this](PageWork work) { Queue(std::move(work)); };
  bool paused_ = false;
  migration_internal::PauseBudget pause_;  // From the Pause() on.
  // The handover was sent and not refused: a failure now leaves the outcome
  // in doubt (see HandOver).
  bool handed_over_ = false;
  absl::Duration rtt_ = absl::InfiniteDuration();  // Smallest: Hellos, then round acks.
  absl::Duration refresh_ = absl::ZeroDuration();  // Last digest refresh.
  absl::Time start_;
  absl::Time pause_time_;
  absl::Time resumed_ = absl::InfiniteFuture();  // When RollBack() resumed the guest.
  absl::Status resume_error_;  // RollBack()'s Resume() failed: the guest stays paused.
  // The live round being sent, for on_progress.
  MigrationProgress progress_;
  uint64_t progress_pages_before_ = 0;  // Pages sent before this round.
  absl::Time round_start_;
  absl::Time last_progress_;
};

absl::Status Migration::CheckContinue() const {
  if (cancelled_.load(std::memory_order_relaxed)) {
    return absl::CancelledError("migration cancelled by the source");
  }
  return failure_.Get();
}

uint64_t Migration::BytesWritten() const {
  uint64_t total = 0;
  for (const auto& c : channels_) total += c->connection().bytes_written();
  return total;
}

absl::Status Migration::Setup() {
  const std::string id =
      options_.migration_id.empty() ? NewMigrationId() : options_.migration_id;
  // From here Cancel() reaches every connection made so far (each registers with failure_).
  publish_(&failure_, false);
  const Endpoint& to = options_.destination;
  if (to.kind == Endpoint::Kind::kFd && to.fds.size() != options_.channels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "destination ", to.ToString(), " has ", to.fds.size(), " descriptors for ",
        options_.channels, " channels: give one connected socket per channel"));
  }
  const migration_internal::MakeChannel make = [this](std::unique_ptr<Connection> conn,
                                                      uint32_t index) {
    return std::make_unique<SendChannel>(std::move(conn), &memory_, &sent_, &limiter_,
                                         &failure_, &counters_, options_.io_timeout,
                                         BatchPages(options_), &options_.test_drop_page,
                                         &known_zero_, index);
  };
  for (uint32_t i = 0; i < options_.channels; ++i) {
    const migration_internal::ChannelPlan plan{
        .destination = &to, .index = i, .count = options_.channels, .migration_id = id,
        .tls = options_.tls.get(), .io_timeout = options_.io_timeout,
        .compression = options_.compression,
        .batch_bytes = size_t{BatchPages(options_)} * kMigrationPageSize, .failure = &failure_};
    LIVEMIG_ASSIGN_OR_RETURN(const absl::Duration rtt, OpenChannel(plan, make, &channels_));
    rtt_ = std::min(rtt_, rtt);
  }
  LIVEMIG_ASSIGN_OR_RETURN(const proto::RegionTable table,
                           RegionTableFor(memory_, options_.file_names));
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    sent_.emplace_back(memory_.region(r).len() / kMigrationPageSize);
    known_zero_.push_back(migration_internal::KnownZero::For(memory_.region(r).region()));
    stats_.total += memory_.region(r).len();
  }
  // Refused now, not in the pause.
  if (options_.verify != SenderOptions::Verify::kOff) {
    LIVEMIG_RETURN_IF_ERROR(CheckDigestsFit(sent_, stats_.total));
  }
  Connection& control = channels_[0]->connection();
  LIVEMIG_RETURN_IF_ERROR(wire::WriteFrame(control, wire::FrameType::kRegionTable,
                                           table, options_.io_timeout));
  proto::Ack ack;
  LIVEMIG_RETURN_IF_ERROR(OnChannel(
      0, "the region table's acknowledgement",
      ReadExpected(control, wire::FrameType::kAck, &ack, options_.io_timeout)));
  if (ack.kind() != proto::ACK_REGION_TABLE) {
    return absl::DataLossError("expected the region table acknowledgement");
  }
  LIVEMIG_RETURN_IF_ERROR(AckRefusal(ack, "the region table"));
  for (auto& c : channels_) c->Start();
  return absl::OkStatus();
}

void Migration::Queue(PageWork work) {
  // The least loaded channel takes the batch: every channel carries pages in
  // every round, and a slow one is not waited for.
  SendChannel* best = channels_[0].get();
  uint64_t best_load = best->queued_pages();
  for (auto& c : channels_) {
    const uint64_t load = c->queued_pages();
    if (load < best_load) {
      best = c.get();
      best_load = load;
    }
  }
  best->Enqueue(std::move(work));
}

absl::Status Migration::FinishRound(uint32_t round, bool final) {
  for (auto& c : channels_) {
    PageWork marker;
    marker.marker = true;
    marker.round = round;
    marker.final = final;
    c->Enqueue(std::move(marker));
  }
  const bool report = !final && options_.on_progress != nullptr;
  const absl::Duration slice =
      report ? std::clamp(options_.progress_interval, absl::Milliseconds(1), absl::Milliseconds(20))
             : absl::Milliseconds(20);
  for (auto& c : channels_) {
    while (!c->WaitIdle(slice)) {
      if (report) {
        const absl::Time now = absl::Now();
        if (now - last_progress_ >= options_.progress_interval) ReportProgress(now);
      }
      if (cancelled_.load(std::memory_order_relaxed)) {
        // At a frame boundary (Failure::Stop), so RollBack() can say why.
        failure_.Stop(absl::CancelledError("migration cancelled by the source"));
      }
      // A live round is cut at the timeout (unless kForce: convergence.h).
      if (!final) failure_.Stop(convergence_.DuringRound(round, absl::Now() - start_));
      if (final && pause_.Over()) {
        failure_.Set(
            pause_.Check(absl::DeadlineExceededError("the final round was still going out")));
      }
    }
  }
  LIVEMIG_RETURN_IF_ERROR(failure_.Get());
  return CheckContinue();
}

void Migration::ReportProgress(absl::Time now) {
  last_progress_ = now;
  const uint64_t sent = counters_.raw_pages.load(std::memory_order_relaxed) +
                        counters_.zero_pages.load(std::memory_order_relaxed);
  // Channels count a batch once it is written; the round's own pages only.
  progress_.round_pages_sent =
      std::min(sent - progress_pages_before_, progress_.round_pages);
  const uint64_t transferred = BytesWritten();
  progress_.round_bytes_per_s =
      (transferred - progress_.transferred) /
      std::max(absl::ToDoubleSeconds(now - round_start_), 1e-6);
  MigrationProgress report = progress_;
  report.transferred = transferred;
  report.elapsed_ms = Ms(now - start_);
  options_.on_progress(report);
}

absl::StatusOr<absl::Duration> Migration::ReadRoundAck(uint32_t round) {
  proto::Ack ack;
  absl::StatusOr<wire::IncomingFrame> frame = ReadBehindQueue(
      channels_, [&] { return convergence_.RoundWait(absl::Now() - start_, options_.io_timeout); },
      [&] { return convergence_.DuringRound(round, absl::Now() - start_).ok(); });
  const absl::Status read =
      frame.ok() ? ParseExpected(*frame, wire::FrameType::kAck, &ack) : frame.status();
  LIVEMIG_RETURN_IF_ERROR(CheckContinue());  // A Cancel() that cut the read.
  if (!read.ok()) LIVEMIG_RETURN_IF_ERROR(convergence_.DuringRound(round, absl::Now() - start_));
  LIVEMIG_RETURN_IF_ERROR(
      OnChannel(0, absl::StrCat("the acknowledgement of round ", round), read));
  if (ack.kind() != proto::ACK_ROUND || ack.round() != round) {
    return absl::DataLossError(absl::StrCat(
        "expected the acknowledgement of round ", round, ", got ",
        proto::AckKind_Name(ack.kind()), " for round ", ack.round()));
  }
  LIVEMIG_RETURN_IF_ERROR(AckRefusal(ack, absl::StrCat("round ", round)));
  // At most an hour: a larger value (a broken receiver) would wrap negative
  // and let the estimate fit any limit.
  constexpr uint64_t kMaxUs = uint64_t{3600} * 1000 * 1000;
  return absl::Microseconds(static_cast<int64_t>(std::min(ack.expected_completion_us(), kMaxUs)));
}

double Migration::ExpectedCompletionMs(absl::Duration receiver) const {
  // Completion and VERIFIED, HANDOVER and COMMITTED: two round trips.
  double ms = Ms(receiver + refresh_ + 2 * rtt_);
  if (options_.verify == SenderOptions::Verify::kFull) {
    // Re-hashing all memory costs about what the channels spent per page
    // (zero test, copy, hash), spread over the audit's threads.
    const uint64_t scanned = counters_.scanned_pages.load(std::memory_order_relaxed);
    const double ns = static_cast<double>(counters_.scan_ns.load(std::memory_order_relaxed));
    const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
    if (scanned > 0) {
      ms += ns / scanned * (stats_.total / kMigrationPageSize) / threads / 1e6;
    }
  }
  return ms;
}

void Migration::RecordTotals() {
  migration_internal::RecordTotals(Totals(), options_.compression, &stats_);
  stats_.total_time_ms = Ms(absl::Now() - start_);
}

absl::Status Migration::Run() {
  start_ = absl::Now();
  stats_.channels = options_.channels;
  stats_.verify = VerifyName(options_.verify);
  if (options_.channels == 0 || options_.batch_pages == 0 ||
      options_.batch_pages * uint64_t{kMigrationPageSize} > (64u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "channels (", options_.channels, ") must be >= 1 and batch_pages (",
        options_.batch_pages, ") between 1 and 16384"));
  }
  LIVEMIG_RETURN_IF_ERROR(migration_internal::CheckPacedRate(
      options_.max_bandwidth, options_.io_timeout, kMigrationPageSize, options_.channels));
  LIVEMIG_RETURN_IF_ERROR(CheckContinue());  // Cancelled before it began.
  LIVEMIG_RETURN_IF_ERROR(Setup());
  stats_.setup_time_ms = Ms(absl::Now() - start_);

  // Round 0: every page. Bits set before it are taken (and remembered for a
  // roll-back) so that round 1 sends only what changed during round 0.
  for (uint32_t round = 0;; ++round) {
    LIVEMIG_RETURN_IF_ERROR(CheckContinue());
    const absl::Time round_start = absl::Now();
    const ChannelTotals before = Totals();
    RoundStats rs;
    rs.round = round;
    rs.throttle_percent = convergence_.throttle();
    if (round == 0) {
      LIVEMIG_RETURN_IF_ERROR(harvest_.TakeAll(queue_));
      rs.dirty_pages = stats_.total / kMigrationPageSize;
    } else {
      LIVEMIG_ASSIGN_OR_RETURN(rs.dirty_pages, harvest_.Harvest(round, queue_));
    }
    stats_.dirty_sync_count = harvest_.syncs();
    round_start_ = last_progress_ = round_start;
    progress_.round = round;
    progress_.round_pages = rs.dirty_pages;
    progress_.transferred = before.bytes;  // ReportProgress's rate baseline.
    progress_.total = stats_.total;
    progress_pages_before_ = before.pages();
    LIVEMIG_RETURN_IF_ERROR(FinishRound(round, /*final=*/false));
    const absl::Time markers_sent = absl::Now();
    for (PageHashes& h : sent_) h.RefreshChunks();  // The completion does it again: timed.
    refresh_ = absl::Now() - markers_sent;
    LIVEMIG_ASSIGN_OR_RETURN(const absl::Duration receiver_completion,
                             ReadRoundAck(round));
    // The ack's turnaround less the receiver's round-end work also bounds the
    // round trip: a late first Hello (a destination still making its memory)
    // must not stay in every pause estimate.
    rtt_ = std::min(rtt_, std::max(absl::ZeroDuration(),
                                   absl::Now() - markers_sent - receiver_completion));
    const absl::Duration took = absl::Now() - round_start;
    rs.duration_ms = Ms(took);
    const ChannelTotals done = Totals() - before;
    rs.bytes = done.bytes;
    rs.zero_pages = done.zero_pages;
    const double seconds = std::max(absl::ToDoubleSeconds(took), 1e-6);
    LIVEMIG_ASSIGN_OR_RETURN(rs.dirtied_during_round, harvest_.Pending());

    RoundSample sample;
    // Bandwidth is what the link carried; zero pages cost almost nothing, so
    // they do not inflate it.
    sample.bytes_sent = rs.bytes;
    sample.seconds = seconds;
    sample.pending_bytes = migration_internal::PendingWireBytes(
        rs.dirtied_during_round, done, options_.compression.codec != wire::Codec::kNone);
    sample.device_state_bytes = vm_.DeviceStateSizeHint();
    sample.completion_ms = ExpectedCompletionMs(receiver_completion);
    sample.elapsed = absl::Now() - start_;
    const int throttle_before = convergence_.throttle();
    const Decision decision = convergence_.AfterRound(round, sample);
    rs.bandwidth_bytes_per_s = decision.estimate.bandwidth_bytes_per_s;
    rs.expected_downtime_ms = decision.estimate.total_ms();
    stats_.round_stats.push_back(rs);
    stats_.rounds = round + 1;
    stats_.expected_downtime_ms = rs.expected_downtime_ms;
    stats_.downtime_breakdown.expected_ms = rs.expected_downtime_ms;
    stats_.remaining = rs.dirtied_during_round * kMigrationPageSize + sample.device_state_bytes;
    stats_.dirty_pages_rate = rs.dirtied_during_round / seconds;
    stats_.pages_per_second = done.pages() / seconds;
    stats_.cpu_throttle_percentage = convergence_.throttle();
    RecordTotals();
    if (options_.on_round) options_.on_round(stats_);

    if (convergence_.throttle() != throttle_before) vm_.SetThrottle(convergence_.throttle());
    switch (decision.action) {
      case Decision::Action::kSwitchover:
        stats_.converged = decision.converged;
        return Switchover(round + 1);
      case Decision::Action::kFail:
        return decision.error;
      case Decision::Action::kContinue:
      case Decision::Action::kThrottle:
        break;
    }
  }
}

SourceAudit Migration::Audit() {
  const absl::Time start = absl::Now();
  SourceAudit audit = AuditSource(memory_, sent_);
  stats_.audit.ran = true;
  stats_.audit.ms = Ms(absl::Now() - start);
  stats_.audit.bytes = audit.bytes;
  stats_.audit.untracked_pages = audit.changed;
  stats_.audit.first_addrs.clear();
  for (const ChangedPage& p : audit.first) stats_.audit.first_addrs.push_back(p.guest_addr);
  return audit;
}

absl::Status Migration::Switchover(uint32_t round) {
  LIVEMIG_RETURN_IF_ERROR(CheckContinue());
  pause_time_ = absl::Now();
  LIVEMIG_RETURN_IF_ERROR(vm_.Pause());
  paused_ = true;
  pause_.Start(pause_time_, options_.max_pause);
  const uint64_t bytes_before = BytesWritten();
  RoundStats rs;
  rs.round = round;
  rs.final = true;
  rs.throttle_percent = convergence_.throttle();
  LIVEMIG_ASSIGN_OR_RETURN(rs.dirty_pages, harvest_.Harvest(round, queue_));
  stats_.dirty_sync_count = harvest_.syncs();
  LIVEMIG_RETURN_IF_ERROR(FinishRound(round, /*final=*/true));
  const absl::Time sent = absl::Now();
  stats_.downtime_breakdown.final_round_ms = Ms(sent - pause_time_);
  rs.duration_ms = Ms(sent - pause_time_);
  rs.bytes = BytesWritten() - bytes_before;
  rs.bandwidth_bytes_per_s = rs.bytes / std::max(absl::ToDoubleSeconds(sent - pause_time_), 1e-6);
  stats_.round_stats.push_back(rs);
  stats_.rounds = round + 1;

  // The workers are idle; the control channel is ours again.
  for (auto& c : channels_) c->Stop();
  Connection& control = channels_[0]->connection();
  if (options_.verify == SenderOptions::Verify::kFull) {
    // Memory is final now: a page that differs from what was sent was
    // written behind the tracker, and the destination would miss it.
    const SourceAudit audit = Audit();
    stats_.downtime_breakdown.verify_ms = stats_.audit.ms;
    if (audit.changed > 0) {
      return absl::DataLossError(absl::StrCat(
          "verify=full: ", DescribeChangedPages(audit),
          "; the destination would hold older versions of them"));
    }
  }
  const absl::Time verified = absl::Now();
  LIVEMIG_ASSIGN_OR_RETURN(std::vector<DeviceSection> sections, vm_.DeviceSections());
  LIVEMIG_RETURN_IF_ERROR(CheckDeviceSections(sections));
  for (const proto::DeviceState& device : DeviceStateFrames(std::move(sections))) {
    LIVEMIG_RETURN_IF_ERROR(pause_.Check(wire::WriteFrame(
        control, wire::FrameType::kDeviceState, device, pause_.Timeout(options_.io_timeout))));
  }
  const absl::Time device_done = absl::Now();
  stats_.downtime_breakdown.device_state_ms = Ms(device_done - verified);

  LIVEMIG_RETURN_IF_ERROR(pause_.Check(Complete(control)));
  LIVEMIG_RETURN_IF_ERROR(HandOver(control));
  const absl::Time done = absl::Now();
  stats_.downtime_breakdown.completion_ms = Ms(done - device_done);
  stats_.downtime_ms = Ms(done - pause_time_);
  RecordTotals();
  stats_.remaining = 0;
  stats_.mbps = stats_.transferred * 8.0 / 1e6 /
                std::max(absl::ToDoubleSeconds(done - start_), 1e-6);
  stats_.status = "completed";
  if (convergence_.throttle() != 0) vm_.SetThrottle(0);
  stats_.cpu_throttle_percentage = convergence_.throttle();
  // The destination owns the guest and the source stays paused: its memory
  // is still final, so the audit costs no downtime.
  if (options_.verify == SenderOptions::Verify::kSent) {
    (void)Audit();
    stats_.total_time_ms = Ms(absl::Now() - start_);
  }
  if (options_.on_round) options_.on_round(stats_);  // The final round.
  return absl::OkStatus();
}

absl::Status Migration::Complete(Connection& control) {
  proto::Completion completion;
  if (options_.verify != SenderOptions::Verify::kOff) AddDigests(sent_, &completion);
  completion.set_total_pages_sent(counters_.raw_pages.load() + counters_.zero_pages.load());
  completion.set_rounds(stats_.rounds);
  LIVEMIG_RETURN_IF_ERROR(wire::WriteFrame(control, wire::FrameType::kCompletion,
                                           completion, pause_.Timeout(options_.io_timeout)));
  for (int queries = 0;; ++queries) {
    // The first answer comes once the final round, which may still be in
    // the sockets of a slow link, was read: waited for while it drains.
    LIVEMIG_ASSIGN_OR_RETURN(
        wire::IncomingFrame frame,
        ReadBehindQueue(channels_, [&] { return pause_.Timeout(options_.io_timeout); },
                        [&] { return !pause_.Over(); }));
    if (frame.header.type == wire::FrameType::kPageHashQuery && queries == kMaxHashQueries) {
      return absl::DataLossError(absl::StrCat("the destination sent more than ",
                                              kMaxHashQueries, " PAGE_HASH_QUERY frames"));
    }
    if (frame.header.type != wire::FrameType::kPageHashQuery) {
      proto::Ack ack;
      LIVEMIG_RETURN_IF_ERROR(ParseExpected(frame, wire::FrameType::kAck, &ack));
      if (ack.kind() != proto::ACK_VERIFIED) {
        return absl::DataLossError(absl::StrCat(
            "expected the verified acknowledgement, got ", proto::AckKind_Name(ack.kind())));
      }
      return AckRefusal(ack, "the migration's verification");
    }
    proto::PageHashQuery query;
    LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &query));
    LIVEMIG_ASSIGN_OR_RETURN(proto::PageHashList list, AnswerPageHashQuery(query, sent_));
    LIVEMIG_RETURN_IF_ERROR(wire::WriteFrame(control, wire::FrameType::kPageHashList, list,
                                             pause_.Timeout(options_.io_timeout)));
  }
}

absl::Status Migration::HandOver(Connection& control) {
  proto::Ack handover;
  handover.set_kind(proto::ACK_HANDOVER);
  // The point of no return: Cancel() stops reaching this attempt.
  publish_(nullptr, true);
  // A failed write never delivered the whole frame, and the destination
  // commits only on a whole, checksummed one: still safe to roll back.
  LIVEMIG_RETURN_IF_ERROR(pause_.Check(wire::WriteFrame(
      control, wire::FrameType::kAck, handover, pause_.Timeout(options_.io_timeout))));
  // The commit point: from here the destination may own the guest.
  handed_over_ = true;
  proto::Ack answer;
  const absl::Status read =
      ReadExpected(control, wire::FrameType::kAck, &answer, options_.io_timeout);
  if (read.ok() && answer.kind() == proto::ACK_COMMITTED) {
    if (answer.status_code() == 0) return absl::OkStatus();
    // The destination could not publish and discarded its copy: it said so,
    // so resuming here is safe.
    handed_over_ = false;
    return absl::Status(
        StatusCodeFromWire(answer.status_code(), absl::StatusCode::kInternal),
        absl::StrCat("destination could not commit: ", PeerText(answer.message())));
  }
  return absl::UnknownError(absl::StrCat(
      "handover in doubt: the destination was told to take the guest over but "
      "did not confirm (",
      read.ok() ? absl::StrCat("answered with an acknowledgement of kind ",
                               proto::AckKind_Name(answer.kind()))
                : read.ToString(),
      "); the guest stays paused: check the destination before resuming it"));
}

absl::Status Migration::PeerReason(absl::Status error) {
  // Unavailable is what a connection the peer closed reports; any other
  // error is this side's own (and must not wait for the peer).
  if (handed_over_ || channels_.empty() || !absl::IsUnavailable(error)) return error;
  for (auto& c : channels_) c->Stop();  // Nobody reads channel 0 now.
  const std::optional<proto::Abort> abort = FindAbort(
      channels_[0]->connection().ReadLeftover(wire::kMaxMessageSize, absl::Milliseconds(200)));
  return abort.has_value() ? StatusFromAbort(*abort) : error;
}

void Migration::RecordFailure() {
  RecordTotals();
  if (paused_) stats_.downtime_ms = Ms(std::min(resumed_, absl::Now()) - pause_time_);
}

absl::Status Migration::RollBack(absl::Status error) {
  publish_(nullptr, false);
  // In doubt (handed_over_): the destination may be running the guest, so no Abort (it may
  // have committed) and no Resume(). Every harvested bit is given back either way, so
  // resuming the source later, and migrating again, loses nothing. The guest resumes first:
  // the channels may take their frames' time, the peer's reason 200 ms, the Abort 1 s.
  harvest_.StopSources();  // While a paused guest is still paused.
  harvest_.GiveBack();
  if (paused_ && !handed_over_) {
    resume_error_ = vm_.Resume();
    if (resume_error_.ok()) resumed_ = absl::Now();
  }
  if (convergence_.throttle() != 0) vm_.SetThrottle(0);
  error = PeerReason(std::move(error));
  if (cancelled_.load(std::memory_order_relaxed) && !handed_over_) {
    // The shutdown Cancel() caused shows up as whatever I/O it cut.
    error = absl::CancelledError("migration cancelled by the source");
  }
  for (auto& c : channels_) c->Stop();
  if (!handed_over_ && !channels_.empty()) {
    // Workers joined: channel 0 is free. Best effort (not after a Set() or a torn write).
    SendAbortBestEffort(channels_[0]->connection(), error, proto::ROLE_SOURCE);
  }
  failure_.Close(error);  // Also the connections a Failure::Stop() interrupted.
  if (!resume_error_.ok()) {
    // Whoever resumes it must know: the error says so, and so does the stat.
    error = absl::Status(error.code(),
                         absl::StrCat(error.message(), "; the guest could not be resumed and "
                                                       "stays paused: ",
                                      resume_error_.ToString()));
  }
  return error;
}

}  // namespace

const char* VerifyName(SenderOptions::Verify verify) {
  switch (verify) {
    case SenderOptions::Verify::kSent:
      return "sent";
    case SenderOptions::Verify::kFull:
      return "full";
    case SenderOptions::Verify::kOff:
      return "off";
  }
  return "?";
}

uint64_t LowestMaxBandwidth(absl::Duration io_timeout, uint32_t channels) {
  return migration_internal::LowestPacedRate(io_timeout, kMigrationPageSize, channels);
}

Sender::Sender(SenderOptions options) : options_(std::move(options)) {}

bool Sender::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  if (past_no_return_) return false;
  cancelled_.store(true, std::memory_order_relaxed);
  if (active_ != nullptr) active_->Stop(absl::CancelledError("migration cancelled by the source"));
  return true;
}

absl::StatusOr<MigrationStats> Sender::Migrate(const GuestMemory<AtomicBitmap>& memory,
                                               VmControl& vm) {
  last_stats_ = MigrationStats();
  // A Cancel() from before this call ends this attempt at once; cleared at its end.
  struct ClearCancel {
    Sender& sender;
    ~ClearCancel() {
      std::lock_guard<std::mutex> lock(sender.mu_);
      sender.cancelled_.store(false, std::memory_order_relaxed);
      sender.past_no_return_ = false;
    }
  } clear_cancel{*this};
  Migration migration(options_, memory, vm, cancelled_, last_stats_,
                      [this](Failure* failure, bool no_return) {
                        std::lock_guard<std::mutex> lock(mu_);
                        active_ = failure;
                        if (no_return) past_no_return_ = true;
                        if (failure != nullptr &&  // A Cancel() from before it could be.
                            cancelled_.load(std::memory_order_relaxed)) {
                          failure->Stop(absl::CancelledError("migration cancelled by the source"));
                        }
                      });
  absl::Status status = migration.Run();
  if (status.ok()) return last_stats_;
  status = migration.RollBack(std::move(status));
  migration.RecordFailure();
  // This source's Cancel() (RollBack made the error say so), not a
  // destination's Abort or answer with the code CANCELLED.
  const bool cancelled = status.code() == absl::StatusCode::kCancelled &&
                         cancelled_.load(std::memory_order_relaxed);
  last_stats_.status = migration.handed_over() ? "in-doubt" : cancelled ? "cancelled" : "failed";
  last_stats_.guest_paused = migration.left_paused();
  return status;
}

}  // namespace livemig
