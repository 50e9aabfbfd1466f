#include "migration/internal/send_channel.h"

#include <sys/uio.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migration/internal/zero_page.h"
#include "migration/protocol.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

#if defined(__SANITIZE_THREAD__)
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
#endif

namespace livemig::migration_internal {
namespace {

// While the kernel reads guest pages that the guest may be writing (a RAW
// batch sent from guest memory): the guest's intended race, which TSan's
// sendmsg interceptor would report as ours. Hidden from TSan for that one
// write, as core/internal/guest_copy.h hides the guest copies; no-op in
// other builds.
class KernelReadsGuestMemory {
 public:
  explicit KernelReadsGuestMemory(bool active) : active_(active) {
#if defined(__SANITIZE_THREAD__)
    if (active_) AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
#endif
  }
  ~KernelReadsGuestMemory() {
#if defined(__SANITIZE_THREAD__)
    if (active_) AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
#endif
  }
  KernelReadsGuestMemory(const KernelReadsGuestMemory&) = delete;
  KernelReadsGuestMemory& operator=(const KernelReadsGuestMemory&) = delete;

 private:
  [[maybe_unused]] const bool active_;
};

}  // namespace

bool Failure::RecordLocked(absl::Status status) {
  if (!status_.ok() || status.ok()) return false;
  status_ = std::move(status);
  failed_.store(true, std::memory_order_release);
  return true;
}

void Failure::Set(absl::Status status) {
  std::vector<Connection*> to_shut;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (RecordLocked(std::move(status))) {
      shut_down_ = true;
      to_shut = watched_;
    }
  }
  for (Connection* c : to_shut) c->Shutdown();
}

void Failure::Stop(absl::Status status) {
  std::vector<Connection*> to_interrupt;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (RecordLocked(std::move(status))) to_interrupt = watched_;
  }
  for (Connection* c : to_interrupt) c->Interrupt(kStopGrace);
}

void Failure::Close(absl::Status status) {
  std::vector<Connection*> to_shut;
  {
    std::lock_guard<std::mutex> lock(mu_);
    RecordLocked(std::move(status));
    shut_down_ = true;
    to_shut = watched_;
  }
  for (Connection* c : to_shut) c->Shutdown();
}

absl::Status Failure::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Failure::Watch(Connection* connection) {
  bool shut = false;
  bool interrupt = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    watched_.push_back(connection);
    shut = shut_down_;
    interrupt = !status_.ok();
  }
  // One made after the failure stops as the others did.
  if (shut) {
    connection->Shutdown();
  } else if (interrupt) {
    connection->Interrupt(kStopGrace);
  }
}

SendChannel::SendChannel(std::unique_ptr<Connection> connection,
                         const GuestMemory<AtomicBitmap>* memory,
                         std::vector<PageHashes>* sent, RateLimiter* limiter,
                         Failure* failure, ChannelCounters* counters,
                         absl::Duration io_timeout, uint32_t batch_pages,
                         const DropPageHook* drop, const std::vector<KnownZero>* known_zero,
                         uint32_t index)
    : connection_(std::move(connection)),
      memory_(memory),
      sent_(sent),
      limiter_(limiter),
      failure_(failure),
      counters_(counters),
      io_timeout_(io_timeout),
      index_(index),
      drop_(drop != nullptr && *drop ? drop : nullptr),
      batch_pages_(batch_pages),
      known_zero_(known_zero) {
  failure_->Watch(connection_.get());
}

SendChannel::~SendChannel() { Stop(); }

void SendChannel::EnableCompression(std::unique_ptr<wire::BatchCompressor> compressor) {
  compressor_ = std::move(compressor);
}

void SendChannel::Start() {
  // The copies' buffer only where pages are copied (1 MiB at 256 pages).
  if (!from_guest_memory_ || compressor_ != nullptr) {
    buffer_.resize(size_t{batch_pages_} * kMigrationPageSize);
  }
  worker_ = std::thread([this] { Run(); });
}

void SendChannel::Enqueue(PageWork work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_pages_ += work.pages;
    queue_.push_back(std::move(work));
  }
  changed_.notify_all();
}

uint64_t SendChannel::queued_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_pages_;
}

bool SendChannel::WaitIdle(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  // Failure is set without mu_, so it is polled through the timeout.
  return changed_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [this] {
    return (queue_.empty() && !busy_) || stop_ || failure_->failed();
  });
}

void SendChannel::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    queue_.clear();  // Unsent work is dropped; its pages stay in taken_.
    queued_pages_ = 0;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void SendChannel::Run() {
  while (true) {
    PageWork work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      changed_.wait(lock, [this] { return !queue_.empty() || stop_; });
      if (stop_ && queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    absl::Status status = failure_->failed() ? absl::OkStatus() : Send(work);
    if (!status.ok()) {
      // Which channel, and what it was writing.
      failure_->Set(absl::Status(
          status.code(),
          absl::StrCat("channel ", index_, ": ",
                       work.marker ? absl::StrCat("the end of round ", work.round)
                                   : absl::StrCat("a page batch of region ", work.region,
                                                  " in round ", work.round),
                       ": ", status.message())));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!stop_) queued_pages_ -= work.pages;
      busy_ = false;
    }
    changed_.notify_all();
  }
}

absl::Status SendChannel::Send(const PageWork& work) {
  if (work.marker) {
    proto::IterationMarker marker;
    marker.set_round(work.round);
    marker.set_phase(proto::PHASE_END);
    marker.set_final(work.final);
    return wire::WriteFrame(*connection_, wire::FrameType::kIterationMarker,
                            marker, io_timeout_);
  }
  const GuestRegion<AtomicBitmap>& region = memory_->region(work.region);
  const uint8_t* base = region.region().as_ptr();
  proto::PageBatch raw;
  proto::PageBatch zero;
  raw.set_region_index(work.region);
  raw.set_encoding(proto::ENCODING_RAW);
  raw.set_round(work.round);
  zero.set_region_index(work.region);
  zero.set_encoding(proto::ENCODING_ZERO);
  zero.set_round(work.round);
  auto append = [](proto::PageBatch& batch, uint64_t page) {
    const int n = batch.runs_size();
    if (n > 0) {
      proto::PageRun* last = batch.mutable_runs(n - 1);
      if (last->first_page() + last->count() == page) {
        last->set_count(last->count() + 1);
        return;
      }
    }
    proto::PageRun* run = batch.add_runs();
    run->set_first_page(page);
    run->set_count(1);
  };
  PageHashes& sent = (*sent_)[work.region];
  const bool from_guest = from_guest_memory_ && compressor_ == nullptr;
  payload_.clear();
  size_t raw_pages = 0;
  uint64_t zero_pages = 0;
  const absl::Time scan_start = absl::Now();
  for (const auto& [first, count] : work.runs) {
    if (known_zero_ != nullptr) (*known_zero_)[work.region].Find(first, count, &known_);
    for (uint64_t page = first; page < first + count; ++page) {
      const uint64_t offset = page * kMigrationPageSize;
      // Known zero: never written, so not read either (known_zero.h).
      if ((known_zero_ != nullptr && known_[page - first] != 0) ||
          IsZeroPage(base + offset, kMigrationPageSize)) {
        sent.Set(page, ZeroPageHash());
        if (drop_ != nullptr && (*drop_)(work.region, page)) continue;
        append(zero, page);
        ++zero_pages;
        continue;
      }
      if (raw_pages + 1 > batch_pages_) {
        return absl::InternalError("page batch larger than the channel buffer");
      }
      uint8_t* bytes;
      if (from_guest) {
        // Hashed where the kernel will read it (protocol.h: torn pages).
        auto slice =
            region.region().GetSlice(offset, kMigrationPageSize);
        if (!slice.ok()) return slice.status();
        bytes = slice->as_ptr();
      } else {
        // Copy through the bounds-checked accessor, then hash the copy: the
        // hash covers exactly the bytes that go on the wire.
        bytes = buffer_.data() + raw_pages * kMigrationPageSize;
        absl::Status read =
            region.region().Read(std::span<uint8_t>(bytes, kMigrationPageSize), offset);
        if (!read.ok()) return read;
      }
      const uint64_t hash = HashPage(bytes);
      sent.Set(page, hash);
      if (drop_ != nullptr && (*drop_)(work.region, page)) continue;
      append(raw, page);
      raw.add_page_hashes(hash);
      if (!payload_.empty() &&
          static_cast<uint8_t*>(payload_.back().iov_base) + payload_.back().iov_len == bytes) {
        payload_.back().iov_len += kMigrationPageSize;  // Adjacent: one piece.
      } else {
        payload_.push_back(iovec{bytes, kMigrationPageSize});
      }
      ++raw_pages;
    }
  }
  counters_->scanned_pages.fetch_add(work.pages, std::memory_order_relaxed);
  counters_->scan_ns.fetch_add(
      static_cast<uint64_t>(absl::ToInt64Nanoseconds(absl::Now() - scan_start)),
      std::memory_order_relaxed);
  if (raw_pages > 0) {
    // Copies are adjacent in buffer_: with a compressor, payload_ is one piece.
    if (compressor_ != nullptr) CompressPayload(raw, &payload_[0]);
    size_t bytes = 0;
    for (const iovec& piece : payload_) bytes += piece.iov_len;
    limiter_->Acquire(bytes, failure_->flag());
    absl::Status status;
    {
      const KernelReadsGuestMemory guest_race(from_guest);
      status = wire::WriteFrame(*connection_, wire::FrameType::kPageBatch, raw,
                                absl::MakeConstSpan(payload_), io_timeout_,
                                wire::kFramePagesHashed);
    }
    if (!status.ok()) return status;
    counters_->raw_pages.fetch_add(raw_pages, std::memory_order_relaxed);
  }
  if (zero_pages > 0) {
    absl::Status status = wire::WriteFrame(*connection_, wire::FrameType::kPageBatch,
                                           zero, io_timeout_);
    if (!status.ok()) return status;
    counters_->zero_pages.fetch_add(zero_pages, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

int64_t UnacknowledgedBytes(const std::vector<std::unique_ptr<SendChannel>>& channels) {
  int64_t sum = 0;
  for (const auto& c : channels) {
    const int64_t queued = c->connection().unacknowledged_bytes();
    if (queued < 0) return -1;
    sum += queued;
  }
  return sum;
}

absl::StatusOr<wire::IncomingFrame> ReadBehindQueue(
    const std::vector<std::unique_ptr<SendChannel>>& channels,
    const std::function<absl::Duration()>& wait, const std::function<bool()>& may_wait_on) {
  Connection& control = channels[0]->connection();
  int64_t queued = UnacknowledgedBytes(channels);
  while (true) {
    const uint64_t before = control.bytes_read();
    absl::StatusOr<wire::IncomingFrame> frame = wire::ReadFrameStart(control, wait());
    // Only a wait in which no byte of the answer came may be repeated.
    if (!absl::IsDeadlineExceeded(frame.status()) || control.bytes_read() != before) {
      return frame;
    }
    if (!may_wait_on()) return frame;
    const int64_t now_queued = UnacknowledgedBytes(channels);
    if (queued <= 0 || now_queued < 0 || now_queued >= queued) return frame;
    queued = now_queued;
  }
}

// ---- Compression (opt-in) ---------------------------------------------------
// Kept apart from Send()'s RAW path: called with the batch's page bytes as
// copied and hashed into buffer_.
void SendChannel::CompressPayload(proto::PageBatch& batch, iovec* payload) {
  const std::optional<absl::Span<const uint8_t>> packed = compressor_->Compress(
      absl::Span<const uint8_t>(static_cast<const uint8_t*>(payload->iov_base), payload->iov_len));
  const wire::CompressorCounters c = compressor_->TakeCounters();
  counters_->compressed_batches.fetch_add(c.compressed_batches, std::memory_order_relaxed);
  counters_->incompressible_batches.fetch_add(c.incompressible_batches,
                                              std::memory_order_relaxed);
  counters_->skipped_batches.fetch_add(c.skipped_batches, std::memory_order_relaxed);
  counters_->compress_bytes_in.fetch_add(c.bytes_in, std::memory_order_relaxed);
  counters_->compress_bytes_out.fetch_add(c.bytes_out, std::memory_order_relaxed);
  counters_->compress_ns.fetch_add(c.busy_ns, std::memory_order_relaxed);
  if (!packed.has_value()) return;  // Did not shrink, or backing off: RAW.
  batch.set_encoding(EncodingFor(compressor_->codec()));
  *payload = iovec{const_cast<uint8_t*>(packed->data()), packed->size()};
}

}  // namespace livemig::migration_internal
