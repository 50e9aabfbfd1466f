// One contract suite, run against every dirty tracker (as vm-memory does for
// every `Bitmap`): the rules written in core/dirty_tracker.h.
#include <cstdint>
#include <thread>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/dirty_tracker.h"
#include "core/mmap_region.h"
#include "core/testing/always_rmw_bitmap.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kPages = 200;  // Several 64-page words, last one partial.

template <typename B>
struct Traits;
template <>
struct Traits<NoBitmap> {
  static constexpr bool kTracks = false;
};
template <>
struct Traits<AtomicBitmap> {
  static constexpr bool kTracks = true;
};
template <>
struct Traits<testing::AlwaysRmwBitmap> {
  static constexpr bool kTracks = true;
};

template <typename B>
class DirtyTrackerContract : public ::testing::Test {
 protected:
  static constexpr bool kTracks = Traits<B>::kTracks;
  B tracker_{kPages * kPage, kPage};
};

using Trackers =
    ::testing::Types<NoBitmap, AtomicBitmap, testing::AlwaysRmwBitmap>;
TYPED_TEST_SUITE(DirtyTrackerContract, Trackers);

TYPED_TEST(DirtyTrackerContract, MarkedPagesReadDirtyIffTheTrackerTracks) {
  this->tracker_.MarkDirty(7 * kPage + 5, 1);
  EXPECT_EQ(this->tracker_.DirtyAt(7 * kPage), this->kTracks);
  EXPECT_EQ(this->tracker_.DirtyAt(7 * kPage + kPage - 1), this->kTracks);
  EXPECT_FALSE(this->tracker_.DirtyAt(6 * kPage));
  EXPECT_FALSE(this->tracker_.DirtyAt(8 * kPage));
}

TYPED_TEST(DirtyTrackerContract, ARangeMarksEveryPageItIntersects) {
  this->tracker_.MarkDirty(10 * kPage - 1, kPage + 2);  // Pages 9, 10, 11.
  for (size_t p = 8; p <= 12; ++p) {
    EXPECT_EQ(this->tracker_.DirtyAt(p * kPage),
              this->kTracks && p >= 9 && p <= 11)
        << "page " << p;
  }
}

TYPED_TEST(DirtyTrackerContract, MarkPageOfMarksExactlyThePageHoldingTheByte) {
  this->tracker_.MarkPageOf(64 * kPage - 1);  // Last byte of page 63.
  this->tracker_.MarkPageOf(kPages * kPage - 1);  // Last byte tracked.
  for (size_t p = 0; p < kPages; ++p) {
    EXPECT_EQ(this->tracker_.DirtyAt(p * kPage),
              this->kTracks && (p == 63 || p == kPages - 1))
        << "page " << p;
  }
}

TYPED_TEST(DirtyTrackerContract, MarkingTwiceKeepsThePageMarkedOnce) {
  this->tracker_.MarkDirty(9 * kPage, 8);
  this->tracker_.MarkDirty(9 * kPage + 8, 8);  // Bit already set.
  this->tracker_.MarkPageOf(9 * kPage + 16);
  EXPECT_EQ(this->tracker_.DirtyAt(9 * kPage), this->kTracks);
  EXPECT_FALSE(this->tracker_.DirtyAt(10 * kPage));
}

TYPED_TEST(DirtyTrackerContract, ZeroLengthMarksNothing) {
  this->tracker_.MarkDirty(3 * kPage, 0);
  EXPECT_FALSE(this->tracker_.DirtyAt(3 * kPage));
}

TYPED_TEST(DirtyTrackerContract, OutOfRangeMarksAreIgnoredAndNeverDirty) {
  this->tracker_.MarkDirty(kPages * kPage, kPage);
  this->tracker_.MarkDirty(SIZE_MAX, SIZE_MAX);
  EXPECT_FALSE(this->tracker_.DirtyAt(kPages * kPage));
  EXPECT_FALSE(this->tracker_.DirtyAt(SIZE_MAX));
  for (size_t p = 0; p < kPages; ++p) {
    ASSERT_FALSE(this->tracker_.DirtyAt(p * kPage)) << "page " << p;
  }
}

TYPED_TEST(DirtyTrackerContract, SlicesMarkAtTheirOffsetAndNest) {
  auto slice = this->tracker_.SliceAt(20 * kPage);
  slice.MarkDirty(kPage, 1);  // Page 21 of the parent.
  EXPECT_EQ(this->tracker_.DirtyAt(21 * kPage), this->kTracks);
  EXPECT_FALSE(this->tracker_.DirtyAt(kPage));
  auto inner = slice.SliceAt(3 * kPage);  // Parent page 23.
  inner.MarkDirty(0, 1);
  EXPECT_EQ(this->tracker_.DirtyAt(23 * kPage), this->kTracks);
  EXPECT_EQ(inner.DirtyAt(0), this->kTracks);
  EXPECT_EQ(slice.DirtyAt(3 * kPage), this->kTracks);
}

TYPED_TEST(DirtyTrackerContract, RegionWritesMarkAndReadsDoNot) {
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<TypeParam>::Create(kPages * kPage));
  ASSERT_OK(region.template WriteObj<uint32_t>(0xabcd, 5 * kPage + 8));
  ASSERT_OK_AND_ASSIGN(uint32_t value, region.template ReadObj<uint32_t>(40 * kPage));
  EXPECT_EQ(value, 0u);
  EXPECT_EQ(region.bitmap().DirtyAt(5 * kPage), this->kTracks);
  EXPECT_FALSE(region.bitmap().DirtyAt(40 * kPage));
  ASSERT_OK_AND_ASSIGN(uint32_t back, region.template ReadObj<uint32_t>(5 * kPage + 8));
  EXPECT_EQ(back, 0xabcdu);
}

TYPED_TEST(DirtyTrackerContract, ConcurrentMarksFromManyThreadsAllLand) {
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (size_t p = t; p < kPages; p += 4) this->tracker_.MarkDirty(p * kPage, 1);
    });
  }
  for (auto& th : threads) th.join();
  for (size_t p = 0; p < kPages; ++p) {
    ASSERT_EQ(this->tracker_.DirtyAt(p * kPage), this->kTracks) << "page " << p;
  }
}

}  // namespace
}  // namespace livemig
