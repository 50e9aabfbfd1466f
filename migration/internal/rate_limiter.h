// File: migration/internal/rate_limiter.h
//
// A token bucket shared by every channel of one migration: Acquire(n) waits
// until n bytes may be sent at `bytes_per_second`, with a burst of 1/20 s.
// A rate of 0 means unlimited. Thread-safe.
//
// PacedBatchPages: how many pages one batch may carry under a cap. The
// limiter charges a batch before its first byte goes out, so the receiver
// sees nothing for bytes/rate; a batch of 1 MiB at 35 KB/s is 30 s of
// silence, the default io_timeout of either side. A capped batch is made
// small enough to go out within a quarter of the io_timeout (the sender's
// own: the receiver's is not known here, and both default to 30 s).
// The channels take turns at the one limiter, so each channel's batches
// are N turns apart: with N channels a batch is sized for the channel's
// share of the cap, rate / N (ChannelShare), and the cap must carry one
// page per channel in that time. (Sized for the whole cap, 8 channels at
// 1 MB/s with a 1 s io_timeout left each channel silent for 1.75 s between
// its batches, and the destination failed a migration whose cap held.)
#ifndef LIVEMIG_MIGRATION_INTERNAL_RATE_LIMITER_H_
#define LIVEMIG_MIGRATION_INTERNAL_RATE_LIMITER_H_

#include <atomic>
#include <cmath>
#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include <mutex>  // Not absl::Mutex: Debian's Abseil is not TSan-instrumented.
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace livemig::migration_internal {

class RateLimiter {
 public:
  explicit RateLimiter(uint64_t bytes_per_second)
      : rate_(bytes_per_second), next_free_(absl::Now()) {}

  // Blocks until `bytes` fit the rate, or `*stop` becomes true.
  void Acquire(uint64_t bytes, const std::atomic<bool>* stop) {
    if (rate_ == 0) return;
    absl::Time send_at;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const absl::Time now = absl::Now();
      const absl::Duration burst = absl::Seconds(1) / 20;
      if (next_free_ < now - burst) next_free_ = now - burst;
      send_at = next_free_;
      next_free_ += absl::Seconds(static_cast<double>(bytes) / rate_);
    }
    while (absl::Now() < send_at && !stop->load(std::memory_order_relaxed)) {
      absl::SleepFor(std::min(send_at - absl::Now(), absl::Milliseconds(5)));
    }
  }

 private:
  const uint64_t rate_;
  std::mutex mu_;
  absl::Time next_free_ ABSL_GUARDED_BY(mu_);
};

// Each of `channels` channels' share of a cap of `bytes_per_second` (0:
// none, and stays 0); at least 1 byte/s under a cap.
inline uint64_t ChannelShare(uint64_t bytes_per_second, uint32_t channels) {
  if (bytes_per_second == 0 || channels <= 1) return bytes_per_second;
  return std::max<uint64_t>(1, bytes_per_second / channels);
}

// Whole pages of `page_size` a cap of `bytes_per_second` sends within
// io_timeout / 4 (fractional; the caller rounds). REQUIRES a cap (> 0) and
// a finite io_timeout.
inline double PagesPerQuarterTimeout(uint64_t bytes_per_second, absl::Duration io_timeout,
                                     uint32_t page_size) {
  return static_cast<double>(bytes_per_second) * absl::ToDoubleSeconds(io_timeout / 4) /
         page_size;
}

// Pages per batch: `batch_pages`, or fewer under a cap of `bytes_per_second`
// (0: none) so that one batch is sent within io_timeout / 4; at least 1. A
// cap too low for even one page in that time is refused by CheckPacedRate.
inline uint32_t PacedBatchPages(uint64_t bytes_per_second, absl::Duration io_timeout,
                                uint32_t batch_pages, uint32_t page_size) {
  if (bytes_per_second == 0 || io_timeout == absl::InfiniteDuration()) return batch_pages;
  const double fits = PagesPerQuarterTimeout(bytes_per_second, io_timeout, page_size);
  if (fits >= batch_pages) return batch_pages;
  return fits < 1 ? 1 : static_cast<uint32_t>(fits);
}

// The lowest cap (bytes/s, > 0) that sends one page on each of `channels`
// channels within io_timeout / 4; 1 without a timeout.
inline uint64_t LowestPacedRate(absl::Duration io_timeout, uint32_t page_size,
                                uint32_t channels = 1) {
  if (io_timeout == absl::InfiniteDuration()) return 1;
  return static_cast<uint64_t>(std::ceil(page_size / absl::ToDoubleSeconds(io_timeout / 4))) *
         std::max<uint32_t>(channels, 1);
}

// InvalidArgument when even a batch of one page on each of `channels`
// channels would leave a receiver's channel waiting longer than
// io_timeout / 4 for its bytes; the message names the lowest cap that works.
inline absl::Status CheckPacedRate(uint64_t bytes_per_second, absl::Duration io_timeout,
                                   uint32_t page_size, uint32_t channels = 1) {
  if (bytes_per_second == 0 || io_timeout == absl::InfiniteDuration() ||
      bytes_per_second >= LowestPacedRate(io_timeout, page_size, channels)) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "max_bandwidth (", bytes_per_second, " bytes/s) cannot send one ", page_size,
      "-byte page", channels > 1 ? absl::StrCat(" on each of ", channels, " channels") : "",
      " within a quarter of the io_timeout (", absl::FormatDuration(io_timeout),
      "); give at least ", LowestPacedRate(io_timeout, page_size, channels), " bytes/s",
      channels > 1 ? ", fewer channels" : "", ", or a longer io_timeout"));
}

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_RATE_LIMITER_H_
