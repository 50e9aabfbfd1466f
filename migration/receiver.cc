#include "migration/receiver.h"

#include <sys/uio.h>

#include <cstring>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "migration/protocol.h"
#include "migration/region_digest.h"
#include "migration/region_store.h"
#include "migration/wire/frame_io.h"

namespace livemig {
namespace {

// Received raw pages between two writeback kicks (16 MiB of 4 KiB pages).
constexpr uint64_t kWritebackPages = 4096;

// Calls StartWriteback() on its own thread whenever kicked, so channel
// readers never block in sync_file_range (which waits when the device queue
// is full) while pages keep arriving. Kicks while one is running coalesce.
class WritebackThread {
 public:
  explicit WritebackThread(const RegionStore& store)
      : store_(store), thread_([this] { Loop(); }) {}
  WritebackThread(const WritebackThread&) = delete;
  WritebackThread& operator=(const WritebackThread&) = delete;
  ~WritebackThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void Kick() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = true;
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return pending_ || stop_; });
      if (stop_) return;
      pending_ = false;
      lock.unlock();
      store_.StartWriteback();
      lock.lock();
    }
  }

  const RegionStore& store_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;  // Guarded by mu_.
  bool stop_ = false;     // Guarded by mu_.
  std::thread thread_;    // Last: starts once the fields above exist.
};

// Every channel's reader waits here at the end of each round until all
// channels finished it, so a page of round r+1 never lands before the same
// page of round r arriving on another channel.
class RoundBarrier {
 public:
  // `cancelled` must outlive the barrier.
  RoundBarrier(size_t parties, const std::atomic<bool>* cancelled)
      : parties_(parties), cancelled_(cancelled) {}

  // Waits until every channel ended round `round`. Fails if the channels
  // disagree on whether it was the final round (DataLoss), if the barrier was
  // broken by a failure or Cancel() (Aborted), or after `timeout`.
  absl::Status Arrive(uint32_t round, bool final, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    Round& r = rounds_[round];
    ++r.arrived;
    r.finals += final ? 1 : 0;
    changed_.notify_all();
    const absl::Time deadline = absl::Now() + timeout;
    while (!broken_ && r.arrived < parties_) {
      if (cancelled_->load(std::memory_order_relaxed)) broken_ = true;
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "other channels did not finish round ", round, " within ",
            absl::FormatDuration(timeout)));
      }
      changed_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (broken_) return absl::AbortedError("another channel failed");
    if (r.finals != 0 && r.finals != parties_) {
      return absl::DataLossError(absl::StrCat(
          "channels disagree on whether round ", round, " is the final one (",
          r.finals, " of ", parties_, " say so)"));
    }
    return absl::OkStatus();
  }

  void Break() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    changed_.notify_all();
  }

 private:
  struct Round {
    size_t arrived = 0;
    size_t finals = 0;
  };
  const size_t parties_;
  const std::atomic<bool>* cancelled_;
  // std::mutex: see migration/internal/send_channel.h. Guards the rest.
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint32_t, Round> rounds_;
  bool broken_ = false;
};

}  // namespace

// One migration being received.
class ReceiveSession {
 public:
  ReceiveSession(Receiver& receiver) : receiver_(receiver), options_(receiver.options_) {}
  ~ReceiveSession() {
    std::lock_guard<std::mutex> lock(receiver_.mu_);
    receiver_.live_.clear();
  }

  absl::StatusOr<ReceivedMigration> Run();

 private:
  absl::StatusOr<std::unique_ptr<Connection>> AcceptOne(absl::Duration timeout);
  absl::Status AcceptChannels();
  absl::Status ReadChannel(size_t index);
  absl::Status ApplyBatch(Connection& conn, wire::IncomingFrame& frame,
                          uint32_t channel_round);
  absl::StatusOr<ReceivedMigration> Finish();
  void Fail(const absl::Status& status);
  bool failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return !failure_.ok();
  }
  void SendAbort(const absl::Status& status);
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
  std::string migration_id_;

  std::mutex mu_;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<RoundBarrier> barrier_;
  // Set while the channel readers run (they kick it); not owned.
  WritebackThread* writeback_ = nullptr;
  // Relaxed: each reader adds its own counts; read after the readers joined
  // (raw_pages_ also paces writeback, which orders nothing).
  std::atomic<uint64_t> raw_pages_{0};
  std::atomic<uint64_t> zero_pages_{0};
  std::atomic<uint32_t> rounds_{0};
  std::atomic<bool> abort_sent_{false};  // SendAbort runs once.
};

void ReceiveSession::Fail(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return;
    failure_ = status;
  }
  if (barrier_) barrier_->Break();
  SendAbort(status);  // Also shuts every channel down, unblocking readers.
}

void ReceiveSession::SendAbort(const absl::Status& status) {
  if (channels_.empty() || abort_sent_.exchange(true)) return;
  // Best effort: the peer may be gone already. Only the main thread writes
  // the control channel otherwise, and never while readers run.
  SendAbortBestEffort(*channels_[0], status, proto::ROLE_DESTINATION);
  for (auto& c : channels_) c->Shutdown();
}

absl::StatusOr<std::unique_ptr<Connection>> ReceiveSession::AcceptOne(
    absl::Duration timeout) {
  // Short accepts, so Cancel() is noticed while waiting for a source.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    LIVEMIG_RETURN_IF_ERROR(CheckCancelled());
    const absl::Duration left = deadline - absl::Now();
    absl::StatusOr<std::unique_ptr<Connection>> conn =
        receiver_.listener_->Accept(std::min(left, absl::Milliseconds(100)));
    if (conn.ok() || conn.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return conn;
    }
    if (left <= absl::Milliseconds(100)) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no source connected within ", absl::FormatDuration(timeout)));
    }
  }
}

absl::Status ReceiveSession::AcceptChannels() {
  uint32_t count = 0;
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i == 0 || i < count; ++i) {
    LIVEMIG_RETURN_IF_ERROR(CheckCancelled());
    LIVEMIG_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn,
                             AcceptOne(i == 0 ? options_.accept_timeout
                                              : options_.io_timeout));
    {
      std::lock_guard<std::mutex> lock(receiver_.mu_);
      receiver_.live_.push_back(conn.get());
    }
    channels_.push_back(std::move(conn));
    Connection& c = *channels_.back();
    absl::Status status = [&]() -> absl::Status {
      LIVEMIG_ASSIGN_OR_RETURN(wire::IncomingFrame frame,
                               wire::ReadFrameStart(c, options_.io_timeout));
      if (frame.header.type != wire::FrameType::kHello) {
        return absl::DataLossError(absl::StrCat(
            "channel ", i, ": expected a HELLO frame, got ",
            wire::FrameTypeName(frame.header.type)));
      }
      proto::Hello hello;
      LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &hello));
      LIVEMIG_RETURN_IF_ERROR(CheckHello(hello, proto::ROLE_SOURCE));
      if (i == 0) {
        count = hello.channel_count();
        migration_id_ = hello.migration_id();
        if (count > options_.max_channels) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "source asks for ", count, " channels; at most ",
              options_.max_channels));
        }
      } else if (hello.migration_id() != migration_id_ ||
                 hello.channel_count() != count) {
        return absl::InvalidArgumentError(absl::StrCat(
            "channel ", i, " belongs to another migration"));
      }
      if (!seen.insert(hello.channel_index()).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "channel index ", hello.channel_index(), " used twice"));
      }
      return wire::WriteFrame(
          c, wire::FrameType::kHello,
          MakeHello(proto::ROLE_DESTINATION, hello.channel_index(), count,
                    migration_id_),
          options_.io_timeout);
    }();
    if (!status.ok()) {
      // Tell this peer why before closing (the control channel may be
      // another connection; the Abort goes where the bad hello came from).
      SendAbortBestEffort(c, status, proto::ROLE_DESTINATION);
      c.Shutdown();
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status ReceiveSession::ApplyBatch(Connection& conn, wire::IncomingFrame& frame,
                                        uint32_t channel_round) {
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
  if (batch.round() != channel_round) {
    return absl::DataLossError(absl::StrCat("PAGE_BATCH of round ", batch.round(),
                                            " arrived in round ", channel_round));
  }
  MmapRegion<NoBitmap>& region = regions[batch.region_index()].region;
  const uint64_t region_pages = region.size() / kMigrationPageSize;
  uint64_t total = 0;
  std::vector<iovec> destination;
  destination.reserve(batch.runs_size());
  for (const proto::PageRun& run : batch.runs()) {
    if (run.count() == 0 || run.first_page() >= region_pages ||
        run.count() > region_pages - run.first_page()) {
      return absl::OutOfRangeError(absl::StrCat(
          "PAGE_BATCH run [", run.first_page(), ", +", run.count(),
          ") is outside region ", batch.region_index(), " (", region_pages,
          " pages)"));
    }
    total += run.count();
    destination.push_back(iovec{region.as_ptr() + run.first_page() * kMigrationPageSize,
                                run.count() * kMigrationPageSize});
  }
  if (batch.encoding() == proto::ENCODING_RAW) {
    if (frame.header.payload_len != total * kMigrationPageSize) {
      return absl::DataLossError(absl::StrCat(
          "PAGE_BATCH of ", total, " pages carries ", frame.header.payload_len,
          " payload bytes"));
    }
    // Straight from the socket into the mapping; the frame checksum is
    // verified after, and a bad frame fails the whole migration.
    LIVEMIG_RETURN_IF_ERROR(wire::ReadPayloadAndVerify(
        conn, frame, absl::MakeConstSpan(destination), options_.io_timeout));
    // Keep the disk busy while pages arrive, so the flush in the source's
    // downtime finds little left: every kWritebackPages raw pages, the
    // thread that crosses the mark starts writeback (asynchronous).
    const uint64_t before = raw_pages_.fetch_add(total, std::memory_order_relaxed);
    if (before / kWritebackPages != (before + total) / kWritebackPages) {
      writeback_->Kick();
    }
    return absl::OkStatus();
  }
  if (batch.encoding() != proto::ENCODING_ZERO) {
    return absl::DataLossError(absl::StrCat("PAGE_BATCH encoding ",
                                            static_cast<int>(batch.encoding())));
  }
  if (frame.header.payload_len != 0) {
    return absl::DataLossError("ZERO PAGE_BATCH carries a payload");
  }
  // `batch` is parsed already: only the checksum is left to check.
  LIVEMIG_RETURN_IF_ERROR(
      wire::ReadPayloadAndVerify(conn, frame, {}, options_.io_timeout));
  // Round 0 visits every page once and the mappings start zeroed, so only
  // later rounds need to clear anything.
  if (channel_round > 0) {
    for (const iovec& v : destination) std::memset(v.iov_base, 0, v.iov_len);
  }
  zero_pages_.fetch_add(total, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status ReceiveSession::ReadChannel(size_t index) {
  Connection& conn = *channels_[index];
  uint32_t round = 0;
  while (true) {
    LIVEMIG_RETURN_IF_ERROR(CheckCancelled());
    LIVEMIG_ASSIGN_OR_RETURN(wire::IncomingFrame frame,
                             wire::ReadFrameStart(conn, options_.io_timeout));
    switch (frame.header.type) {
      case wire::FrameType::kPageBatch:
        LIVEMIG_RETURN_IF_ERROR(ApplyBatch(conn, frame, round));
        break;
      case wire::FrameType::kIterationMarker: {
        proto::IterationMarker marker;
        LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, &marker));
        if (marker.round() != round) {
          return absl::DataLossError(absl::StrCat(
              "channel ", index, ": end of round ", marker.round(),
              " while in round ", round));
        }
        LIVEMIG_RETURN_IF_ERROR(
            barrier_->Arrive(round, marker.final(), options_.io_timeout));
        if (index == 0) rounds_.store(round + 1, std::memory_order_relaxed);
        if (marker.final()) return absl::OkStatus();
        // Round `round` has fully landed: push it towards the disk now, so
        // the flush during the source's downtime is short.
        if (index == 0) writeback_->Kick();
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

absl::StatusOr<ReceivedMigration> ReceiveSession::Finish() {
  Connection& control = *channels_[0];
  // Every page has landed (all channels passed the final marker): digest now,
  // while the source computes its own digests, instead of after its
  // Completion frame arrives; and flush the staging files meanwhile (disk
  // I/O beside the CPU-bound digests). Both only read the mappings.
  absl::Status flushed;
  std::vector<uint64_t> actual;
  {
    std::jthread flusher([this, &flushed] { flushed = store_->Flush(); });
    for (const StoredRegion& r : store_->regions()) {
      actual.push_back(DigestRegion(r.region));
    }
  }
  LIVEMIG_RETURN_IF_ERROR(flushed);
  proto::DeviceState device;
  proto::Completion completion;
  LIVEMIG_RETURN_IF_ERROR(ReadExpected(control, wire::FrameType::kDeviceState, &device,
                                       options_.io_timeout));
  LIVEMIG_RETURN_IF_ERROR(ReadExpected(control, wire::FrameType::kCompletion, &completion,
                                       options_.io_timeout));
  std::vector<StoredRegion>& regions = store_->regions();
  if (static_cast<size_t>(completion.digests_size()) != regions.size()) {
    return absl::DataLossError(absl::StrCat("completion has ",
                                            completion.digests_size(),
                                            " digests for ", regions.size(),
                                            " regions"));
  }
  std::vector<bool> digested(regions.size(), false);
  for (const proto::RegionDigest& d : completion.digests()) {
    if (d.region_index() >= regions.size() || digested[d.region_index()]) {
      return absl::DataLossError(absl::StrCat(
          "completion digest for region ", d.region_index(),
          d.region_index() >= regions.size() ? ", which does not exist"
                                             : ", given twice"));
    }
    digested[d.region_index()] = true;
    if (actual[d.region_index()] != d.xxh3_64()) {
      return absl::DataLossError(absl::StrCat(
          "region ", d.region_index(), " digest mismatch: source 0x",
          absl::Hex(d.xxh3_64()), ", rebuilt 0x", absl::Hex(actual[d.region_index()])));
    }
  }
  // Durable (flushed above) but not published: ready for the source's
  // decision.
  proto::Ack verified;
  verified.set_kind(proto::ACK_VERIFIED);
  verified.set_round(rounds_.load());
  LIVEMIG_RETURN_IF_ERROR(
      wire::WriteFrame(control, wire::FrameType::kAck, verified, options_.io_timeout));
  // The commit point is the source's: without its handover (a cut, a
  // timeout, an Abort) the staging files are discarded, and the source, which
  // has not given the guest up, resumes it.
  proto::Ack handover;
  LIVEMIG_RETURN_IF_ERROR(
      ReadExpected(control, wire::FrameType::kAck, &handover, options_.io_timeout));
  if (handover.kind() != proto::ACK_HANDOVER) {
    return absl::DataLossError(absl::StrCat(
        "expected the source's handover, got an acknowledgement of kind ",
        proto::AckKind_Name(handover.kind())));
  }
  const absl::Status committed = store_->Commit();
  proto::Ack answer;
  answer.set_kind(proto::ACK_COMMITTED);
  answer.set_status_code(static_cast<int32_t>(committed.code()));
  answer.set_message(std::string(committed.message()));
  // Once committed the destination owns the guest even if this answer is
  // lost: the source then reports the handover in doubt and stays paused.
  // If publishing failed, the answer tells the source to resume.
  (void)wire::WriteFrame(control, wire::FrameType::kAck, answer, options_.io_timeout);
  LIVEMIG_RETURN_IF_ERROR(committed);
  std::vector<proto::RegionInfo> infos;
  std::vector<std::string> files;
  for (const StoredRegion& r : regions) {
    infos.push_back(r.info);
    files.push_back(r.final_path);
  }
  LIVEMIG_ASSIGN_OR_RETURN(GuestMemory<NoBitmap> memory, store_->TakeGuestMemory());
  ReceivedMigration out(std::move(memory));
  out.regions = std::move(infos);
  out.files = std::move(files);
  out.device_state = device.state();
  out.digests = std::move(actual);
  return out;
}

absl::StatusOr<ReceivedMigration> ReceiveSession::Run() {
  absl::Status status = [&]() -> absl::Status {
    LIVEMIG_RETURN_IF_ERROR(AcceptChannels());
    Connection& control = *channels_[0];
    proto::RegionTable table;
    LIVEMIG_RETURN_IF_ERROR(ReadExpected(control, wire::FrameType::kRegionTable, &table,
                                         options_.io_timeout));
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
    store_options.max_total_bytes = options_.max_total_bytes;
    LIVEMIG_ASSIGN_OR_RETURN(RegionStore store,
                             RegionStore::Create(table, kMigrationPageSize, store_options));
    store_.emplace(std::move(store));
    proto::Ack ack;
    ack.set_kind(proto::ACK_REGION_TABLE);
    LIVEMIG_RETURN_IF_ERROR(
        wire::WriteFrame(control, wire::FrameType::kAck, ack, options_.io_timeout));

    barrier_ = std::make_unique<RoundBarrier>(channels_.size(), &receiver_.cancelled_);
    // Lives while the readers run: stopped before Finish() touches the store.
    WritebackThread writeback(*store_);
    writeback_ = &writeback;
    std::vector<std::thread> readers;
    for (size_t i = 0; i < channels_.size(); ++i) {
      readers.emplace_back([this, i] {
        absl::Status s = ReadChannel(i);
        if (s.ok()) return;
        if (i != 0 && absl::IsUnavailable(s)) {
          // A source that gives up sends Abort on channel 0 and then closes
          // every channel: give that reason a moment to arrive first.
          const absl::Time until = absl::Now() + absl::Milliseconds(500);
          while (absl::Now() < until && !failed()) absl::SleepFor(absl::Milliseconds(5));
        }
        Fail(s);
      });
    }
    for (auto& t : readers) t.join();
    writeback_ = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!failure_.ok()) return failure_;
    }
    return absl::OkStatus();
  }();
  absl::StatusOr<ReceivedMigration> out =
      status.ok() ? Finish() : absl::StatusOr<ReceivedMigration>(status);
  if (!out.ok()) {
    SendAbort(out.status());
    if (store_) store_->Abandon();
    return out.status();
  }
  out->raw_pages = raw_pages_.load();
  out->zero_pages = zero_pages_.load();
  out->rounds = rounds_.load();
  out->channels = static_cast<uint32_t>(channels_.size());
  for (const auto& c : channels_) out->bytes_received += c->bytes_read();
  return out;
}

absl::StatusOr<std::unique_ptr<Receiver>> Receiver::Listen(const Endpoint& at,
                                                           ReceiverOptions options) {
  LIVEMIG_ASSIGN_OR_RETURN(std::unique_ptr<Listener> listener, Listener::Listen(at));
  return std::unique_ptr<Receiver>(new Receiver(std::move(listener), std::move(options)));
}

absl::StatusOr<ReceivedMigration> Receiver::ReceiveOne() {
  cancelled_.store(false, std::memory_order_relaxed);
  ReceiveSession session(*this);
  return session.Run();
}

void Receiver::Cancel() {
  cancelled_.store(true, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  for (Connection* c : live_) c->Shutdown();
}

}  // namespace livemig
