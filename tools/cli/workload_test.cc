#include "tools/cli/workload.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig::cli {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::HasSubstr;
using Kind = WorkloadSpec::Kind;
using Memory = GuestMemory<AtomicBitmap>;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = uint64_t{1} << 20;

// Guest memory made of anonymous regions, given as (guest address, size).
absl::StatusOr<Memory> MakeMemory(
    const std::vector<std::pair<uint64_t, uint64_t>>& layout) {
  std::vector<GuestRegion<AtomicBitmap>> regions;
  for (const auto& [addr, size] : layout) {
    absl::StatusOr<MmapRegion<AtomicBitmap>> mmap =
        MmapRegion<AtomicBitmap>::Create(size);
    if (!mmap.ok()) return mmap.status();
    absl::StatusOr<GuestRegion<AtomicBitmap>> region =
        GuestRegion<AtomicBitmap>::Create(std::move(*mmap), GuestAddress(addr));
    if (!region.ok()) return region.status();
    regions.push_back(std::move(*region));
  }
  return Memory::FromRegions(std::move(regions));
}

// Harvests region `r`'s bitmap: the dirty page indices, in order.
std::vector<uint64_t> HarvestPages(const GuestRegion<AtomicBitmap>& r) {
  const AtomicBitmap& bitmap = r.bitmap();
  EXPECT_EQ(bitmap.page_size(), kPage);
  std::vector<uint64_t> words(bitmap.num_words());
  std::vector<uint64_t> pages;
  EXPECT_OK(bitmap.HarvestRuns(words, [&](size_t first, size_t count) {
    for (size_t p = first; p < first + count; ++p) pages.push_back(p);
  }));
  return pages;
}

// Page writes per second over `window`, sampled from pages_written().
double MeasurePagesPerSecond(const Workload& workload,
                             std::chrono::milliseconds window) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t p0 = workload.pages_written();
  std::this_thread::sleep_for(window);
  const uint64_t p1 = workload.pages_written();
  const auto t1 = std::chrono::steady_clock::now();
  return static_cast<double>(p1 - p0) /
         std::chrono::duration<double>(t1 - t0).count();
}

WorkloadSpec Spec(Kind kind, double rate) {
  WorkloadSpec spec;
  spec.kind = kind;
  spec.rate = rate;
  return spec;
}

// --- ParseWorkload / WorkloadToString ---

TEST(ParseWorkload, ParsesEveryKind) {
  ASSERT_OK_AND_ASSIGN(WorkloadSpec idle, ParseWorkload("idle"));
  EXPECT_EQ(idle.kind, Kind::kIdle);

  ASSERT_OK_AND_ASSIGN(WorkloadSpec uniform,
                       ParseWorkload("uniform:rate=200MB/s"));
  EXPECT_EQ(uniform.kind, Kind::kUniform);
  EXPECT_DOUBLE_EQ(uniform.rate, 200e6);
  EXPECT_EQ(uniform.threads, 1);

  ASSERT_OK_AND_ASSIGN(WorkloadSpec hotset,
                       ParseWorkload("hotset:size=64MiB,rate=1GB/s"));
  EXPECT_EQ(hotset.kind, Kind::kHotset);
  EXPECT_EQ(hotset.hot_bytes, 64 * kMiB);
  EXPECT_DOUBLE_EQ(hotset.rate, 1e9);

  ASSERT_OK_AND_ASSIGN(WorkloadSpec sequential,
                       ParseWorkload("sequential:rate=500MB/s"));
  EXPECT_EQ(sequential.kind, Kind::kSequential);
  EXPECT_DOUBLE_EQ(sequential.rate, 500e6);

  ASSERT_OK_AND_ASSIGN(WorkloadSpec zipf,
                       ParseWorkload("zipf:s=1.3,rate=300MB/s,threads=2"));
  EXPECT_EQ(zipf.kind, Kind::kZipf);
  EXPECT_DOUBLE_EQ(zipf.zipf_s, 1.3);
  EXPECT_DOUBLE_EQ(zipf.rate, 300e6);
  EXPECT_EQ(zipf.threads, 2);
}

TEST(ParseWorkload, KeysMayComeInAnyOrderAndZipfDefaultsItsExponent) {
  ASSERT_OK_AND_ASSIGN(WorkloadSpec hotset,
                       ParseWorkload("hotset:threads=4,rate=64MiB/s,size=1G"));
  EXPECT_EQ(hotset.hot_bytes, 1024 * kMiB);
  EXPECT_DOUBLE_EQ(hotset.rate, 64.0 * kMiB);
  EXPECT_EQ(hotset.threads, 4);
  ASSERT_OK_AND_ASSIGN(WorkloadSpec zipf, ParseWorkload("zipf:rate=1MB/s"));
  EXPECT_DOUBLE_EQ(zipf.zipf_s, 1.1);
  EXPECT_EQ(zipf.seed, 0u);
  ASSERT_OK_AND_ASSIGN(WorkloadSpec seeded,
                       ParseWorkload("uniform:seed=18446744073709551615,rate=1MB/s"));
  EXPECT_EQ(seeded.seed, 18446744073709551615u);
}

TEST(ParseWorkload, RefusesBadSpecsNamingTheKeyAndTheSpec) {
  const std::pair<const char*, const char*> cases[] = {
      {"burst:rate=1MB/s", "unknown kind \"burst\""},
      {"", "unknown kind \"\""},
      {"uniform", "missing key \"rate\""},
      {"uniform:", "expected KEY=VALUE"},
      {"uniform:rate=1MB/s,", "expected KEY=VALUE"},
      {"uniform:rate=fast", "key \"rate\""},
      {"uniform:rate=200MB", "key \"rate\""},
      {"uniform:rate=0", "key \"rate\" must be more than 0"},
      {"uniform:rate=1MB/s,rate=2MB/s", "key \"rate\" given twice"},
      {"uniform:rate=1MB/s,colour=red", "unknown key \"colour\""},
      {"uniform:rate=1MB/s,size=1M", "key \"size\" does not apply to uniform"},
      {"zipf:rate=1MB/s,size=1M", "key \"size\" does not apply to zipf"},
      {"hotset:rate=1MB/s,s=2", "key \"s\" does not apply to hotset"},
      {"idle:rate=1MB/s", "key \"rate\" does not apply to idle"},
      {"hotset:rate=1GB/s", "missing key \"size\""},
      {"hotset:size=12XB,rate=1GB/s", "key \"size\""},
      {"hotset:size=0,rate=1GB/s", "key \"size\" must be more than 0"},
      {"zipf:s=-1,rate=1MB/s", "key \"s\""},
      {"zipf:s=nan,rate=1MB/s", "key \"s\""},
      {"uniform:rate=1MB/s,threads=0", "key \"threads\""},
      {"uniform:rate=1MB/s,threads=two", "key \"threads\""},
      {"uniform:rate=1MB/s,threads=1000", "key \"threads\""},
      {"uniform:rate=1MB/s,seed=-1", "key \"seed\""},
      {"uniform:rate=1MB/s,seed=x", "key \"seed\""},
      {"uniform:rate=1MB/s,seed=18446744073709551616", "key \"seed\""},
      {"uniform:rate=1MB/s,seed=1,seed=2", "key \"seed\" given twice"},
      {"idle:seed=1", "key \"seed\" does not apply to idle"},
  };
  for (const auto& [spec, why] : cases) {
    const absl::StatusOr<WorkloadSpec> parsed = ParseWorkload(spec);
    EXPECT_THAT(parsed,
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, why))
        << "spec \"" << spec << "\"";
    EXPECT_THAT(parsed, StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                            absl::StrCat("\"", spec, "\"")))
        << "spec \"" << spec << "\"";
  }
}

TEST(WorkloadToString, WritesTheCanonicalSpec) {
  EXPECT_EQ(WorkloadToString(WorkloadSpec{}), "idle");
  EXPECT_EQ(WorkloadToString(*ParseWorkload("uniform:rate=200MB/s")),
            "uniform:rate=200MB/s");
  EXPECT_EQ(WorkloadToString(*ParseWorkload("hotset:rate=1GB/s,size=64M")),
            "hotset:size=64MiB,rate=1GB/s");
  EXPECT_EQ(WorkloadToString(*ParseWorkload("zipf:rate=300MB/s,threads=2")),
            "zipf:s=1.1,rate=300MB/s,threads=2");
  EXPECT_EQ(WorkloadToString(*ParseWorkload("sequential:rate=64MiB/s")),
            "sequential:rate=64MiB/s");
}

TEST(WorkloadToString, ParseWorkloadReadsItBack) {
  for (const char* text :
       {"idle", "uniform:rate=200MB/s", "hotset:size=12345,rate=1GB/s",
        "hotset:size=3KiB,rate=1.5KB/s", "sequential:rate=1234.5,threads=3",
        "zipf:s=0.8,rate=3e-5", "uniform:rate=10KiB/s",
        "uniform:rate=1MB/s,seed=7"}) {
    ASSERT_OK_AND_ASSIGN(WorkloadSpec spec, ParseWorkload(text));
    ASSERT_OK_AND_ASSIGN(WorkloadSpec again,
                         ParseWorkload(WorkloadToString(spec)));
    EXPECT_EQ(again, spec) << text << " -> " << WorkloadToString(spec);
  }
}

// --- Workload ---

// The pacer never lets writers run ahead of `target` (10% for the
// measurement's edges); a loaded machine may keep them behind it, so below
// the target only "it writes at all, at a rate of that order" is asked: a
// verdict that does not depend on how fast this machine is today.
void ExpectPacedAt(double measured, double target) {
  EXPECT_LE(measured, 1.10 * target);
  EXPECT_GE(measured, 0.25 * target);
}

TEST(Workload, UniformDirtiesPagesAtTheTargetRate) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 64 * kMiB}}));
  constexpr double kRate = 20e6;  // 4883 pages/s.
  Workload workload(memory, Spec(Kind::kUniform, kRate));
  workload.Start();
  const double pages_per_second =
      MeasurePagesPerSecond(workload, std::chrono::milliseconds(1000));
  workload.Stop();
  ExpectPacedAt(pages_per_second, kRate / kPage);

  // The writes went through the tracked API: the bitmap saw them. ~4900
  // uniform writes over 16384 pages hit ~4200 distinct pages.
  const uint64_t written = workload.pages_written();
  const std::vector<uint64_t> dirty = HarvestPages(memory.region(0));
  EXPECT_LE(dirty.size(), written);
  EXPECT_GE(dirty.size(), written * 7 / 10);
}

// One writer thread: its pages for ~0.3 s, as a set.
std::vector<uint64_t> PagesWrittenWithSeed(uint64_t seed) {
  absl::StatusOr<Memory> memory = MakeMemory({{0, 64 * kMiB}});
  EXPECT_OK(memory.status());
  if (!memory.ok()) return {};
  WorkloadSpec spec = Spec(Kind::kUniform, 8e6);  // ~1950 pages/s.
  spec.seed = seed;
  Workload workload(*memory, spec);
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  workload.Stop();
  return HarvestPages(memory->region(0));
}

TEST(Workload, TheSameSeedWritesTheSamePagesAndAnotherSeedOthers) {
  const std::vector<uint64_t> a = PagesWrittenWithSeed(5);
  const std::vector<uint64_t> b = PagesWrittenWithSeed(5);
  const std::vector<uint64_t> c = PagesWrittenWithSeed(6);
  ASSERT_GT(a.size(), 100u);
  ASSERT_GT(b.size(), 100u);
  ASSERT_GT(c.size(), 100u);
  // Runs differ in length (timing), not in order: the shorter run's pages
  // are all in the longer one's.
  const auto& shorter = a.size() <= b.size() ? a : b;
  const auto& longer = a.size() <= b.size() ? b : a;
  EXPECT_TRUE(std::includes(longer.begin(), longer.end(), shorter.begin(),
                            shorter.end()));
  // Another seed: ~100 of 16384 pages in common by chance at most.
  std::vector<uint64_t> common;
  std::set_intersection(a.begin(), a.end(), c.begin(), c.end(),
                        std::back_inserter(common));
  EXPECT_LT(common.size(), a.size() / 4);
}

TEST(Workload, ThreadsShareTheRate) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 16 * kMiB}}));
  constexpr double kRate = 20e6;
  WorkloadSpec spec = Spec(Kind::kUniform, kRate);
  spec.threads = 3;
  Workload workload(memory, spec);
  workload.Start();
  const double pages_per_second =
      MeasurePagesPerSecond(workload, std::chrono::milliseconds(600));
  workload.Stop();
  ExpectPacedAt(pages_per_second, kRate / kPage);
}

TEST(Workload, HotsetOnlyDirtiesPagesInsideTheHotSet) {
  // 1 MiB at 0 and 4 MiB at 256 MiB: a 2 MiB hot set is all of the first
  // region and the first 256 pages of the second.
  ASSERT_OK_AND_ASSIGN(Memory memory,
                       MakeMemory({{0, kMiB}, {256 * kMiB, 4 * kMiB}}));
  WorkloadSpec spec = Spec(Kind::kHotset, 50e6);
  spec.hot_bytes = 2 * kMiB;
  Workload workload(memory, spec);
  EXPECT_EQ(workload.hot_pages(), 512u);
  EXPECT_EQ(workload.total_pages(), 1280u);
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  workload.Stop();

  const std::vector<uint64_t> first = HarvestPages(memory.region(0));
  const std::vector<uint64_t> second = HarvestPages(memory.region(1));
  EXPECT_FALSE(first.empty());
  ASSERT_FALSE(second.empty());
  EXPECT_LT(second.back(), 256u) << "a page outside the hot set was written";
}

TEST(Workload, HotsetLargerThanMemoryCoversAllOfIt) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, kMiB}}));
  WorkloadSpec spec = Spec(Kind::kHotset, 1e6);
  spec.hot_bytes = 64 * kMiB;
  EXPECT_EQ(Workload(memory, spec).hot_pages(), 256u);
  spec.hot_bytes = 1;  // Rounded up to one page.
  EXPECT_EQ(Workload(memory, spec).hot_pages(), 1u);
}

TEST(Workload, SequentialWritesConsecutivePagesAcrossRegions) {
  // 64 pages, a gap, then 256 pages; ~490 writes in 100 ms at 20 MB/s fill
  // the first region and continue into the second without wrapping.
  ASSERT_OK_AND_ASSIGN(Memory memory,
                       MakeMemory({{0, 64 * kPage}, {64 * kMiB, 2 * kMiB}}));
  Workload workload(memory, Spec(Kind::kSequential, 20e6));
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  workload.Stop();
  const uint64_t written = workload.pages_written();
  ASSERT_GT(written, 64u);
  ASSERT_LT(written, 64u + 512u);

  const std::vector<uint64_t> first = HarvestPages(memory.region(0));
  const std::vector<uint64_t> second = HarvestPages(memory.region(1));
  EXPECT_EQ(first.size(), 64u);
  ASSERT_EQ(second.size(), written - 64);
  for (size_t i = 0; i < second.size(); ++i) {
    ASSERT_EQ(second[i], i) << "pages are not consecutive";
  }
}

TEST(Workload, SequentialWrapsAtTheEndOfMemory) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 16 * kPage}}));
  Workload workload(memory, Spec(Kind::kSequential, 20e6));
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  workload.Stop();
  EXPECT_GT(workload.pages_written(), 32u);
  EXPECT_EQ(HarvestPages(memory.region(0)).size(), 16u);
}

TEST(Workload, ZipfConcentratesWritesOnFewPages) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 64 * kMiB}}));
  WorkloadSpec spec = Spec(Kind::kZipf, 40e6);
  spec.zipf_s = 1.1;
  Workload workload(memory, spec);
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  workload.Stop();
  const uint64_t written = workload.pages_written();
  ASSERT_GT(written, 1000u);
  const std::vector<uint64_t> dirty = HarvestPages(memory.region(0));
  // Uniform writes would hit ~94% distinct pages here; Zipf(1.1) far fewer.
  EXPECT_LT(dirty.size(), written / 2);
  // The hot ranks are scattered, not packed at the start of memory.
  EXPECT_GT(dirty.back(), memory.region(0).len() / kPage / 2);
}

TEST(Workload, PauseFreezesMemoryAndResumeRestartsWrites) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 16 * kMiB}}));
  Workload workload(memory, Spec(Kind::kUniform, 20e6));
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_OK(workload.Pause());
  EXPECT_TRUE(workload.paused());
  const uint64_t at_pause = workload.pages_written();
  EXPECT_GT(at_pause, 0u);
  EXPECT_FALSE(HarvestPages(memory.region(0)).empty());

  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(workload.pages_written(), at_pause);
  EXPECT_TRUE(HarvestPages(memory.region(0)).empty());

  ASSERT_OK(workload.Resume());
  EXPECT_FALSE(workload.paused());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_GT(workload.pages_written(), at_pause);
  EXPECT_FALSE(HarvestPages(memory.region(0)).empty());
}

TEST(Workload, SetThrottleScalesTheRate) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, 16 * kMiB}}));
  constexpr double kRate = 40e6;  // 9766 pages/s.
  constexpr double kPagesPerSecond = kRate / kPage;
  Workload workload(memory, Spec(Kind::kUniform, kRate));
  workload.Start();
  const double full =
      MeasurePagesPerSecond(workload, std::chrono::milliseconds(500));
  ExpectPacedAt(full, kPagesPerSecond);

  workload.SetThrottle(50);
  EXPECT_EQ(workload.throttle(), 50);
  const double half =
      MeasurePagesPerSecond(workload, std::chrono::milliseconds(500));
  ExpectPacedAt(half, kPagesPerSecond / 2);

  // 100% stops the writers without pausing; 0 brings the full rate back.
  workload.SetThrottle(100);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_LE(MeasurePagesPerSecond(workload, std::chrono::milliseconds(50)),
            0.0);
  EXPECT_FALSE(workload.paused());
  workload.SetThrottle(0);
  EXPECT_GT(MeasurePagesPerSecond(workload, std::chrono::milliseconds(100)),
            0.5 * kPagesPerSecond);
  workload.Stop();
}

TEST(Workload, StopReturnsPromptlyEvenAtALowRate) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, kMiB}}));
  WorkloadSpec spec = Spec(Kind::kUniform, 4096);  // One page a second.
  spec.threads = 2;
  Workload workload(memory, spec);
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto t0 = std::chrono::steady_clock::now();
  workload.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(100));
}

TEST(Workload, IdleNeverWrites) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, kMiB}}));
  Workload workload(memory, WorkloadSpec{});
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(workload.pages_written(), 0u);
  EXPECT_TRUE(HarvestPages(memory.region(0)).empty());
  ASSERT_OK(workload.Pause());
  ASSERT_OK(workload.Resume());
}

TEST(Workload, DeviceStateDescribesTheWorkload) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, kMiB}}));
  Workload workload(memory, *ParseWorkload("hotset:size=64KiB,rate=10MB/s"));
  workload.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_OK(workload.Pause());
  workload.SetThrottle(30);
  ASSERT_OK_AND_ASSIGN(std::string state, workload.DeviceState());
  EXPECT_THAT(state, HasSubstr("spec=hotset:size=64KiB,rate=10MB/s"));
  EXPECT_THAT(state, HasSubstr(absl::StrCat("pages_written=",
                                            workload.pages_written())));
  EXPECT_THAT(state, HasSubstr("throttle=30"));
  EXPECT_THAT(state, HasSubstr("paused=1"));
}

TEST(Workload, DestructorStopsTheWriters) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0, kMiB}}));
  {
    Workload workload(memory, Spec(Kind::kUniform, 100e6));
    workload.Start();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  HarvestPages(memory.region(0));
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(HarvestPages(memory.region(0)).empty());
}

}  // namespace
}  // namespace livemig::cli
