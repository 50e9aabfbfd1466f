// Benchmarks for the core memory layer (`bazel run -c opt //core:bench`).
//
// Names are fixed so runs can be compared (see README "Benchmarks"):
//   Write4K/{untracked,tracked}   4 KiB writes at random page offsets, 1 GiB
//   Write8/{untracked,tracked}    8-byte WriteObj at random addresses, 1 GiB
//   MarkRange2MiB                 marking a 2 MiB range (512 pages)
//   HarvestRuns/{1,10,100}pct     get-and-reset + emit runs, 4 Mi pages
// Plus variants that show the cost without the already-set fast path:
//   Write8/tracked_clean, MarkRange2MiB/clean (the range is reset each time).
#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"

namespace livemig {
namespace {

constexpr size_t kGiB = size_t{1} << 30;
constexpr size_t kPage = 4096;

// One 1 GiB mapping, touched once, shared by every variant through
// BuildRaw, so tracked and untracked runs write the very same physical pages
// (separate mappings made the comparison swing by +-15% with page placement).
uint8_t* SharedGiB() {
  static uint8_t* memory = [] {
    void* p = mmap(nullptr, kGiB, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) std::abort();
    // Touch every page so the benchmark measures writes, not page faults.
    std::memset(p, 1, kGiB);
    return static_cast<uint8_t*>(p);
  }();
  return memory;
}

template <DirtyTracker B>
GuestMemory<B> MakeMemory() {
  auto region = MmapRegion<B>::BuildRaw(SharedGiB(), kGiB, PROT_READ | PROT_WRITE,
                                        MAP_SHARED | MAP_ANONYMOUS);
  if (!region.ok()) {
    std::fprintf(stderr, "%s\n", region.status().ToString().c_str());
    std::abort();
  }
  std::vector<GuestRegion<B>> regions;
  regions.push_back(*GuestRegion<B>::Create(std::move(*region), GuestAddress(0)));
  return *GuestMemory<B>::FromRegions(std::move(regions));
}

// A fixed table of random addresses, so both variants see identical streams
// and the generator's cost is out of the loop.
std::vector<uint64_t> RandomOffsets(size_t count, size_t limit, size_t align) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> out(count);
  for (auto& o : out) o = (rng() % (limit / align)) * align;
  return out;
}

template <DirtyTracker B>
void BM_Write8(benchmark::State& state, bool reset_each_batch) {
  static auto* memory = new GuestMemory<B>(MakeMemory<B>());
  const auto offsets = RandomOffsets(1 << 16, kGiB, 8);
  uint64_t value = 0;
  size_t i = 0;
  for (auto _ : state) {
    if (memory->WriteObj(GuestAddress(offsets[i]), ++value).ok() == false) {
      state.SkipWithError("write failed");
    }
    if (++i == offsets.size()) {
      i = 0;
      if constexpr (std::is_same_v<B, AtomicBitmap>) {
        if (reset_each_batch) {
        // Clear the bitmap (32 KiB, ~8K words) so marks keep hitting clean
        // bits: the cost of first-touch marking, amortized into the batch.
          memory->region(0).bitmap().ResetAddrRange(0, kGiB);
        }
      }
    }
  }
  state.SetItemsProcessed(state.iterations());
}

template <DirtyTracker B>
void BM_Write4K(benchmark::State& state) {
  static auto* memory = new GuestMemory<B>(MakeMemory<B>());
  const auto offsets = RandomOffsets(1 << 14, kGiB, kPage);
  std::vector<uint8_t> buf(kPage, 0xab);
  size_t i = 0;
  for (auto _ : state) {
    buf[0] = static_cast<uint8_t>(i);
    if (!memory->Write(GuestAddress(offsets[i]), buf).ok()) {
      state.SkipWithError("write failed");
    }
    if (++i == offsets.size()) i = 0;
  }
  state.SetBytesProcessed(state.iterations() * kPage);
}

void BM_MarkRange2MiB(benchmark::State& state, bool reset) {
  AtomicBitmap bitmap(kGiB, kPage);
  size_t offset = 0;
  for (auto _ : state) {
    bitmap.SetAddrRange(offset, 2 << 20);
    if (reset) bitmap.ResetAddrRange(offset, 2 << 20);
    offset = (offset + (2 << 20)) & (kGiB - 1);
  }
  benchmark::DoNotOptimize(bitmap.CountDirty());
}

// 4 Mi pages (16 GiB worth of 4 KiB pages): mark `pct`% at random, then
// time one harvest (get-and-reset into a buffer + emit runs).
void BM_HarvestRuns(benchmark::State& state, int pct) {
  constexpr size_t kPages = size_t{4} << 20;
  AtomicBitmap bitmap(kPages * kPage, kPage);
  std::vector<uint64_t> scratch(bitmap.num_words());
  std::vector<uint64_t> pattern(bitmap.num_words(), 0);
  std::mt19937_64 rng(7);
  for (size_t p = 0; p < kPages; ++p) {
    if (static_cast<int>(rng() % 100) < pct) pattern[p / 64] |= uint64_t{1} << (p % 64);
  }
  size_t runs = 0, pages = 0;
  for (auto _ : state) {
    state.PauseTiming();
    if (!bitmap.Merge(pattern.data(), pattern.size()).ok()) std::abort();
    state.ResumeTiming();
    runs = 0;
    pages = 0;
    absl::Status s = bitmap.HarvestRuns(scratch, [&](size_t first, size_t count) {
      ++runs;
      pages += count;
      benchmark::DoNotOptimize(first);
    });
    if (!s.ok()) state.SkipWithError("harvest failed");
  }
  state.counters["runs"] = static_cast<double>(runs);
  state.counters["pages"] = static_cast<double>(pages);
}

void Register() {
  benchmark::RegisterBenchmark("Write4K/untracked", BM_Write4K<NoBitmap>);
  benchmark::RegisterBenchmark("Write4K/tracked", BM_Write4K<AtomicBitmap>);
  benchmark::RegisterBenchmark("Write8/untracked", BM_Write8<NoBitmap>, false);
  benchmark::RegisterBenchmark("Write8/tracked", BM_Write8<AtomicBitmap>, false);
  benchmark::RegisterBenchmark("Write8/tracked_clean", BM_Write8<AtomicBitmap>,
                               true);
  benchmark::RegisterBenchmark("MarkRange2MiB", BM_MarkRange2MiB, false);
  benchmark::RegisterBenchmark("MarkRange2MiB/clean", BM_MarkRange2MiB, true);
  for (int pct : {1, 10, 100}) {
    benchmark::RegisterBenchmark(
        ("HarvestRuns/" + std::to_string(pct) + "pct").c_str(), BM_HarvestRuns,
        pct)
        ->Unit(benchmark::kMillisecond);
  }
}

}  // namespace
}  // namespace livemig

int main(int argc, char** argv) {
  livemig::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
