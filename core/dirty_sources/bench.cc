// Benchmarks for UffdWriteTracker (`bazel run -c opt //core/dirty_sources:bench`).
// Needs userfaultfd access (root or /dev/userfaultfd) and Linux 6.7+; exits
// with the probe's reason otherwise.
//
// Names are fixed so runs can be compared:
//   Collect/{anon,memfd}/{0,1,10}pct  one Collect() over 1 GiB (262144 pages)
//                                     after that share of its pages was
//                                     written (spread evenly); only the
//                                     Collect is timed
//   FirstWrite/{anon,memfd}/{protected,unprotected}
//                                     one 8-byte store into each page of
//                                     64 MiB: right after a Collect
//                                     re-protected every page (one async WP
//                                     fault each), or with no tracker; time
//                                     per page is 1 / items_per_second
//   Start/{anon,memfd}/1GiB           Start() (open, register, write-protect)
//                                     of 1 GiB already populated; Stop() is
//                                     not timed
//   Stop/{anon,memfd}/1GiB            Stop() (unregister, which drops every
//                                     protection, and close) of 1 GiB
//   Probe                             UffdWriteTracker::Probe()
// "Time" is the benchmark thread's CPU time (user + system) in the timed
// section (see ThreadCpuNow), not wall time; ignore the "CPU" column, which
// also counts the untimed set-up of each iteration.
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/uffd_write_tracker.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "core/internal/guest_copy.h"
#include "core/mmap_region.h"

namespace livemig {
namespace {

constexpr size_t kGiB = size_t{1} << 30;
constexpr size_t kPage = 4096;

enum class Kind { kAnon, kMemfd };

const char* KindName(Kind kind) { return kind == Kind::kAnon ? "anon" : "memfd"; }

void Die(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  std::exit(1);
}

// Guest memory of one region, every page populated (the benchmarks measure
// tracking, not first-touch page faults).
GuestMemory<AtomicBitmap> MakeMemory(Kind kind, size_t size) {
  absl::StatusOr<MmapRegion<AtomicBitmap>> region = [&]() -> absl::StatusOr<MmapRegion<AtomicBitmap>> {
    if (kind == Kind::kAnon) {
      return MmapRegion<AtomicBitmap>::Build(std::nullopt, size, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_NORESERVE);
    }
    const int fd = ::memfd_create("uffd-bench", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      return absl::InternalError("memfd");
    }
    return MmapRegion<AtomicBitmap>::FromFile(FileOffset(ScopedFd(fd), 0), size);
  }();
  if (!region.ok()) Die(region.status());
  std::memset(region->as_ptr(), 1, size);
  std::vector<GuestRegion<AtomicBitmap>> regions;
  regions.push_back(*GuestRegion<AtomicBitmap>::Create(std::move(*region), GuestAddress(0)));
  return *GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

GuestMemory<AtomicBitmap>& GiB(Kind kind) {
  static auto* anon = new GuestMemory<AtomicBitmap>(MakeMemory(Kind::kAnon, kGiB));
  static auto* memfd = new GuestMemory<AtomicBitmap>(MakeMemory(Kind::kMemfd, kGiB));
  return kind == Kind::kAnon ? *anon : *memfd;
}

void ClearBitmap(const GuestMemory<AtomicBitmap>& memory) {
  memory.region(0).bitmap().ResetAddrRange(0, memory.region(0).len());
}

// The calling thread's CPU time (user + system: the faults and ioctls run in
// its context), in seconds. The timed sections are measured with it rather
// than the wall clock because this is a shared 2-CPU machine: other jobs'
// preemptions must not count as tracking cost.
double ThreadCpuNow() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void BM_Collect(benchmark::State& state, Kind kind, int percent) {
  const GuestMemory<AtomicBitmap>& memory = GiB(kind);
  UffdWriteTracker tracker(memory);
  if (absl::Status s = tracker.Start(); !s.ok()) Die(s);
  uint8_t* base = memory.region(0).region().as_ptr();
  const size_t pages = kGiB / kPage;
  const size_t stride = percent == 0 ? 0 : 100 / percent;
  const uint64_t reported_before = tracker.stats().pages_reported;
  const uint64_t ioctls_before = tracker.stats().scan_ioctls;
  uint64_t value = 0;
  for (auto _ : state) {
    if (stride != 0) {
      for (size_t p = 0; p < pages; p += stride) {
        core_internal::StoreToGuest<uint64_t>(base + p * kPage, ++value);
      }
    }
    const double start = ThreadCpuNow();
    if (absl::Status s = tracker.Collect(); !s.ok()) Die(s);
    state.SetIterationTime(ThreadCpuNow() - start);
    ClearBitmap(memory);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["pages"] =
      static_cast<double>(tracker.stats().pages_reported - reported_before) / n;
  state.counters["ioctls"] = static_cast<double>(tracker.stats().scan_ioctls - ioctls_before) / n;
}

void BM_FirstWrite(benchmark::State& state, Kind kind, bool protect) {
  constexpr size_t kSize = size_t{64} << 20;
  static auto* anon = new GuestMemory<AtomicBitmap>(MakeMemory(Kind::kAnon, kSize));
  static auto* memfd = new GuestMemory<AtomicBitmap>(MakeMemory(Kind::kMemfd, kSize));
  const GuestMemory<AtomicBitmap>& memory = kind == Kind::kAnon ? *anon : *memfd;
  std::optional<UffdWriteTracker> tracker;
  if (protect) {
    tracker.emplace(memory);
    if (absl::Status s = tracker->Start(); !s.ok()) Die(s);
  }
  uint8_t* base = memory.region(0).region().as_ptr();
  const size_t pages = kSize / kPage;
  uint64_t value = 0;
  for (auto _ : state) {
    if (tracker.has_value()) {
      if (absl::Status s = tracker->Collect(); !s.ok()) Die(s);  // Re-protects all.
      ClearBitmap(memory);
    }
    const double start = ThreadCpuNow();
    for (size_t p = 0; p < pages; ++p) {
      core_internal::StoreToGuest<uint64_t>(base + p * kPage + 8, ++value);
    }
    state.SetIterationTime(ThreadCpuNow() - start);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * pages));
}

void BM_Start(benchmark::State& state, Kind kind) {
  const GuestMemory<AtomicBitmap>& memory = GiB(kind);
  UffdWriteTracker tracker(memory);
  for (auto _ : state) {
    const double start = ThreadCpuNow();
    if (absl::Status s = tracker.Start(); !s.ok()) Die(s);
    state.SetIterationTime(ThreadCpuNow() - start);
    tracker.Stop();
  }
}

void BM_Stop(benchmark::State& state, Kind kind) {
  const GuestMemory<AtomicBitmap>& memory = GiB(kind);
  UffdWriteTracker tracker(memory);
  for (auto _ : state) {
    if (absl::Status s = tracker.Start(); !s.ok()) Die(s);
    const double start = ThreadCpuNow();
    tracker.Stop();
    state.SetIterationTime(ThreadCpuNow() - start);
  }
}

void BM_Probe(benchmark::State& state) {
  for (auto _ : state) {
    const double start = ThreadCpuNow();
    if (absl::Status s = UffdWriteTracker::Probe(); !s.ok()) Die(s);
    state.SetIterationTime(ThreadCpuNow() - start);
  }
}

void Register() {
  benchmark::RegisterBenchmark("Probe", BM_Probe)->UseManualTime()->Unit(benchmark::kMicrosecond);
  for (Kind kind : {Kind::kAnon, Kind::kMemfd}) {
    for (int percent : {0, 1, 10}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("Collect/", KindName(kind), "/", percent, "pct").c_str(), BM_Collect,
          kind, percent)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (Kind kind : {Kind::kAnon, Kind::kMemfd}) {
    for (bool protect : {true, false}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("FirstWrite/", KindName(kind), "/",
                       protect ? "protected" : "unprotected")
              .c_str(),
          BM_FirstWrite, kind, protect)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (Kind kind : {Kind::kAnon, Kind::kMemfd}) {
    benchmark::RegisterBenchmark(absl::StrCat("Start/", KindName(kind), "/1GiB").c_str(),
                                 BM_Start, kind)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(absl::StrCat("Stop/", KindName(kind), "/1GiB").c_str(),
                                 BM_Stop, kind)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace
}  // namespace livemig

int main(int argc, char** argv) {
  if (absl::Status why = livemig::UffdWriteTracker::Probe(); !why.ok()) {
    std::fprintf(stderr, "userfaultfd write tracking is unavailable: %s\n",
                 why.ToString().c_str());
    return 1;
  }
  livemig::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
