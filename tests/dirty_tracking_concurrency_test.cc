// No dirty page is ever lost while writers run during harvests.
//
// Two (or more) writer threads write guest memory through the tracked API for
// over a second while a harvester thread repeatedly harvests every region's
// bitmap and copies the harvested pages to a destination, like a migration
// round. Checked page by page afterwards:
//   1. every page written after harvest k appears in harvest k+1 or later, and
//      more precisely no later than the first harvest that started after the
//      write was marked (a write is never left for a later rewrite to cover);
//   2. after a final harvest (writers stopped) the destination equals the
//      source byte for byte, so every harvested page carried its data.
// Run twice: with the default bitmap (marks of set bits skip their RMW and
// harvests end with membarrier) and with AlwaysRmwBitmap (every mark is an
// RMW, the path taken where membarrier is missing).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/testing/always_rmw_bitmap.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kRegionPages = 16384;  // 64 MiB per region: pages are rarely rewritten
                                        // between harvests, so a lost mark shows.
constexpr int kRegions = 2;
constexpr int kWriters = 3;
// The harvester runs at least kDuration and at least kMinHarvests harvests,
// however long those take on a slow machine or under a sanitizer: the test
// counts work done, not time spent.
constexpr auto kDuration = std::chrono::milliseconds(1200);
constexpr uint32_t kMinHarvests = 60;
#if defined(__SANITIZE_THREAD__)
// Under TSan every guest byte copy is an instrumented atomic: pace writers
// harder so that harvests (which copy what they harvested) keep up.
constexpr uint64_t kWritesPerPause = 2;
#else
constexpr uint64_t kWritesPerPause = 16;
#endif

template <typename B>
struct Harness {
  GuestMemory<B> memory;
  // destination[r]: what the "receiver" has for region r.
  std::vector<std::vector<uint8_t>> destination;
  // last_harvest[r][p]: index of the last harvest (1-based) that returned page
  // p of region r. Written by the harvester only.
  std::vector<std::vector<uint32_t>> last_harvest;
  // history[j - 1][r]: the bitmap words harvest j returned for region r.
  std::vector<std::vector<std::vector<uint64_t>>> history;
};

template <typename B>
GuestMemory<B> MakeMemory() {
  std::vector<GuestRegion<B>> regions;
  for (int r = 0; r < kRegions; ++r) {
    auto mmap = MmapRegion<B>::Create(kRegionPages * kPage);
    EXPECT_TRUE(mmap.ok()) << mmap.status();
    // A gap between regions, so cross-region writes must fail, not corrupt.
    auto region = GuestRegion<B>::Create(
        std::move(*mmap), GuestAddress(r * 2 * kRegionPages * kPage));
    EXPECT_TRUE(region.ok()) << region.status();
    regions.push_back(std::move(*region));
  }
  auto memory = GuestMemory<B>::FromRegions(std::move(regions));
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

// Harvests every region once (harvest number `index`) and copies each
// harvested page to the destination.
template <typename B>
void HarvestAndCopy(Harness<B>& h, uint32_t index, std::vector<uint64_t>& scratch) {
  h.history.emplace_back();
  for (int r = 0; r < kRegions; ++r) {
    const auto& region = h.memory.region(r);
    ASSERT_OK(region.bitmap().HarvestRuns(scratch, [&](size_t first, size_t count) {
      for (size_t p = first; p < first + count; ++p) h.last_harvest[r][p] = index;
      ASSERT_OK(region.region().Read(
          std::span<uint8_t>(h.destination[r].data() + first * kPage, count * kPage),
          first * kPage));
    }));
    h.history.back().push_back(scratch);
  }
}

// One sampled write: page `page` of region `region`, made after harvest
// `before` completed and marked before harvest `after` + 1 completed.
struct WriteRecord {
  uint32_t region;
  uint32_t page;
  uint32_t before;
  uint32_t after;
};

template <typename B>
class DirtyTrackingConcurrency : public ::testing::Test {};

using Bitmaps = ::testing::Types<AtomicBitmap, testing::AlwaysRmwBitmap>;
TYPED_TEST_SUITE(DirtyTrackingConcurrency, Bitmaps);

TYPED_TEST(DirtyTrackingConcurrency, NoDirtyPageIsLostWhileWritersRunDuringHarvests) {
  Harness<TypeParam> h{MakeMemory<TypeParam>(), {}, {}, {}};
  for (int r = 0; r < kRegions; ++r) {
    h.destination.emplace_back(kRegionPages * kPage, 0);
    h.last_harvest.emplace_back(kRegionPages, 0);
  }
  // Number of harvests completed, stored by the harvester after a harvest and
  // its copies, read by writers before and after each write. seq_cst so that
  // the (before, after + 2] window below holds by the language rules, not
  // only on x86.
  std::atomic<uint32_t> completed{0};
  std::atomic<bool> stop{false};

  // max_epoch[w][r][p]: the largest `completed` value writer w saw before a
  // write to page p of region r, plus one (0 = never written).
  std::vector<std::vector<std::vector<uint32_t>>> max_epoch(
      kWriters, std::vector<std::vector<uint32_t>>(
                    kRegions, std::vector<uint32_t>(kRegionPages, 0)));
  std::vector<uint64_t> writes(kWriters, 0);
  std::vector<std::vector<WriteRecord>> records(kWriters);

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(1000 + w);
      uint64_t counter = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const int r = static_cast<int>(rng() % kRegions);
        const size_t page = rng() % kRegionPages;
        const uint32_t epoch = completed.load(std::memory_order_seq_cst);
        const uint64_t base = r * 2 * kRegionPages * kPage + page * kPage;
        const uint64_t value = (uint64_t{static_cast<uint32_t>(w)} << 56) | ++counter;
        if (counter % 16 == 0 && page + 1 < kRegionPages) {
          // A 64-byte write straddling this page and the next.
          std::vector<uint8_t> bytes(64, static_cast<uint8_t>(value));
          if (!h.memory.Write(GuestAddress(base + kPage - 32), bytes).ok()) {
            ADD_FAILURE() << "straddling write failed";
            stop.store(true);
          }
          max_epoch[w][r][page + 1] = std::max(max_epoch[w][r][page + 1], epoch + 1);
        } else {
          const uint64_t offset = (rng() % (kPage / 8)) * 8;
          if (!h.memory.WriteObj(GuestAddress(base + offset), value).ok()) {
            ADD_FAILURE() << "write failed";
            stop.store(true);
          }
        }
        max_epoch[w][r][page] = std::max(max_epoch[w][r][page], epoch + 1);
        ++writes[w];
        // Pace the writers (~300k writes/s each) so that a page is rarely
        // rewritten between two harvests: a lost mark must not be hidden by a
        // later write to the same page.
        if (counter % kWritesPerPause == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
        // Sample every write at first, then one in 64, to bound memory.
        if (records[w].size() < 200000 || counter % 64 == 0) {
          records[w].push_back({static_cast<uint32_t>(r), static_cast<uint32_t>(page),
                                epoch, completed.load(std::memory_order_seq_cst)});
        }
      }
    });
  }

  std::vector<uint64_t> scratch(kRegionPages / 64);
  uint32_t harvests = 0;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < kDuration || harvests < kMinHarvests) {
    HarvestAndCopy(h, ++harvests, scratch);
    completed.store(harvests, std::memory_order_seq_cst);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop.store(true);
  for (auto& t : writers) t.join();
  HarvestAndCopy(h, ++harvests, scratch);  // The final, paused round.

  for (int w = 0; w < kWriters; ++w) EXPECT_GT(writes[w], 1000u) << "writer " << w;

  size_t written_pages = 0;
  for (int r = 0; r < kRegions; ++r) {
    for (size_t p = 0; p < kRegionPages; ++p) {
      uint32_t need = 0;  // Written after harvest need-1 => in harvest >= need.
      for (int w = 0; w < kWriters; ++w) need = std::max(need, max_epoch[w][r][p]);
      if (need == 0) continue;
      ++written_pages;
      ASSERT_GE(h.last_harvest[r][p], need)
          << "region " << r << " page " << p << " was written after harvest "
          << need - 1 << " but last harvested in " << h.last_harvest[r][p];
    }
  }
  EXPECT_GT(written_pages, kRegionPages / 2);

  // Harvest after+1 may have been running during the write; harvest after+2
  // started after the mark, so the page must be in (before, after + 2].
  size_t checked = 0;
  for (int w = 0; w < kWriters; ++w) {
    for (const WriteRecord& rec : records[w]) {
      const uint32_t last = std::min<uint32_t>(rec.after + 2, harvests);
      bool found = false;
      for (uint32_t j = rec.before + 1; j <= last && !found; ++j) {
        found = (h.history[j - 1][rec.region][rec.page / 64] >> (rec.page % 64)) & 1;
      }
      ASSERT_TRUE(found) << "write to region " << rec.region << " page " << rec.page
                         << " after harvest " << rec.before
                         << " is in none of harvests " << rec.before + 1 << ".."
                         << last;
      ++checked;
    }
  }
  EXPECT_GT(checked, 5000u);
  std::printf("%u harvests, %zu sampled writes checked\n", harvests, checked);

  for (int r = 0; r < kRegions; ++r) {
    std::vector<uint8_t> source(kRegionPages * kPage);
    ASSERT_OK(h.memory.region(r).region().Read(source, 0));
    for (size_t p = 0; p < kRegionPages; ++p) {
      ASSERT_TRUE(std::equal(source.begin() + p * kPage,
                             source.begin() + (p + 1) * kPage,
                             h.destination[r].begin() + p * kPage))
          << "region " << r << " page " << p << " differs after the final harvest";
    }
  }
  EXPECT_EQ(h.memory.region(0).bitmap().CountDirty(), 0u);
}

}  // namespace
}  // namespace livemig
