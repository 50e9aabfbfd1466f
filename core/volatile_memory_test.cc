#include "core/volatile_memory.h"

#include <sys/mman.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_tracker.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;

constexpr size_t kPage = 4096;
constexpr size_t kPages = 8;
constexpr size_t kSize = kPages * kPage;
constexpr size_t kMax = std::numeric_limits<size_t>::max();

// An owned anonymous mapping plus tracker, shaped like MmapRegion<B> for the
// VolatileMemory mixin (this target does not depend on :mmap_region).
template <DirtyTracker B>
class TestRegion : public VolatileMemory<TestRegion<B>, typename B::Slice> {
 public:
  explicit TestRegion(size_t size) : size_(size), bitmap_(size, kPage) {
    void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) {
      std::perror("mmap");
      std::abort();
    }
    addr_ = static_cast<uint8_t*>(addr);
  }
  ~TestRegion() { ::munmap(addr_, size_); }
  TestRegion(const TestRegion&) = delete;
  TestRegion& operator=(const TestRegion&) = delete;

  uint8_t* as_ptr() const { return addr_; }
  const B& bitmap() const { return bitmap_; }
  size_t len() const { return size_; }
  uint8_t* volatile_base() const { return addr_; }
  typename B::Slice volatile_tracker() const { return bitmap_.SliceAt(0); }

 private:
  uint8_t* addr_ = nullptr;
  size_t size_;
  B bitmap_;
};

// Pages [0, kPages) of `bitmap` that are dirty.
std::vector<size_t> DirtyPages(const AtomicBitmap& bitmap) {
  std::vector<size_t> pages;
  for (size_t p = 0; p < kPages; ++p) {
    if (bitmap.DirtyAt(p * kPage)) pages.push_back(p);
  }
  return pages;
}

// --- The bounds/data contract, run against both trackers. ---

template <typename B>
class VolatileAccess : public ::testing::Test {
 protected:
  TestRegion<B> region_{kSize};
};
using Trackers = ::testing::Types<NoBitmap, AtomicBitmap>;
TYPED_TEST_SUITE(VolatileAccess, Trackers);

TYPED_TEST(VolatileAccess, GetSliceInsideReturnsThatRange) {
  ASSERT_OK_AND_ASSIGN(auto slice, this->region_.GetSlice(100, 200));
  EXPECT_EQ(slice.len(), 200u);
  EXPECT_EQ(slice.as_ptr(), this->region_.as_ptr() + 100);
  ASSERT_OK_AND_ASSIGN(auto empty_at_end, this->region_.GetSlice(kSize, 0));
  EXPECT_TRUE(empty_at_end.is_empty());
}

TYPED_TEST(VolatileAccess, GetSlicePastEndIsOutOfRange) {
  EXPECT_THAT(this->region_.GetSlice(kSize - 10, 11),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.GetSlice(kSize + 1, 0),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TYPED_TEST(VolatileAccess, GetSliceOverflowingSizeMaxIsInvalidArgument) {
  EXPECT_THAT(this->region_.GetSlice(1, kMax),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->region_.GetSlice(kMax, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TYPED_TEST(VolatileAccess, ComputeEndOffsetChecksEndAndOverflow) {
  ASSERT_OK_AND_ASSIGN(size_t end, this->region_.ComputeEndOffset(10, 20));
  EXPECT_EQ(end, 30u);
  ASSERT_OK_AND_ASSIGN(size_t full, this->region_.ComputeEndOffset(0, kSize));
  EXPECT_EQ(full, kSize);
  EXPECT_THAT(this->region_.ComputeEndOffset(kSize, 1),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.ComputeEndOffset(kMax - 1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TYPED_TEST(VolatileAccess, AsVolatileSliceCoversTheWholeRegion) {
  auto slice = this->region_.AsVolatileSlice();
  EXPECT_EQ(slice.len(), kSize);
  EXPECT_EQ(slice.as_ptr(), this->region_.as_ptr());
  EXPECT_FALSE(slice.is_empty());
}

TYPED_TEST(VolatileAccess, SubSliceAndOffsetAddTheirOffsets) {
  ASSERT_OK_AND_ASSIGN(auto outer, this->region_.GetSlice(1000, 500));
  ASSERT_OK_AND_ASSIGN(auto inner, outer.SubSlice(100, 50));
  EXPECT_EQ(inner.as_ptr(), this->region_.as_ptr() + 1100);
  EXPECT_EQ(inner.len(), 50u);
  ASSERT_OK_AND_ASSIGN(auto tail, outer.Offset(400));
  EXPECT_EQ(tail.as_ptr(), this->region_.as_ptr() + 1400);
  EXPECT_EQ(tail.len(), 100u);
  ASSERT_OK_AND_ASSIGN(auto none, outer.Offset(500));
  EXPECT_TRUE(none.is_empty());
  EXPECT_THAT(outer.SubSlice(450, 51), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(outer.Offset(501), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(outer.SubSlice(2, kMax),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TYPED_TEST(VolatileAccess, ReadReturnsExactlyWhatWriteStored) {
  std::array<uint8_t, 5> in = {1, 2, 3, 4, 5};
  ASSERT_OK(this->region_.Write(in, kPage - 2));
  std::array<uint8_t, 5> out = {};
  ASSERT_OK(this->region_.Read(out, kPage - 2));
  EXPECT_EQ(out, in);
  EXPECT_EQ(this->region_.as_ptr()[kPage - 3], 0);
  EXPECT_EQ(this->region_.as_ptr()[kPage + 3], 0);
}

TYPED_TEST(VolatileAccess, WritePastEndIsOutOfRangeAndWritesNothing) {
  std::array<uint8_t, 8> in;
  in.fill(0xEE);
  EXPECT_THAT(this->region_.Write(in, kSize - 4),
              StatusIs(absl::StatusCode::kOutOfRange));
  for (size_t i = kSize - 4; i < kSize; ++i) {
    EXPECT_EQ(this->region_.as_ptr()[i], 0) << "byte " << i;
  }
  EXPECT_THAT(this->region_.Write(in, kMax - 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TYPED_TEST(VolatileAccess, ReadPastEndIsOutOfRangeAndLeavesBufferAlone) {
  std::array<uint8_t, 8> out;
  out.fill(0x77);
  EXPECT_THAT(this->region_.Read(out, kSize - 7),
              StatusIs(absl::StatusCode::kOutOfRange));
  for (uint8_t b : out) EXPECT_EQ(b, 0x77);
}

TYPED_TEST(VolatileAccess, ObjectsRoundTripAlignedUnalignedAndAtTheEnd) {
  for (size_t offset : {size_t{8}, size_t{3}, kPage - 4, kSize - 8}) {
    const uint64_t value = 0x0102030405060708ull + offset;
    ASSERT_OK(this->region_.WriteObj(value, offset));
    ASSERT_OK_AND_ASSIGN(uint64_t read, this->region_.template ReadObj<uint64_t>(offset));
    EXPECT_EQ(read, value) << "offset " << offset;
  }
}

TYPED_TEST(VolatileAccess, ObjectOnePastTheLastValidOffsetIsOutOfRange) {
  EXPECT_THAT(this->region_.template ReadObj<uint64_t>(kSize - 7),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.WriteObj(uint64_t{1}, kSize - 7),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.template ReadObj<uint8_t>(kSize),
              StatusIs(absl::StatusCode::kOutOfRange));
  for (size_t i = kSize - 7; i < kSize; ++i) {
    EXPECT_EQ(this->region_.as_ptr()[i], 0);
  }
}

TYPED_TEST(VolatileAccess, GetRefLoadsAndStores) {
  ASSERT_OK_AND_ASSIGN(auto ref, this->region_.template GetRef<uint32_t>(kPage + 1));
  ref.Store(0xDEADBEEF);
  EXPECT_EQ(ref.Load(), 0xDEADBEEFu);
  EXPECT_EQ(ref.as_ptr(), this->region_.as_ptr() + kPage + 1);
  ASSERT_OK_AND_ASSIGN(uint32_t via_obj,
                       this->region_.template ReadObj<uint32_t>(kPage + 1));
  EXPECT_EQ(via_obj, 0xDEADBEEFu);
  EXPECT_EQ(ref.ToSlice().len(), sizeof(uint32_t));
  EXPECT_THAT(this->region_.template GetRef<uint32_t>(kSize - 3),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.template GetRef<uint32_t>(kMax - 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TYPED_TEST(VolatileAccess, ArrayRefLoadStoreRefAndCopies) {
  ASSERT_OK_AND_ASSIGN(auto array,
                       this->region_.template GetArrayRef<uint16_t>(10, 4));
  EXPECT_EQ(array.len(), 4u);
  ASSERT_OK(array.Store(2, 0xABCD));
  ASSERT_OK_AND_ASSIGN(uint16_t two, array.Load(2));
  EXPECT_EQ(two, 0xABCD);
  ASSERT_OK_AND_ASSIGN(auto ref3, array.Ref(3));
  ref3.Store(0x1234);
  EXPECT_EQ(ref3.as_ptr(), this->region_.as_ptr() + 10 + 3 * 2);

  const std::array<uint16_t, 6> in = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(array.CopyFrom(in), 4u);  // min(len, in.size())
  std::array<uint16_t, 6> out = {9, 9, 9, 9, 9, 9};
  EXPECT_EQ(array.CopyTo(out), 4u);
  EXPECT_THAT(out, ::testing::ElementsAre(1, 2, 3, 4, 9, 9));
  std::array<uint16_t, 2> small = {};
  EXPECT_EQ(array.CopyTo(small), 2u);
  EXPECT_THAT(small, ::testing::ElementsAre(1, 2));
  EXPECT_EQ(array.CopyFrom(std::span<const uint16_t>(in).subspan(4)), 2u);
  ASSERT_OK_AND_ASSIGN(uint16_t zero, array.Load(0));
  EXPECT_EQ(zero, 5);
  ASSERT_OK_AND_ASSIGN(uint16_t two_again, array.Load(2));
  EXPECT_EQ(two_again, 3);  // Untouched by the short CopyFrom.
  EXPECT_EQ(array.ToSlice().len(), 8u);
}

TYPED_TEST(VolatileAccess, ArrayIndexPastEndIsOutOfRange) {
  ASSERT_OK_AND_ASSIGN(auto array,
                       this->region_.template GetArrayRef<uint32_t>(0, 3));
  EXPECT_THAT(array.Ref(3), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(array.Load(3), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(array.Store(3, 7), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(this->region_.as_ptr()[12], 0);
}

TYPED_TEST(VolatileAccess, ArrayPastEndOrOverflowingIsRefused) {
  EXPECT_THAT(this->region_.template GetArrayRef<uint32_t>(kSize - 8, 3),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(this->region_.template GetArrayRef<uint64_t>(0, kMax / 8 + 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->region_.template GetArrayRef<uint8_t>(1, kMax),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(auto whole,
                       this->region_.template GetArrayRef<uint64_t>(0, kSize / 8));
  EXPECT_EQ(whole.len(), kSize / 8);
}

TYPED_TEST(VolatileAccess, AlignedAccessRefusesMisalignedOffsets) {
  EXPECT_THAT(this->region_.template AlignedAsRef<uint64_t>(4),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->region_.template AlignedAsMut<uint32_t>(kPage + 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->region_.template AlignedAsRef<uint64_t>(kSize),
              StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_OK_AND_ASSIGN(uint64_t* mut,
                       this->region_.template AlignedAsMut<uint64_t>(16));
  *mut = 42;
  ASSERT_OK_AND_ASSIGN(const uint64_t* ref,
                       this->region_.template AlignedAsRef<uint64_t>(16));
  EXPECT_EQ(ref, mut);
  EXPECT_EQ(*ref, 42u);
}

TYPED_TEST(VolatileAccess, AtomicRefRefusesMisalignedAndPastEnd) {
  EXPECT_THAT(this->region_.template GetAtomicRef<uint32_t>(2),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->region_.template GetAtomicRef<uint64_t>(kSize),
              StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_OK_AND_ASSIGN(auto atomic,
                       this->region_.template GetAtomicRef<uint64_t>(kSize - 8));
  atomic.Store(3);
  EXPECT_EQ(atomic.FetchAdd(4), 3u);
  EXPECT_EQ(atomic.FetchOr(0x100), 7u);
  EXPECT_EQ(atomic.Exchange(1), 0x107u);
  uint64_t expected = 1;
  EXPECT_TRUE(atomic.CompareExchange(expected, 2));
  expected = 5;
  EXPECT_FALSE(atomic.CompareExchange(expected, 9));
  EXPECT_EQ(expected, 2u);
  EXPECT_EQ(atomic.Load(), 2u);
}

TYPED_TEST(VolatileAccess, FillSetsExactlyTheSlice) {
  ASSERT_OK_AND_ASSIGN(auto slice, this->region_.GetSlice(kPage - 1, 3));
  slice.Fill(0xAB);
  const uint8_t* p = this->region_.as_ptr();
  EXPECT_EQ(p[kPage - 2], 0);
  EXPECT_EQ(p[kPage - 1], 0xAB);
  EXPECT_EQ(p[kPage], 0xAB);
  EXPECT_EQ(p[kPage + 1], 0xAB);
  EXPECT_EQ(p[kPage + 2], 0);
}

TYPED_TEST(VolatileAccess, SliceCopiesUseTheShorterLength) {
  ASSERT_OK_AND_ASSIGN(auto slice, this->region_.GetSlice(0, 4));
  const std::array<uint8_t, 6> in = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(slice.CopyFrom(in), 4u);
  EXPECT_EQ(this->region_.as_ptr()[4], 0);
  std::array<uint8_t, 6> out = {};
  EXPECT_EQ(slice.CopyTo(out), 4u);
  EXPECT_THAT(out, ::testing::ElementsAre(1, 2, 3, 4, 0, 0));
  std::array<uint8_t, 2> small = {};
  EXPECT_EQ(slice.CopyTo(small), 2u);
  EXPECT_THAT(small, ::testing::ElementsAre(1, 2));

  ASSERT_OK_AND_ASSIGN(auto long_dst, this->region_.GetSlice(100, 10));
  EXPECT_EQ(slice.CopyToSlice(long_dst), 4u);
  EXPECT_EQ(this->region_.as_ptr()[103], 4);
  EXPECT_EQ(this->region_.as_ptr()[104], 0);
  ASSERT_OK_AND_ASSIGN(auto short_dst, this->region_.GetSlice(200, 3));
  EXPECT_EQ(slice.CopyToSlice(short_dst), 3u);
  EXPECT_EQ(this->region_.as_ptr()[202], 3);
  EXPECT_EQ(this->region_.as_ptr()[203], 0);
}

// --- Dirty tracking (AtomicBitmap). ---

class VolatileTracking : public ::testing::Test {
 protected:
  const AtomicBitmap& bitmap() const { return region_.bitmap(); }
  TestRegion<AtomicBitmap> region_{kSize};
};

TEST_F(VolatileTracking, WriteMarksOnlyThePageWritten) {
  const std::array<uint8_t, 10> in = {1};
  ASSERT_OK(region_.Write(in, 2 * kPage + 100));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2));
  EXPECT_EQ(bitmap().CountDirty(), 1u);
}

TEST_F(VolatileTracking, WriteSpanningAPageBoundaryMarksBothPages) {
  const std::array<uint8_t, 8> in = {1};
  ASSERT_OK(region_.Write(in, kPage - 4));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(0, 1));
  ASSERT_OK(region_.WriteObj(uint64_t{7}, 4 * kPage - 3));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(0, 1, 3, 4));
  EXPECT_EQ(bitmap().CountDirty(), 4u);
}

TEST_F(VolatileTracking, RefusedOrEmptyWritesMarkNothing) {
  const std::array<uint8_t, 8> in = {1};
  EXPECT_THAT(region_.Write(in, kSize - 4),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(region_.WriteObj(uint64_t{1}, kSize - 4),
              StatusIs(absl::StatusCode::kOutOfRange));
  ASSERT_OK(region_.Write(std::span<const uint8_t>(in).first(0), kPage));
  ASSERT_OK_AND_ASSIGN(auto empty, region_.GetSlice(kPage, 0));
  empty.Fill(1);
  EXPECT_EQ(empty.CopyFrom(in), 0u);
  EXPECT_EQ(bitmap().CountDirty(), 0u);
}

TEST_F(VolatileTracking, EmptyDefaultSpansAreNoOps) {
  ASSERT_OK(region_.Write(std::span<const uint8_t>(), kPage));
  ASSERT_OK(region_.Read(std::span<uint8_t>(), kPage));
  auto slice = region_.AsVolatileSlice();
  EXPECT_EQ(slice.CopyFrom(std::span<const uint8_t>()), 0u);
  EXPECT_EQ(slice.CopyTo(std::span<uint8_t>()), 0u);
  EXPECT_EQ(bitmap().CountDirty(), 0u);
}

TEST_F(VolatileTracking, SubSliceMarksItsOwnPageNotPageZero) {
  ASSERT_OK_AND_ASSIGN(auto slice, region_.GetSlice(3 * kPage + 10, 100));
  ASSERT_OK(slice.WriteObj(uint32_t{5}, 0));
  EXPECT_FALSE(bitmap().DirtyAt(0));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(3));
  EXPECT_EQ(region_.as_ptr()[3 * kPage + 10], 5);
}

TEST_F(VolatileTracking, NestedSliceAndOffsetMarkTheRightPage) {
  ASSERT_OK_AND_ASSIGN(auto outer, region_.GetSlice(kPage, 4 * kPage));
  ASSERT_OK_AND_ASSIGN(auto inner, outer.SubSlice(kPage, kPage));
  ASSERT_OK(inner.WriteObj(uint8_t{1}, 0));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2));
  ASSERT_OK_AND_ASSIGN(auto tail, outer.Offset(3 * kPage + 1));
  const std::array<uint8_t, 1> in = {1};
  ASSERT_OK(tail.Write(in, 0));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2, 4));
}

TEST_F(VolatileTracking, AsVolatileSliceWritesMark) {
  auto slice = region_.AsVolatileSlice();
  ASSERT_OK(slice.WriteObj(uint16_t{1}, 6 * kPage));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(6));
}

TEST_F(VolatileTracking, RefAndArrayStoresMarkTheElementsPage) {
  ASSERT_OK_AND_ASSIGN(auto ref, region_.GetRef<uint64_t>(2 * kPage + 4));
  ref.Store(1);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2));
  // Elements 0..3 of uint32_t at 5*kPage - 8: elements 2 and 3 are on page 5.
  ASSERT_OK_AND_ASSIGN(auto array, region_.GetArrayRef<uint32_t>(5 * kPage - 8, 4));
  ASSERT_OK(array.Store(2, 1));
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2, 5));
  ASSERT_OK_AND_ASSIGN(auto ref1, array.Ref(1));
  ref1.Store(1);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2, 4, 5));
  EXPECT_THAT(array.Store(4, 1), StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_EQ(bitmap().CountDirty(), 3u);
}

TEST_F(VolatileTracking, ArrayCopyFromMarksOnlyTheCopiedElements) {
  ASSERT_OK_AND_ASSIGN(auto array, region_.GetArrayRef<uint64_t>(kPage - 16, 4));
  const std::array<uint64_t, 2> in = {1, 2};
  EXPECT_EQ(array.CopyFrom(in), 2u);  // Bytes [kPage-16, kPage): page 0 only.
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(0));
  const std::array<uint64_t, 4> all = {1, 2, 3, 4};
  EXPECT_EQ(array.CopyFrom(all), 4u);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(0, 1));
}

TEST_F(VolatileTracking, AtomicModificationsMarkAndFailedCompareExchangeDoesNot) {
  ASSERT_OK_AND_ASSIGN(auto a1, region_.GetAtomicRef<uint64_t>(1 * kPage + 8));
  ASSERT_OK_AND_ASSIGN(auto a2, region_.GetAtomicRef<uint32_t>(2 * kPage + 4));
  ASSERT_OK_AND_ASSIGN(auto a3, region_.GetAtomicRef<uint16_t>(3 * kPage + 2));
  ASSERT_OK_AND_ASSIGN(auto a4, region_.GetAtomicRef<uint64_t>(4 * kPage));
  ASSERT_OK_AND_ASSIGN(auto a5, region_.GetAtomicRef<uint8_t>(5 * kPage + 1));
  EXPECT_EQ(a1.FetchAdd(1), 0u);
  a2.Store(1);
  uint16_t expected = 0;
  EXPECT_TRUE(a3.CompareExchange(expected, 1));
  EXPECT_EQ(a4.Load(), 0u);  // Loads do not mark.
  uint64_t wrong = 99;
  EXPECT_FALSE(a4.CompareExchange(wrong, 1));
  EXPECT_EQ(a4.Load(), 0u);
  EXPECT_EQ(a5.Exchange(1), 0u);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(1, 2, 3, 5));
}

TEST_F(VolatileTracking, FillMarksExactlyTheFilledPages) {
  ASSERT_OK_AND_ASSIGN(auto slice, region_.GetSlice(2 * kPage + 1, 2 * kPage));
  slice.Fill(0xFF);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(2, 3, 4));
}

TEST_F(VolatileTracking, SliceCopiesMarkTheDestinationOnly) {
  ASSERT_OK_AND_ASSIGN(auto src, region_.GetSlice(1 * kPage, 100));
  ASSERT_OK_AND_ASSIGN(auto dst, region_.GetSlice(6 * kPage - 10, 50));
  EXPECT_EQ(src.CopyToSlice(dst), 50u);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(5, 6));
  std::array<uint8_t, 8> buf = {};
  EXPECT_EQ(src.CopyTo(buf), 8u);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(5, 6));
  ASSERT_OK_AND_ASSIGN(auto small, region_.GetSlice(7 * kPage, 4));
  EXPECT_EQ(small.CopyFrom(buf), 4u);
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(5, 6, 7));
}

TEST_F(VolatileTracking, ReadsNeverMark) {
  std::array<uint8_t, 64> buf = {};
  ASSERT_OK(region_.Read(buf, kPage - 32));
  ASSERT_OK(region_.ReadObj<uint64_t>(3 * kPage).status());
  ASSERT_OK_AND_ASSIGN(auto ref, region_.GetRef<uint32_t>(2 * kPage));
  EXPECT_EQ(ref.Load(), 0u);
  ASSERT_OK_AND_ASSIGN(auto array, region_.GetArrayRef<uint8_t>(4 * kPage, 16));
  ASSERT_OK(array.Load(15).status());
  EXPECT_EQ(array.CopyTo(buf), 16u);
  ASSERT_OK_AND_ASSIGN(auto slice, region_.GetSlice(5 * kPage, kPage));
  EXPECT_EQ(slice.CopyTo(buf), buf.size());
  ASSERT_OK_AND_ASSIGN(const uint64_t* ptr, region_.AlignedAsRef<uint64_t>(6 * kPage));
  EXPECT_EQ(*ptr, 0u);
  EXPECT_EQ(bitmap().CountDirty(), 0u);
}

TEST_F(VolatileTracking, RawPointerWritesAreNotTracked) {
  region_.as_ptr()[0] = 1;
  ASSERT_OK_AND_ASSIGN(auto slice, region_.GetSlice(kPage, 10));
  slice.as_ptr()[0] = 1;
  ASSERT_OK_AND_ASSIGN(auto ref, region_.GetRef<uint8_t>(2 * kPage));
  ref.as_ptr()[0] = 1;
  ASSERT_OK_AND_ASSIGN(uint64_t* mut, region_.AlignedAsMut<uint64_t>(3 * kPage));
  *mut = 1;
  EXPECT_EQ(bitmap().CountDirty(), 0u);
  ASSERT_OK_AND_ASSIGN(uint8_t seen, region_.ReadObj<uint8_t>(2 * kPage));
  EXPECT_EQ(seen, 1);
}

TEST_F(VolatileTracking, ConcurrentFetchAddsAreNotLostAndMark) {
  ASSERT_OK_AND_ASSIGN(auto counter, region_.GetAtomicRef<uint64_t>(kPage));
  constexpr int kThreads = 4;
  constexpr int kAdds = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([counter] {
      for (int i = 0; i < kAdds; ++i) counter.FetchAdd(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter.Load(), uint64_t{kThreads * kAdds});
  EXPECT_THAT(DirtyPages(bitmap()), ::testing::ElementsAre(1));
}

TEST(VolatileSliceNoBitmap, NoBitmapSliceNeverReportsDirty) {
  TestRegion<NoBitmap> region(kSize);
  ASSERT_OK(region.WriteObj(uint32_t{9}, kPage));
  auto slice = region.AsVolatileSlice();
  slice.Fill(1);
  EXPECT_FALSE(slice.bitmap().DirtyAt(kPage));
  ASSERT_OK_AND_ASSIGN(uint32_t v, region.ReadObj<uint32_t>(kPage));
  EXPECT_EQ(v, 0x01010101u);
}

}  // namespace
}  // namespace livemig
