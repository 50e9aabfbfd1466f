#include "migration/receiver.h"

#include <sys/uio.h>

#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "migration/device_state.h"
#include "migration/protocol.h"
#include "migration/internal/channel_acceptor.h"
#include "migration/internal/batch_runs.h"
#include "migration/internal/compressed_batch.h"
#include "migration/internal/file_landing.h"
#include "migration/internal/round_barrier.h"
#include "migration/internal/receive_session.h"
#include "migration/internal/region_paths.h"
#include "migration/internal/round_pages.h"
#include "migration/internal/space_claim.h"
#include "migration/internal/torn_pages.h"
#include "migration/internal/writeback_thread.h"
#include "migration/page_hashes.h"
#include "migration/region_store.h"
#include "migration/verification.h"
#include "migration/wire/frame_io.h"

namespace livemig {
namespace {

using migration_internal::RoundBarrier;
using migration_internal::WritebackThread;

// Received raw pages between two writeback kicks (16 MiB of 4 KiB pages).
constexpr uint64_t kWritebackPages = 4096;

// The answer to the source's HANDOVER: COMMITTED with `status` (OK: this
// destination owns the guest now; else nothing was committed).
proto::Ack CommittedAnswer(const absl::Status& status) {
  proto::Ack answer;
  answer.set_kind(proto::ACK_COMMITTED);
  answer.set_status_code(static_cast<int32_t>(status.code()));
  answer.set_message(std::string(status.message()));
  return answer;
}

}  // namespace

void ReceiveSession::Fail(const absl::Status& status) {
  RoundBarrier* barrier;  // Lives as long as the session once made.
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return;
    failure_ = status;
    barrier = barrier_.get();
  }
  // Outside mu_: the barrier's round end takes mu_ under its own lock.
  if (barrier != nullptr) barrier->Break();
  SendAbort(status);  // Also shuts every channel down, unblocking readers.
}

void ReceiveSession::SendAbort(const absl::Status& status) {
  if (channels_.empty() || abort_sent_.exchange(true)) return;
  // Best effort: the peer may be gone already. A round acknowledgement stuck
  // on a stalled source holds the lock: then the channels are shut first
  // (the Abort is lost, but nothing waits for the source's io_timeout).
  {
    std::unique_lock<std::mutex> lock(control_write_mu_, std::try_to_lock);
    if (!lock.owns_lock()) {
      for (auto& c : channels_) c->Shutdown();
      lock.lock();
    }
    SendAbortBestEffort(*channels_[0], status, proto::ROLE_DESTINATION);
  }
  for (auto& c : channels_) c->Shutdown();
}

absl::Status ReceiveSession::WriteControl(wire::FrameType type,
                                          const google::protobuf::MessageLite& message) {
  std::lock_guard<std::mutex> lock(control_write_mu_);
  return wire::WriteFrame(*channels_[0], type, message, options_.io_timeout);
}

void ReceiveSession::CancelByDestination() {
  std::lock_guard<std::mutex> lock(handover_mu_);
  if (handed_over_) return;  // Too late: it stops the next migration.
  if (verified_sent_) {
    cancel_at_handover_ = true;  // Refused at the HANDOVER (Finish).
    return;
  }
  Fail(absl::CancelledError("migration cancelled by the destination"));
}

absl::Status ReceiveSession::AcceptChannels() {
  migration_internal::AcceptOptions accept;
  accept.accept_timeout = options_.accept_timeout;
  accept.handshake_timeout = options_.handshake_timeout;
  accept.tls = options_.tls.get();
  accept.group_timeout = options_.io_timeout;
  accept.io_timeout = options_.io_timeout;
  accept.max_channels = options_.max_channels;
  accept.max_pending = options_.max_pending_handshakes;
  accept.accept_compression = options_.accept_compression;
  absl::StatusOr<migration_internal::AcceptedMigration> got =
      migration_internal::AcceptMigration(*receiver_.listener_, accept, receiver_.cancelled_);
  if (absl::IsCancelled(got.status())) return absl::CancelledError(kCancelledWhileWaiting);
  LIVEMIG_ASSIGN_OR_RETURN(migration_internal::AcceptedMigration accepted, std::move(got));
  migration_id_ = std::move(accepted.migration_id);
  features_ = accepted.features;
  compression_ = accepted.compression;
  channels_ = std::move(accepted.channels);
  // Every other source is told at once that this destination is busy.
  refuser_.emplace(*receiver_.listener_, accept);
  session_deadline_ = absl::Now() + options_.session_timeout;
  {
    std::lock_guard<std::mutex> lock(receiver_.mu_);
    for (auto& c : channels_) receiver_.live_.push_back(c.get());
    receiver_.session_ = this;
  }
  return CheckCancelled();  // A Cancel() from before the channels were registered.
}

absl::Status ReceiveSession::ApplyBatch(Connection& conn, wire::IncomingFrame& frame,
                                        uint32_t channel_round,
                                        migration_internal::FileLanding& landing,
                                        wire::BatchDecompressor& decompressor) {
  proto::PageBatch batch;
  if (!batch.ParseFromString(frame.message)) {
    return absl::DataLossError("PAGE_BATCH message does not parse");
  }
  std::vector<StoredRegion>& regions = store_->regions();
  if (batch.region_index() >= regions.size()) {
    return absl::OutOfRangeError(absl::StrCat(
        "PAGE_BATCH names region ", batch.region_index(), "; the table has ",
        regions.size()));
  }
  MmapRegion<NoBitmap>& region = regions[batch.region_index()].region;
  LIVEMIG_ASSIGN_OR_RETURN(
      migration_internal::BatchTarget target,
      migration_internal::TargetOf(batch, channel_round, region.as_ptr(),
                                   region.size() / kMigrationPageSize,
                                   regions[batch.region_index()].info.guest_addr(),
                                   *round_pages_));
  const uint64_t total = target.pages;
  const std::vector<iovec>& destination = target.destination;
  PageHashes& landed = landed_[batch.region_index()];
  const bool compressed = migration_internal::IsCompressedEncoding(batch.encoding());
  LIVEMIG_RETURN_IF_ERROR(
      migration_internal::CheckBatchFrame(batch, frame.header, total, features_));
  if (batch.encoding() != proto::ENCODING_ZERO) {
    // Straight from the socket into the mapping (the message, checksummed,
    // was verified before any byte landed) — or, into fresh pages of a file
    // the store created, through the file (file_landing.h: no clearing of
    // every page first); then every page is hashed where it landed (through
    // the file: in the buffer pwrite(2) copied it from) and must match the
    // hash the source sent, or the migration fails: the bytes are garbage.
    // Compressed: the same, once the pages are decompressed in place (into
    // the mapping: file landing is for RAW batches only). In round 0 a
    // file's space may not be claimed yet (tmpfs, space_claim.h): the runs
    // are claimed first, so a full filesystem is an error, not SIGBUS.
    const StoredRegion& stored = regions[batch.region_index()];
    const FileOffset* file = stored.landing_file();
    if (compressed && channel_round == 0 && stored.lands_through_file && file) {
      for (const proto::PageRun& run : batch.runs()) {
        LIVEMIG_RETURN_IF_ERROR(migration_internal::ClaimRange(
            file->fd(), file->start() + run.first_page() * kMigrationPageSize,
            run.count() * kMigrationPageSize, static_cast<int>(batch.region_index()),
            stored.provided_file.has_value() ? stored.provided_path : stored.staging_path));
      }
    }
    // Through the file, each page was hashed on its way (landing.hashes()).
    bool file_landed = false;
    if (compressed) {
      LIVEMIG_RETURN_IF_ERROR(migration_internal::LandCompressedBatch(
          conn, frame, batch, total, destination, compression_, decompressor,
          options_.io_timeout));
      compressed_batches_.fetch_add(1, std::memory_order_relaxed);
    } else if (channel_round == 0 && stored.lands_through_file && file) {
      LIVEMIG_RETURN_IF_ERROR(landing.Land(conn, frame, batch, *file,
                                           file_writes_[batch.region_index()],
                                           options_.io_timeout,
                                           absl::StrCat("region ", batch.region_index())));
      file_pages_.fetch_add(total, std::memory_order_relaxed);
      file_landed = true;
    } else {
      LIVEMIG_RETURN_IF_ERROR(wire::ReadPayloadAndVerify(
          conn, frame, absl::MakeConstSpan(destination), options_.io_timeout));
    }
    int next = 0;
    for (const proto::PageRun& run : batch.runs()) {
      uint8_t* data = region.as_ptr() + run.first_page() * kMigrationPageSize;
      if (options_.test_after_landing) {
        options_.test_after_landing(batch.region_index(), run.first_page(), data,
                                    run.count() * kMigrationPageSize);
      }
      torn_->Landing(batch.region_index(), run.first_page(), run.count());
      for (uint64_t i = 0; i < run.count(); ++i, ++next) {
        const uint64_t hash =
            file_landed ? landing.hashes()[next] : HashPage(data + i * kMigrationPageSize);
        const uint64_t page = run.first_page() + i;
        if (hash != batch.page_hashes(next)) {
          const uint64_t guest =
              regions[batch.region_index()].info.guest_addr() + page * kMigrationPageSize;
          // Torn (protocol.h): kept, and it must land whole in a later round.
          // Compressed bytes come from the source's stable copy: never torn.
          if ((features_ & proto::FEATURE_TORN_PAGES) == 0 || compressed) {
            return absl::DataLossError(migration_internal::NotLandedAsSent(
                batch.region_index(), page, guest, channel_round, hash, batch.page_hashes(next)));
          }
          torn_->Tore(batch.region_index(), page, channel_round, hash, batch.page_hashes(next));
        }
        landed.Set(page, hash);
      }
    }
    // Durable: keep the disk busy while pages arrive, so the flush in the
    // source's downtime finds little left: every kWritebackPages raw pages,
    // the thread that crosses the mark starts writeback (asynchronous).
    // Otherwise the disk is left alone until the round ends: writeback of
    // pages still being received makes the readers wait for the disk.
    const uint64_t before = raw_pages_.fetch_add(total, std::memory_order_relaxed);
    if (options_.durable && before / kWritebackPages != (before + total) / kWritebackPages) {
      writeback_->Kick();
    }
    return absl::OkStatus();
  }
  // ZERO: `batch` is parsed already, only the checksum is left to check.
  LIVEMIG_RETURN_IF_ERROR(
      wire::ReadPayloadAndVerify(conn, frame, {}, options_.io_timeout));
  // The mappings start zeroed and round 0 carries every page once
  // (round_pages_), so round 0's ZERO pages are left alone — a page that
  // landed as ZERO may be a hole of a file whose space is not claimed yet:
  // writing it through the mapping could be SIGBUS; later rounds clear every
  // page. Memory the VMM provided holds whatever it held (unless it vouched
  // it zeroed): cleared like a later round's.
  if (channel_round > 0 || !regions[batch.region_index()].starts_zeroed) {
    for (const iovec& v : destination) std::memset(v.iov_base, 0, v.iov_len);
  }
  for (const proto::PageRun& run : batch.runs()) {
    for (uint64_t p = run.first_page(); p < run.first_page() + run.count(); ++p) {
      landed.Set(p, ZeroPageHash());
    }
    torn_->Landing(batch.region_index(), run.first_page(), run.count());
  }
  zero_pages_.fetch_add(total, std::memory_order_relaxed);
  return absl::OkStatus();
}

bool ReceiveSession::SourceGone(const absl::Status& status) {
  return absl::IsUnavailable(status) ||
         (absl::IsDataLoss(status) && absl::StrContains(status.message(), "closed mid-read"));
}

void ReceiveSession::AwaitSourceReason() {
  // Progress, not a fixed grace: with a fixed 500 ms, a 1 MB/s link cut the
  // wait while channel 0's last batch was still arriving, and the
  // destination reported the other channel's close instead of the reason.
  const absl::Time limit = absl::Now() + ReadTimeout();
  uint64_t seen = channels_[0]->bytes_read();
  absl::Time quiet_until = absl::Now() + kAbortQuiet;
  while (!failed()) {
    const absl::Time now = absl::Now();
    if (now >= quiet_until || now >= limit) return;
    absl::SleepFor(absl::Milliseconds(5));
    const uint64_t read = channels_[0]->bytes_read();
    if (read != seen) {
      seen = read;
      quiet_until = absl::Now() + kAbortQuiet;
    }
  }
}

absl::Status ReceiveSession::Located(absl::Status status, size_t channel,
                                     absl::string_view what) const {
  if (status.ok() || IsFromAbort(status) || absl::StartsWith(status.message(), "channel ")) {
    return status;
  }
  return absl::Status(status.code(), absl::StrCat("channel ", channel, " (",
                                                  channels_[channel]->peer(), "), ", what, ": ",
                                                  status.message()));
}

absl::StatusOr<wire::IncomingFrame> ReceiveSession::ReadSessionFrame(Connection& conn) {
  LIVEMIG_RETURN_IF_ERROR(CheckSessionDeadline());
  absl::StatusOr<wire::IncomingFrame> frame = wire::ReadFrameStart(conn, ReadTimeout());
  if (!frame.ok()) LIVEMIG_RETURN_IF_ERROR(CheckSessionDeadline());
  return frame;
}

absl::Status ReceiveSession::ReadControl(wire::FrameType type, google::protobuf::MessageLite* out,
                                         absl::string_view what) {
  // Bounded by the session too: after the rounds a source could otherwise
  // drip device-state sections or never answer, one io timeout at a time.
  absl::StatusOr<wire::IncomingFrame> frame = ReadSessionFrame(*channels_[0]);
  return Located(frame.ok() ? ParseExpected(*frame, type, out) : frame.status(), 0, what);
}

absl::Status ReceiveSession::ReadChannel(size_t index) {
  uint32_t round = 0;
  absl::Status status = ReadRounds(index, round);
  return Located(std::move(status), index, absl::StrCat("round ", round));
}

absl::Status ReceiveSession::ReadRounds(size_t index, uint32_t& round) {
  Connection& conn = *channels_[index];
  migration_internal::FileLanding landing;
  wire::BatchDecompressor decompressor;  // This channel's (compressed batches).
  auto at_boundary = [&] {
    if (index == 0) control_boundary_.store(conn.bytes_read(), std::memory_order_relaxed);
  };
  while (true) {
    at_boundary();
    LIVEMIG_RETURN_IF_ERROR(CheckCancelled());
    LIVEMIG_ASSIGN_OR_RETURN(wire::IncomingFrame frame, ReadSessionFrame(conn));
    switch (frame.header.type) {
      case wire::FrameType::kPageBatch:
        LIVEMIG_RETURN_IF_ERROR(ApplyBatch(conn, frame, round, landing, decompressor));
        decompress_ns_.fetch_add(decompressor.TakeBusyNs(), std::memory_order_relaxed);
        break;
      case wire::FrameType::kIterationMarker: {
        proto::IterationMarker marker;
        LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &marker));
        if (marker.phase() != proto::PHASE_END) {
          return absl::DataLossError(absl::StrCat(
              "channel ", index, ": ITERATION_MARKER with phase ",
              proto::Phase_Name(marker.phase()), "; only PHASE_END markers are sent"));
        }
        if (marker.round() != round) {
          return absl::DataLossError(absl::StrCat(
              "channel ", index, ": end of round ", marker.round(),
              " while in round ", round));
        }
        at_boundary();  // While it waits for the other channels.
        LIVEMIG_RETURN_IF_ERROR(
            barrier_->Arrive(round, marker.final(), options_.io_timeout));
        {
          // Set by EndOfRound, which ran before any channel left the barrier.
          std::lock_guard<std::mutex> lock(mu_);
          LIVEMIG_RETURN_IF_ERROR(sync_error_);
        }
        if (index == 0) rounds_.store(round + 1, std::memory_order_relaxed);
        if (marker.final()) return absl::OkStatus();
        if (index == 0) LIVEMIG_RETURN_IF_ERROR(SendRoundAck(round));
        ++round;
        break;
      }
      case wire::FrameType::kAbort: {
        proto::Abort abort;
        LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &abort));
        return StatusFromAbort(abort);
      }
      default:
        return absl::DataLossError(absl::StrCat(
            "channel ", index, ": unexpected ",
            wire::FrameTypeName(frame.header.type), " frame in round ", round));
    }
  }
}

void ReceiveSession::EndOfRound(uint32_t round, bool final) {
  if (round == 0) {
    // Round 0 sends every page: one missing would stay as the destination
    // made it, and only digests could tell (a source that lost it has no
    // hash of it either). A channel that finds this failed stops at the
    // barrier (RoundError).
    std::vector<uint64_t> guest_addrs;
    for (const StoredRegion& r : store_->regions()) guest_addrs.push_back(r.info.guest_addr());
    absl::Status every_page = round_pages_->Complete(0, guest_addrs);
    // Round 0 landed through the files: only its zero pages are holes now.
    // Claimed before any later page is written through a mapping.
    absl::Status claimed = every_page.ok() ? store_->ClaimDeferredSpace() : absl::OkStatus();
    std::lock_guard<std::mutex> lock(mu_);
    if (sync_error_.ok() && !every_page.ok()) sync_error_ = every_page;
    if (sync_error_.ok() && !claimed.ok()) sync_error_ = claimed;
  }
  if (final) {
    // Every channel's final END is in: a page still torn was never sent again.
    absl::Status torn = torn_->Unresolved();
    std::lock_guard<std::mutex> lock(mu_);
    if (sync_error_.ok() && !torn.ok()) sync_error_ = torn;
  }
  if (!final) round_pages_->NextRound();  // Every reader waits in the barrier.
  // Timed from here: the claim above happens once, never in the pause.
  const absl::Time start = absl::Now();
  for (PageHashes& h : landed_) h.RefreshChunks();
  if (options_.durable) {
    // The round's data goes to disk before the round is acknowledged, so
    // the flush in the pause only has the final round to write, and how
    // long this took is the measured estimate of that flush. A writeback
    // error is reported once per file: kept here, it fails the migration
    // (the final Flush() would no longer see it).
    absl::Status synced = store_->SyncData();
    std::lock_guard<std::mutex> lock(mu_);
    if (sync_error_.ok() && !synced.ok()) sync_error_ = synced;
  } else if (!final) {
    writeback_->Kick();  // Asynchronous: nothing waits for the disk.
  }
  // A round about this size is what completion will have to digest (and,
  // durable, flush).
  expected_completion_us_.store(
      static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - start)),
      std::memory_order_relaxed);
}

absl::Status ReceiveSession::SendRoundAck(uint32_t round) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    LIVEMIG_RETURN_IF_ERROR(sync_error_);
  }
  proto::Ack ack;
  ack.set_kind(proto::ACK_ROUND);
  ack.set_round(round);
  ack.set_expected_completion_us(expected_completion_us_.load(std::memory_order_relaxed));
  return WriteControl(wire::FrameType::kAck, ack);
}

absl::Status ReceiveSession::Verify(const proto::Completion& completion) {
  LIVEMIG_ASSIGN_OR_RETURN(std::vector<ChunkMismatch> differ,
                           CompareDigests(completion, landed_));
  if (differ.empty()) return absl::OkStatus();
  // Ask for the first differing chunk's page hashes so the error can name
  // the pages.
  LIVEMIG_RETURN_IF_ERROR(WriteControl(wire::FrameType::kPageHashQuery, QueryFor(differ[0])));
  proto::PageHashList list;
  LIVEMIG_RETURN_IF_ERROR(
      ReadControl(wire::FrameType::kPageHashList, &list, "the source's page hashes"));
  return ExplainMismatch(differ, list, landed_[differ[0].region],
                         store_->regions()[differ[0].region].info);
}

absl::StatusOr<ReceivedMigration> ReceiveSession::Finish() {
  DeviceStateAssembler device;
  while (!device.complete()) {
    proto::DeviceState section;
    LIVEMIG_RETURN_IF_ERROR(
        ReadControl(wire::FrameType::kDeviceState, &section, "the device state"));
    LIVEMIG_RETURN_IF_ERROR(device.Add(std::move(section)));
  }
  proto::Completion completion;
  LIVEMIG_RETURN_IF_ERROR(
      ReadControl(wire::FrameType::kCompletion, &completion, "the completion"));
  // Cheap, and checked whatever the source verifies: a lost batch shows.
  const uint64_t received = raw_pages_.load() + zero_pages_.load();
  if (completion.total_pages_sent() != received) {
    return absl::DataLossError(absl::StrCat("the source sent ", completion.total_pages_sent(),
                                            " pages; ", received, " arrived"));
  }
  const bool verified = completion.digests_size() > 0;
  if (verified) LIVEMIG_RETURN_IF_ERROR(Verify(completion));
  if (options_.durable) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      LIVEMIG_RETURN_IF_ERROR(sync_error_);
    }
    LIVEMIG_RETURN_IF_ERROR(store_->Flush());
    Step("flushed");
  }
  // Ready for the source's decision; durable too if asked.
  proto::Ack ack;
  ack.set_kind(proto::ACK_VERIFIED);
  ack.set_round(rounds_.load());
  // The session timeout is checked here for the last time: once VERIFIED
  // is out, the source may send its HANDOVER at any moment, and a receiver
  // that stopped reading then would leave it in doubt, its guest paused.
  LIVEMIG_RETURN_IF_ERROR(CheckSessionDeadline());
  {
    // A cancel from here on waits for the HANDOVER (see handover_mu_).
    std::lock_guard<std::mutex> lock(handover_mu_);
    if (absl::Status f = failure(); !f.ok()) return f;
    verified_sent_ = true;
  }
  LIVEMIG_RETURN_IF_ERROR(WriteControl(wire::FrameType::kAck, ack));
  Step("verified");
  // The commit point is the source's: without its handover (a cut, a
  // timeout, an Abort) the staging files are discarded, and the source, which
  // has not given the guest up, resumes it.
  proto::Ack handover;
  // One frame the source sends at once: io_timeout, not the session's.
  LIVEMIG_RETURN_IF_ERROR(Located(
      ReadExpected(*channels_[0], wire::FrameType::kAck, &handover, options_.io_timeout), 0,
      "the handover"));
  if (handover.kind() != proto::ACK_HANDOVER) {
    return absl::DataLossError(absl::StrCat(
        "expected the source's handover, got an acknowledgement of kind ",
        proto::AckKind_Name(handover.kind())));
  }
  {
    std::lock_guard<std::mutex> lock(handover_mu_);
    if (absl::Status f = failure(); !f.ok()) return f;  // CancelByDestination() was first.
    if (cancel_at_handover_) {
      // Cancelled after VERIFIED: the source hears it in the answer to its
      // HANDOVER, which says nothing was committed, and resumes.
      const absl::Status cancelled =
          absl::CancelledError("migration cancelled by the destination");
      (void)WriteControl(wire::FrameType::kAck, CommittedAnswer(cancelled));
      abort_sent_.store(true);  // The answer said it: no Abort after it.
      return cancelled;
    }
    handed_over_ = true;  // From here a destination cancel waits for the next migration.
  }
  Step("handover");
  absl::Status committed = options_.before_commit ? options_.before_commit() : absl::OkStatus();
  if (committed.ok()) committed = store_->Commit();
  // Once committed the destination owns the guest even if this answer is
  // lost: the source then reports the handover in doubt and stays paused.
  // If publishing failed, the answer tells the source to resume.
  (void)WriteControl(wire::FrameType::kAck, CommittedAnswer(committed));
  // The source is done: its next migration waits in the backlog for the
  // next ReceiveOne() (the flush below may take seconds), not refused.
  refuser_.reset();
  store_->ReleaseReplaced();  // Files the commit replaced: freed after the pause.
  LIVEMIG_RETURN_IF_ERROR(committed);
  Step("committed");
  if (!store_->flushed()) {
    // The source has let go; the disk is ours to wait for now.
    absl::Status flushed = store_->Flush();
    if (!flushed.ok()) {
      return absl::Status(flushed.code(),
                          absl::StrCat("committed, but the rebuilt files are not on disk: ",
                                       flushed.message()));
    }
    Step("flushed");
  }
  std::vector<RegionDescription> infos;
  std::vector<std::string> files;
  for (const StoredRegion& r : store_->regions()) {
    infos.push_back(DescribeRegion(r.info, static_cast<uint32_t>(store_->regions().size())));
    files.push_back(r.final_path);
  }
  std::vector<uint64_t> roots;
  for (const PageHashes& h : landed_) roots.push_back(h.Root());
  LIVEMIG_ASSIGN_OR_RETURN(GuestMemory<NoBitmap> memory, store_->TakeGuestMemory());
  ReceivedMigration out(std::move(memory));
  out.regions = std::move(infos);
  out.files = std::move(files);
  out.device_sections = device.Take();
  for (const DeviceSection& s : out.device_sections) {
    if (s.id == "vmm") out.device_state = s.bytes;
  }
  out.digests = std::move(roots);
  out.verified = verified;
  return out;
}

absl::StatusOr<ReceivedMigration> ReceiveSession::Run() {
  absl::Status status = [&]() -> absl::Status {
    LIVEMIG_RETURN_IF_ERROR(AcceptChannels());
    proto::RegionTable table;
    LIVEMIG_RETURN_IF_ERROR(
        ReadControl(wire::FrameType::kRegionTable, &table, "the region table"));
    if (options_.anonymous_regions_as_files) {
      for (proto::RegionInfo& info : *table.mutable_regions()) {
        if (info.backing() != proto::BACKING_ANONYMOUS) continue;
        info.set_backing(proto::BACKING_FILE);
        info.set_file_path(DefaultRegionFileName(info.index()));
        info.set_file_offset(0);
      }
    }
    RegionStoreOptions store_options;
    store_options.root_dir = options_.root_dir;
    if (options_.max_total_bytes != 0) {
      store_options.max_total_bytes = options_.max_total_bytes;
    } else {
      store_options.max_total_bytes = static_cast<uint64_t>(::sysconf(_SC_PHYS_PAGES)) *
                                      static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
      store_options.max_total_bytes_why = " (this machine's memory)";
    }
    store_options.max_regions = options_.max_regions;
    store_options.max_path_components = options_.max_path_components;
    store_options.reserved_paths = options_.reserved_paths;
    store_options.provide = options_.region_memory;
    store_options.prealloc = options_.prealloc;
    LIVEMIG_ASSIGN_OR_RETURN(RegionStore store,
                             RegionStore::Create(table, kMigrationPageSize, store_options));
    store_.emplace(std::move(store));
    std::vector<uint64_t> region_pages;
    std::vector<migration_internal::TornPages::Region> torn_regions;
    for (const StoredRegion& r : store_->regions()) {
      region_pages.push_back(r.region.size() / kMigrationPageSize);
      torn_regions.push_back({region_pages.back(), r.info.guest_addr()});
      landed_.emplace_back(region_pages.back());
      file_writes_.emplace_back();
    }
    round_pages_.emplace(region_pages);
    torn_.emplace(torn_regions);
    proto::Ack ack;
    ack.set_kind(proto::ACK_REGION_TABLE);
    LIVEMIG_RETURN_IF_ERROR(WriteControl(wire::FrameType::kAck, ack));

    {
      std::lock_guard<std::mutex> lock(mu_);  // Fail() may read it from a Cancel().
      barrier_ = std::make_unique<RoundBarrier>(
          channels_.size(), &receiver_.cancelled_,
          [this](uint32_t round, bool final) { EndOfRound(round, final); },
          [this] {
            uint64_t read = 0;
            for (const auto& c : channels_) read += c->bytes_read();
            return read;
          });
    }
    writeback_.emplace(*store_);
    std::vector<std::thread> readers;
    for (size_t i = 0; i < channels_.size(); ++i) {
      readers.emplace_back([this, i] {
        absl::Status s = ReadChannel(i);
        if (s.ok()) return;
        // A source that gives up sends Abort on channel 0 and then closes
        // every channel: that reason comes first if it is on its way.
        if (i != 0 && SourceGone(s)) AwaitSourceReason();
        Fail(s);
      });
    }
    for (auto& t : readers) t.join();
    absl::Status failed_with = failure();
    // Channel 0's reader may not have read that Abort: it waited in the
    // round barrier (its channel had ended the round), or another channel's
    // close came first. What it left unread, from a frame boundary on, says.
    // Only what had arrived counts (Fail() shut the channels down): the
    // source writes its Abort before it closes any channel, and the reader
    // of the one that closed waited for it above (AwaitSourceReason).
    if (SourceGone(failed_with) &&
        channels_[0]->bytes_read() == control_boundary_.load(std::memory_order_relaxed)) {
      const std::optional<proto::Abort> abort =
          FindAbort(channels_[0]->ReadLeftover(wire::kMaxMessageSize, absl::Milliseconds(200)));
      if (abort.has_value()) failed_with = StatusFromAbort(*abort);
    }
    return failed_with;
  }();
  absl::StatusOr<ReceivedMigration> out =
      status.ok() ? Finish() : absl::StatusOr<ReceivedMigration>(status);
  if (!out.ok()) {
    SendAbort(out.status());
    if (store_) store_->Abandon();
    return out.status();
  }
  out->raw_pages = raw_pages_.load();
  out->pages_written_to_files = file_pages_.load();
  out->zero_pages = zero_pages_.load();
  out->rounds = rounds_.load();
  out->channels = static_cast<uint32_t>(channels_.size());
  out->prealloc_ms = store_->prealloc().ms;
  out->prealloc_bytes = store_->prealloc().bytes;
  out->compression = compression_;
  out->compressed_batches = compressed_batches_.load();
  out->torn_pages = torn_ ? torn_->tears() : 0;
  out->decompress_ms = static_cast<double>(decompress_ns_.load()) / 1e6;
  for (const auto& c : channels_) out->bytes_received += c->bytes_read();
  return out;
}

absl::StatusOr<std::unique_ptr<Receiver>> Receiver::Listen(const Endpoint& at,
                                                           ReceiverOptions options) {
  ScopedFd root_lock;
  if (!options.root_dir.empty()) {
    LIVEMIG_ASSIGN_OR_RETURN(root_lock, migration_internal::LockRoot(options.root_dir));
  }
  LIVEMIG_ASSIGN_OR_RETURN(std::unique_ptr<Listener> listener, Listener::Listen(at));
  if (root_lock.valid()) {
    // What a receiver killed mid-migration left (its space claimed); no
    // other receiver runs on this root (its lock).
    LIVEMIG_RETURN_IF_ERROR(migration_internal::RemoveStaleStaging(
                                options.root_dir, kStagingSuffix,
                                static_cast<int>(options.max_path_components))
                                .status());
  }
  return std::unique_ptr<Receiver>(
      new Receiver(std::move(listener), std::move(options), std::move(root_lock)));
}

absl::StatusOr<ReceivedMigration> Receiver::ReceiveOne() {
  // A Cancel() from before this call counts (a signal that came while the
  // caller was still setting up). The request is used up when this call
  // fails Cancelled; one that came too late to stop it (after the commit,
  // during the flush) stays for the next call, which it stops at once.
  ReceiveSession session(*this);
  absl::StatusOr<ReceivedMigration> got = session.Run();
  if (absl::IsCancelled(got.status())) cancelled_.store(false, std::memory_order_relaxed);
  return got;
}

void Receiver::Cancel() {
  cancelled_.store(true, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  // The running migration tells its source why (an Abort) before it shuts
  // its channels down.
  if (session_ != nullptr) return session_->CancelByDestination();
  for (Connection* c : live_) c->Shutdown();
}

}  // namespace livemig
