// File: tools/cli/workload.h
//
// The built-in guest workload of `livemig send --workload=SPEC`: writer
// threads that dirty guest memory through the tracked API (so the sender's
// AtomicBitmaps see every write) at a paced rate, in one of a few access
// patterns. It is also the sender's VmControl: Pause() freezes memory,
// Resume() restarts the writers, SetThrottle() slows them (auto-converge).
//
// Spec grammar: KIND[:KEY=VALUE[,KEY=VALUE]...]
//
//   idle                                  no writes (takes no keys)
//   uniform:rate=200MB/s                  pages uniform over all guest memory
//   hotset:size=64MiB,rate=1GB/s          uniform over the first `size` bytes
//                                         of guest memory (regions in address
//                                         order, gaps skipped), rounded up to
//                                         whole pages
//   sequential:rate=500MB/s               page after page, wrapping at the end
//   zipf:s=1.1,rate=300MB/s               Zipf(s) over all pages (s > 0,
//                                         default 1.1); page ranks are
//                                         scattered over memory by a fixed
//                                         bijection, so the hot pages are not
//                                         all at the start
//
// Every non-idle kind needs rate=RATE (units.h ParseRate, > 0): the bytes per
// second of pages dirtied, i.e. rate / 4096 page writes per second in total.
// Any kind but idle also takes threads=N (1..256, default 1), the number of
// writer threads sharing that rate, and seed=N (an unsigned integer, default
// 0): the same spec and seed write the same page sequence per thread, a
// different seed another one.
//
// A page write stores one random 8-byte value at a random 8-byte-aligned
// offset inside the page, through GuestRegion::region().WriteObj (tracked:
// the page's bit is set after the write). Pacing uses absolute steady_clock
// deadlines per thread, so the long-run rate matches the target while the
// CPU keeps up; a thread that falls behind catches up for at most 100 ms of
// backlog rather than bursting without bound.
//
// Thread safety: every method may be called from any thread. Start/Stop/
// Pause/Resume are serialized internally; the accessors are lock-free.
#ifndef LIVEMIG_TOOLS_CLI_WORKLOAD_H_
#define LIVEMIG_TOOLS_CLI_WORKLOAD_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>  // Not absl::Mutex: Debian's Abseil is not TSan-instrumented.
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "migration/vm_control.h"

namespace livemig::cli {

struct WorkloadSpec {
  enum class Kind { kIdle, kUniform, kHotset, kSequential, kZipf };
  Kind kind = Kind::kIdle;
  double rate = 0;         // Bytes/s of pages dirtied (pages/s = rate / 4096).
  uint64_t hot_bytes = 0;  // kHotset: the writable working set, from the start
                           // of guest memory.
  double zipf_s = 1.1;     // kZipf: the exponent.
  int threads = 1;         // Writer threads sharing `rate`.
  uint64_t seed = 0;       // Mixed into every writer's page sequence.

  bool operator==(const WorkloadSpec&) const = default;
};

// Parses a spec (grammar above). InvalidArgument, quoting the spec and naming
// the offending kind or key, for: an unknown kind or key, a key that does not
// apply to the kind, a repeated key, a missing rate (or size for hotset), an
// unparsable or out-of-range value.
[[nodiscard]] absl::StatusOr<WorkloadSpec> ParseWorkload(std::string_view spec);

// The canonical spec text, which ParseWorkload maps back to an equal spec
// (up to the 6 significant digits kept for zipf's s): "idle",
// "hotset:size=64MiB,rate=1GB/s", "zipf:s=1.1,rate=300MB/s,threads=2".
std::string WorkloadToString(const WorkloadSpec& spec);

class Workload : public VmControl {
 public:
  static constexpr uint64_t kPageSize = 4096;

  // Builds the page index of `memory` (no threads yet). `memory` must outlive
  // the workload. Out-of-range fields are clamped rather than refused (use
  // ParseWorkload to validate user input): threads to [1, 256], a hot set of
  // 0 or past the end of memory to all of memory, zipf_s <= 0 to 1.1.
  Workload(const GuestMemory<AtomicBitmap>& memory, WorkloadSpec spec);
  ~Workload() override;  // Stop().

  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  // Starts the writer threads; a no-op for idle or if they already run.
  void Start();
  // Stops and joins the writers (within a few ms); when it returns no writer
  // touches memory any more. A no-op if none run.
  void Stop();

  // --- VmControl ---
  // Stop(); guest memory is frozen once it returns. Always OK.
  [[nodiscard]] absl::Status Pause() override;
  // Start() again. Always OK.
  [[nodiscard]] absl::Status Resume() override;
  // Writers run at rate * (100 - percent) / 100 from their next page on;
  // `percent` is clamped to [0, 100] (100 stops writes without pausing).
  void SetThrottle(int percent) override;
  // "livemig-workload-v1 spec=... pages_written=N throttle=P paused=0|1".
  [[nodiscard]] absl::StatusOr<std::string> DeviceState() override;

  const WorkloadSpec& spec() const { return spec_; }
  // Pages of guest memory (a partial page at a region's end counts as one).
  uint64_t total_pages() const { return total_pages_; }
  // The pages kHotset writes to (the first ones in address order);
  // total_pages() for other kinds.
  uint64_t hot_pages() const { return hot_pages_; }

  // Page writes done so far, by all writers, across restarts.
  uint64_t pages_written() const {
    return pages_written_.load(std::memory_order_relaxed);
  }
  int throttle() const { return throttle_.load(std::memory_order_relaxed); }
  // True between Pause() and the next Resume() or Start().
  bool paused() const { return paused_.load(std::memory_order_relaxed); }

 private:
  void RunWriter(uint64_t seed);
  // Writes one random 8-byte value into page `page` (a global page index).
  void WritePage(uint64_t page, uint64_t value, uint64_t random) const;

  const GuestMemory<AtomicBitmap>& memory_;
  const WorkloadSpec spec_;
  // region_first_page_[i]: the global index of region i's first page; one
  // extra entry holds total_pages_. Immutable after construction.
  std::vector<uint64_t> region_first_page_;
  uint64_t total_pages_ = 0;
  uint64_t hot_pages_ = 0;

  // Serializes Start/Stop (and so Pause/Resume). Never taken by writers.
  std::mutex lifecycle_mu_;
  std::vector<std::thread> writers_ ABSL_GUARDED_BY(lifecycle_mu_);
  uint64_t generation_ ABSL_GUARDED_BY(lifecycle_mu_) = 0;  // Seeds restarts.

  // Writers sleep on cv_ until their next deadline; Stop() and SetThrottle()
  // change their condition under mu_ and notify, so no wake-up is lost.
  std::mutex mu_;
  std::condition_variable cv_;
  // Written under mu_ by Start/Stop; read by writers, under mu_ in their
  // wait predicate and relaxed between page writes (a stale false costs at
  // most one more page before the locked re-check).
  std::atomic<bool> stop_{false};
  // Written under mu_ by SetThrottle; read relaxed by writers for pacing (a
  // hint: no data depends on it) and in their wait predicate under mu_.
  std::atomic<int> throttle_{0};
  // Counters: written by writers (relaxed RMW), read by anyone as statistics.
  // Stop() joins the writers, so after it the value is exact.
  std::atomic<uint64_t> pages_written_{0};
  // kSequential: the next page to write, shared by all writers (relaxed
  // fetch_add: only uniqueness matters, not ordering).
  std::atomic<uint64_t> sequential_next_{0};
  // Written by Pause/Resume/Start, read as a status flag.
  std::atomic<bool> paused_{false};
};

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_WORKLOAD_H_
