#include "core/atomic_bitmap.h"

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "core/internal/membarrier.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::Pair;

constexpr size_t kPage = 4096;

std::vector<std::pair<size_t, size_t>> Runs(std::span<const uint64_t> words,
                                            size_t num_pages) {
  std::vector<std::pair<size_t, size_t>> runs;
  ForEachDirtyRun(words, num_pages,
                  [&](size_t first, size_t count) { runs.emplace_back(first, count); });
  return runs;
}

// The obvious page-by-page answer, to check the word-at-a-time one against.
std::vector<std::pair<size_t, size_t>> NaiveRuns(std::span<const uint64_t> words,
                                                 size_t num_pages) {
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t p = 0; p < num_pages && p / 64 < words.size(); ++p) {
    if (!((words[p / 64] >> (p % 64)) & 1)) continue;
    if (!runs.empty() && runs.back().first + runs.back().second == p) {
      ++runs.back().second;
    } else {
      runs.emplace_back(p, 1);
    }
  }
  return runs;
}

TEST(AtomicBitmap, GeometryRoundsPagesUpAndWordsUp) {
  AtomicBitmap bitmap(65 * kPage + 1, kPage);
  EXPECT_EQ(bitmap.num_pages(), 66u);
  EXPECT_EQ(bitmap.num_words(), 2u);
  EXPECT_EQ(bitmap.page_size(), kPage);
  EXPECT_EQ(bitmap.page_shift(), 12u);
  EXPECT_EQ(bitmap.byte_size(), 65 * kPage + 1);
}

TEST(AtomicBitmap, MarkDirtyMarksEveryPageTheRangeTouches) {
  AtomicBitmap bitmap(16 * kPage, kPage);
  bitmap.MarkDirty(kPage - 1, 2);  // Straddles pages 0 and 1.
  bitmap.MarkDirty(5 * kPage, kPage);  // Exactly page 5.
  for (size_t p = 0; p < 16; ++p) {
    EXPECT_EQ(bitmap.IsPageDirty(p), p == 0 || p == 1 || p == 5) << p;
  }
  EXPECT_EQ(bitmap.CountDirty(), 3u);
}

TEST(AtomicBitmap, ZeroLengthAndOutOfRangeMarksDoNothing) {
  AtomicBitmap bitmap(4 * kPage, kPage);
  bitmap.MarkDirty(kPage, 0);
  bitmap.MarkDirty(kPage + 5, 0);  // Mid-page: must not look like 1 byte.
  bitmap.MarkDirty(0, 0);
  bitmap.MarkDirty(4 * kPage, 100);
  bitmap.MarkDirty(SIZE_MAX - 3, 100);
  bitmap.MarkDirty(SIZE_MAX, 1);
  EXPECT_EQ(bitmap.CountDirty(), 0u);
  EXPECT_FALSE(bitmap.DirtyAt(100 * kPage));
  EXPECT_FALSE(bitmap.IsPageDirty(4));
}

TEST(AtomicBitmap, BytesPastTheEndOfAPartialLastPageAreNotTracked) {
  AtomicBitmap bitmap(2 * kPage + 100, kPage);  // Page 2 holds 100 bytes.
  bitmap.MarkDirty(2 * kPage + 100, 8);  // Just past the end: ignored.
  EXPECT_EQ(bitmap.CountDirty(), 0u);
  bitmap.MarkDirty(2 * kPage + 96, 8);  // Overlaps the last 4 bytes.
  EXPECT_TRUE(bitmap.IsPageDirty(2));
  EXPECT_EQ(bitmap.CountDirty(), 1u);
}

TEST(AtomicBitmap, MarksSkipTheirRmwOnlyWhereMembarrierMakesItSafe) {
  AtomicBitmap bitmap(4 * kPage, kPage);
  EXPECT_EQ(bitmap.skips_set_bits(), core_internal::AsymmetricFenceAvailable());
  AtomicBitmap always(4 * kPage, kPage, AtomicBitmap::SetBits::kAlwaysRmw);
  EXPECT_FALSE(always.skips_set_bits());
  // Both behave the same from the outside.
  for (AtomicBitmap* b : {&bitmap, &always}) {
    b->MarkDirty(kPage, 1);
    b->MarkDirty(kPage + 8, 1);
    b->MarkPageOf(3 * kPage);
    std::vector<uint64_t> out(1);
    size_t taken = 0;
    ASSERT_OK(b->GetAndReset(out, &taken));
    EXPECT_EQ(out[0], 0b1010u);
    EXPECT_EQ(taken, 2u);
    EXPECT_EQ(b->CountDirty(), 0u);
  }
}

TEST(AtomicBitmap, RangePastTheEndIsClippedToTheLastPage) {
  AtomicBitmap bitmap(4 * kPage, kPage);
  bitmap.MarkDirty(3 * kPage, SIZE_MAX);
  EXPECT_EQ(bitmap.CountDirty(), 1u);
  EXPECT_TRUE(bitmap.IsPageDirty(3));
}

TEST(AtomicBitmap, SetAddrRangeAcrossManyWordsMarksExactlyThoseWords) {
  AtomicBitmap bitmap(1024 * kPage, kPage);
  bitmap.SetAddrRange(60 * kPage, 200 * kPage);  // Pages 60..259.
  EXPECT_EQ(bitmap.CountDirty(), 200u);
  EXPECT_FALSE(bitmap.IsPageDirty(59));
  EXPECT_TRUE(bitmap.IsPageDirty(60));
  EXPECT_TRUE(bitmap.IsPageDirty(259));
  EXPECT_FALSE(bitmap.IsPageDirty(260));
}

TEST(AtomicBitmap, ResetAddrRangeClearsOnlyThatRange) {
  AtomicBitmap bitmap(256 * kPage, kPage);
  bitmap.SetAddrRange(0, 256 * kPage);
  bitmap.ResetAddrRange(10 * kPage + 1, 100 * kPage);  // Pages 10..110.
  EXPECT_EQ(bitmap.CountDirty(), 256u - 101u);
  EXPECT_TRUE(bitmap.IsPageDirty(9));
  EXPECT_FALSE(bitmap.IsPageDirty(10));
  EXPECT_FALSE(bitmap.IsPageDirty(110));
  EXPECT_TRUE(bitmap.IsPageDirty(111));
  bitmap.ResetAddrRange(0, 0);
  bitmap.ResetAddrRange(1000 * kPage, kPage);
  EXPECT_EQ(bitmap.CountDirty(), 256u - 101u);
}

TEST(AtomicBitmap, ResetWithAHugeLengthClipsInsteadOfWrapping) {
  AtomicBitmap bitmap(128 * kPage, kPage);
  bitmap.SetAddrRange(0, 128 * kPage);
  bitmap.ResetAddrRange(kPage, SIZE_MAX - kPage + 1);  // offset + len wraps to 0.
  EXPECT_EQ(bitmap.CountDirty(), 1u);
  EXPECT_TRUE(bitmap.IsPageDirty(0));
  bitmap.SetAddrRange(0, 128 * kPage);
  bitmap.ResetAddrRange(64 * kPage, SIZE_MAX);
  EXPECT_EQ(bitmap.CountDirty(), 64u);
}

TEST(AtomicBitmap, SliceOffsetsThatWouldWrapAreOutOfRange) {
  AtomicBitmap bitmap(4 * kPage, kPage);
  AtomicBitmapSlice slice = bitmap.SliceAt(2 * kPage);
  slice.MarkDirty(SIZE_MAX - kPage, 8);  // base + offset wraps to page 0.
  EXPECT_EQ(bitmap.CountDirty(), 0u);
  bitmap.MarkDirty(0, 1);
  EXPECT_FALSE(slice.DirtyAt(SIZE_MAX - 2 * kPage + 1));
}

TEST(AtomicBitmap, GetAndResetReturnsMarkedPagesAndClearsThem) {
  AtomicBitmap bitmap(130 * kPage, kPage);
  bitmap.MarkDirty(0, 1);
  bitmap.MarkDirty(64 * kPage, 1);
  bitmap.MarkDirty(129 * kPage, 1);
  std::vector<uint64_t> words(bitmap.num_words(), 0xdeadbeef);
  size_t pages = 0;
  ASSERT_THAT(bitmap.GetAndReset(words, &pages), IsOk());
  EXPECT_EQ(pages, 3u);
  EXPECT_THAT(words, ElementsAre(1u, 1u, uint64_t{1} << 1));
  EXPECT_EQ(bitmap.CountDirty(), 0u);
  ASSERT_THAT(bitmap.GetAndReset(words, &pages), IsOk());
  EXPECT_EQ(pages, 0u);
  EXPECT_THAT(words, ElementsAre(0u, 0u, 0u));
}

TEST(AtomicBitmap, GetAndResetRefusesAShortBufferAndKeepsTheBits) {
  AtomicBitmap bitmap(130 * kPage, kPage);
  bitmap.MarkDirty(0, 1);
  std::vector<uint64_t> words(2);
  EXPECT_THAT(bitmap.GetAndReset(words),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(bitmap.CountDirty(), 1u);
}

TEST(AtomicBitmap, SnapshotCopiesWithoutClearing) {
  AtomicBitmap bitmap(64 * kPage, kPage);
  bitmap.MarkDirty(3 * kPage, kPage);
  EXPECT_THAT(bitmap.Snapshot(), ElementsAre(uint64_t{1} << 3));
  EXPECT_EQ(bitmap.CountDirty(), 1u);
}

TEST(AtomicBitmap, MergeOrsKvmLayoutWordsAndDropsBitsPastTheEnd) {
  AtomicBitmap bitmap(70 * kPage, kPage);  // 70 pages: word 1 has 6 valid bits.
  bitmap.MarkDirty(0, 1);
  const uint64_t log[2] = {uint64_t{1} << 63, ~uint64_t{0}};
  ASSERT_THAT(bitmap.Merge(log, 2), IsOk());
  EXPECT_TRUE(bitmap.IsPageDirty(0));
  EXPECT_TRUE(bitmap.IsPageDirty(63));
  EXPECT_EQ(bitmap.CountDirty(), 2u + 6u);
  EXPECT_THAT(bitmap.Snapshot(), ElementsAre((uint64_t{1} << 63) | 1, 0x3fu));
}

TEST(AtomicBitmap, MergeRefusesMoreWordsThanTheBitmapHas) {
  AtomicBitmap bitmap(64 * kPage, kPage);
  const uint64_t log[2] = {1, 1};
  EXPECT_THAT(bitmap.Merge(log, 2), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(bitmap.CountDirty(), 0u);
}

TEST(AtomicBitmap, SliceMarksPagesRelativeToItsBase) {
  AtomicBitmap bitmap(16 * kPage, kPage);
  AtomicBitmapSlice slice = bitmap.SliceAt(3 * kPage + 100);
  slice.MarkDirty(0, 1);
  EXPECT_TRUE(bitmap.IsPageDirty(3));
  AtomicBitmapSlice inner = slice.SliceAt(2 * kPage);
  inner.MarkDirty(0, 1);
  EXPECT_TRUE(bitmap.IsPageDirty(5));
  EXPECT_TRUE(inner.DirtyAt(0));
  EXPECT_FALSE(inner.DirtyAt(kPage));
  EXPECT_EQ(bitmap.CountDirty(), 2u);
}

TEST(AtomicBitmap, LargerPageSizeIsHonoured) {
  AtomicBitmap bitmap(8 << 20, 2 << 20);  // 2 MiB pages.
  EXPECT_EQ(bitmap.num_pages(), 4u);
  bitmap.MarkDirty((2 << 20) + 5, 1);
  EXPECT_TRUE(bitmap.IsPageDirty(1));
  EXPECT_EQ(bitmap.CountDirty(), 1u);
}

TEST(AtomicBitmap, HarvestRunsEmitsMergedRunsAndClears) {
  AtomicBitmap bitmap(300 * kPage, kPage);
  bitmap.SetAddrRange(60 * kPage, 140 * kPage);  // 60..199 crosses 2 words.
  bitmap.MarkDirty(250 * kPage, 1);
  std::vector<uint64_t> scratch(bitmap.num_words());
  std::vector<std::pair<size_t, size_t>> runs;
  size_t pages = 0;
  ASSERT_THAT(bitmap.HarvestRuns(
                  scratch, [&](size_t f, size_t c) { runs.emplace_back(f, c); },
                  &pages),
              IsOk());
  EXPECT_THAT(runs, ElementsAre(Pair(60u, 140u), Pair(250u, 1u)));
  EXPECT_EQ(pages, 141u);
  EXPECT_EQ(bitmap.CountDirty(), 0u);
}

TEST(AtomicBitmap, HarvestRunsMatchesThePageByPageAnswerOnRandomBitmaps) {
  std::mt19937_64 rng(99);
  for (int trial = 0; trial < 100; ++trial) {
    const size_t num_pages = 1 + rng() % (trial % 10 == 0 ? 200000 : 3000);
    AtomicBitmap bitmap(num_pages * kPage, kPage);
    std::vector<uint64_t> expected((num_pages + 63) / 64, 0);
    const int density = static_cast<int>(rng() % 101);
    for (size_t p = 0; p < num_pages; ++p) {
      if (static_cast<int>(rng() % 100) < density) {
        bitmap.MarkDirty(p * kPage, 1);
        expected[p / 64] |= uint64_t{1} << (p % 64);
      }
    }
    std::vector<uint64_t> scratch(bitmap.num_words(), 0xdead);
    std::vector<std::pair<size_t, size_t>> runs;
    ASSERT_THAT(bitmap.HarvestRuns(scratch, [&](size_t f, size_t c) { runs.emplace_back(f, c); }),
                IsOk());
    ASSERT_EQ(runs, NaiveRuns(expected, num_pages)) << "trial " << trial;
    ASSERT_EQ(scratch, expected) << "trial " << trial;
    ASSERT_EQ(bitmap.CountDirty(), 0u);
  }
}

TEST(ForEachDirtyRun, HandlesWordEdgesAndFullWords) {
  const std::vector<uint64_t> words = {
      uint64_t{1} << 63, ~uint64_t{0}, 1, 0, ~uint64_t{0}, uint64_t{1} << 63};
  EXPECT_THAT(Runs(words, 6 * 64),
              ElementsAre(Pair(63u, 66u), Pair(256u, 64u), Pair(383u, 1u)));
  // A run that reaches the last word and the end of the bitmap.
  EXPECT_THAT(Runs(std::vector<uint64_t>{~uint64_t{0}, ~uint64_t{0}}, 128),
              ElementsAre(Pair(0u, 128u)));
  EXPECT_THAT(Runs(std::vector<uint64_t>{0, 0}, 128), ElementsAre());
}

TEST(ForEachDirtyRun, MergesARunAcrossTheScanChunkBoundary) {
  std::vector<uint64_t> words(2048, 0);
  words[1023] = uint64_t{1} << 63;
  words[1024] = 0x3;
  EXPECT_THAT(Runs(words, 2048 * 64), ElementsAre(Pair(1023u * 64 + 63, 3u)));
}

TEST(ForEachDirtyRun, AShortSpanKeepsAllBitsOfItsLastWord) {
  // The span covers only the first word of a 100-page bitmap: its 64 bits
  // are all valid pages, not the bitmap's partial last word.
  EXPECT_THAT(Runs(std::vector<uint64_t>{~uint64_t{0}}, 100),
              ElementsAre(Pair(0u, 64u)));
}

TEST(ForEachDirtyRun, IgnoresBitsPastNumPages) {
  EXPECT_THAT(Runs(std::vector<uint64_t>{~uint64_t{0}}, 10),
              ElementsAre(Pair(0u, 10u)));
  EXPECT_THAT(Runs(std::vector<uint64_t>{0, ~uint64_t{0} << 5}, 69),
              ElementsAre());
}

TEST(ForEachDirtyRun, MatchesThePageByPageAnswerOnRandomBitmaps) {
  std::mt19937_64 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    // Every tenth bitmap spans several 1024-word scan chunks.
    const size_t num_pages = 1 + rng() % (trial % 10 == 0 ? 200000 : 5000);
    std::vector<uint64_t> words((num_pages + 63) / 64);
    const int density = static_cast<int>(rng() % 101);
    const bool clustered = trial % 2 == 0;
    size_t p = 0;
    while (p < words.size() * 64) {
      const size_t len = clustered ? 1 + rng() % 200 : 1;
      const bool set = static_cast<int>(rng() % 100) < density;
      for (size_t i = 0; i < len && p < words.size() * 64; ++i, ++p) {
        if (set) words[p / 64] |= uint64_t{1} << (p % 64);
      }
    }
    ASSERT_EQ(Runs(words, num_pages), NaiveRuns(words, num_pages))
        << "trial " << trial << " pages " << num_pages;
  }
}

}  // namespace
}  // namespace livemig
