#include "core/guest_memory.h"

#include <array>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr size_t kPage = 4096;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

using Region = GuestRegion<AtomicBitmap>;
using Memory = GuestMemory<AtomicBitmap>;

absl::StatusOr<Region> MakeRegion(uint64_t start, size_t pages) {
  absl::StatusOr<MmapRegion<AtomicBitmap>> mmap =
      MmapRegion<AtomicBitmap>::Create(pages * kPage);
  if (!mmap.ok()) return mmap.status();
  return Region::Create(std::move(*mmap), GuestAddress(start));
}

// Builds guest memory from (start, pages) pairs, in the order given.
absl::StatusOr<Memory> MakeMemory(
    std::vector<std::pair<uint64_t, size_t>> layout) {
  std::vector<Region> regions;
  for (const auto& [start, pages] : layout) {
    absl::StatusOr<Region> region = MakeRegion(start, pages);
    if (!region.ok()) return region.status();
    regions.push_back(std::move(*region));
  }
  return Memory::FromRegions(std::move(regions));
}

// The standard layout: A = [0x1000, 0x3000), B = [0x3000, 0x4000) adjacent to
// A, a gap [0x4000, 0x8000), C = [0x8000, 0xa000).
absl::StatusOr<Memory> StandardMemory() {
  return MakeMemory({{0x1000, 2}, {0x3000, 1}, {0x8000, 2}});
}

bool AllZero(const Region& r, size_t offset, size_t len) {
  for (size_t i = offset; i < offset + len; ++i) {
    if (r.region().as_ptr()[i] != 0) return false;
  }
  return true;
}

TEST(GuestMemory, NoRegionsIsRefusedWithInvalidArgument) {
  EXPECT_THAT(Memory::FromRegions({}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemory, OverlappingRegionsAreRefusedNamingTheirAddresses) {
  EXPECT_THAT(MakeMemory({{0x0, 2}, {0x1000, 2}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "[0x1000, 0x2fff]"));
  EXPECT_THAT(MakeMemory({{0x0, 2}, {0x1000, 2}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "[0x0, 0x1fff]"));
  EXPECT_THAT(MakeMemory({{0x5000, 1}, {0x5000, 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Overlap detected even when given out of order.
  EXPECT_THAT(MakeMemory({{0x9000, 1}, {0x0, 1}, {0x8000, 2}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemory, AdjacentRegionsAreAccepted) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0x0, 1}, {0x1000, 2}}));
  EXPECT_EQ(memory.num_regions(), 2u);
  EXPECT_EQ(memory.total_size(), 3 * kPage);
}

TEST(GuestMemory, RegionsGivenUnsortedComeOutSorted) {
  ASSERT_OK_AND_ASSIGN(Memory memory,
                       MakeMemory({{0x10000, 1}, {0x0, 2}, {0x5000, 3}}));
  ASSERT_EQ(memory.num_regions(), 3u);
  EXPECT_EQ(memory.region(0).start_addr(), GuestAddress(0x0));
  EXPECT_EQ(memory.region(1).start_addr(), GuestAddress(0x5000));
  EXPECT_EQ(memory.region(2).start_addr(), GuestAddress(0x10000));
  EXPECT_EQ(memory.regions()[1].len(), 3 * kPage);
  EXPECT_EQ(memory.total_size(), 6 * kPage);
}

TEST(GuestRegion, StartNearTheTopOfTheAddressSpaceIsRefusedWithInvalidArgument) {
  EXPECT_THAT(MakeRegion(kMax - kPage + 2, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeRegion(kMax, 1), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeRegion(kMax - kPage + 1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestRegion, RegionEndingExactlyAtTheTopIsAccepted) {
  ASSERT_OK_AND_ASSIGN(Region region, MakeRegion(kMax - kPage + 1, 1));
  EXPECT_EQ(region.last_addr(), GuestAddress(kMax));
  EXPECT_TRUE(region.Contains(GuestAddress(kMax)));
  EXPECT_EQ(region.OffsetOf(GuestAddress(kMax)), kPage - 1);
}

TEST(GuestRegion, AccessorsDescribeThePlacement) {
  ASSERT_OK_AND_ASSIGN(Region region, MakeRegion(0x4000, 2));
  EXPECT_EQ(region.start_addr(), GuestAddress(0x4000));
  EXPECT_EQ(region.last_addr(), GuestAddress(0x5fff));
  EXPECT_EQ(region.len(), 2 * kPage);
  EXPECT_FALSE(region.Contains(GuestAddress(0x3fff)));
  EXPECT_TRUE(region.Contains(GuestAddress(0x4000)));
  EXPECT_TRUE(region.Contains(GuestAddress(0x5fff)));
  EXPECT_FALSE(region.Contains(GuestAddress(0x6000)));
  EXPECT_EQ(region.OffsetOf(GuestAddress(0x5004)), 0x1004u);
  EXPECT_EQ(&region.bitmap(), &region.region().bitmap());
}

TEST(GuestMemory, FindRegionLocatesTheOwningRegionOrNothing) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  const Region* a = &memory.region(0);
  const Region* b = &memory.region(1);
  const Region* c = &memory.region(2);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x1000)), a);  // At start.
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x2abc)), a);  // Inside.
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x2fff)), a);  // Last byte.
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x3000)), b);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x3fff)), b);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x4000)), nullptr);  // Gap.
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x7fff)), nullptr);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x8000)), c);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x9fff)), c);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0x0)), nullptr);  // Before first.
  EXPECT_EQ(memory.FindRegion(GuestAddress(0xfff)), nullptr);
  EXPECT_EQ(memory.FindRegion(GuestAddress(0xa000)), nullptr);  // After last.
  EXPECT_EQ(memory.FindRegion(GuestAddress(kMax)), nullptr);
}

TEST(GuestMemory, LookupAgreesWithALinearScanForEveryRegionCount) {
  // 1 to 9 regions of 1-3 pages, some adjacent, some with gaps, so the
  // binary search runs with every shape of its halving steps.
  for (size_t count = 1; count <= 9; ++count) {
    std::vector<std::pair<uint64_t, size_t>> layout;
    uint64_t next = 0x10000;
    for (size_t i = 0; i < count; ++i) {
      const size_t pages = 1 + i % 3;
      layout.push_back({next, pages});
      next += pages * kPage + (i % 2 == 0 ? 0 : 5 * kPage);
    }
    ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory(layout));
    for (uint64_t addr = 0xf000; addr < next + 2 * kPage; addr += kPage / 2) {
      const Region* expected = nullptr;
      for (const Region& r : memory.regions()) {
        if (r.Contains(GuestAddress(addr))) expected = &r;
      }
      for (uint64_t a : {addr, addr + kPage / 2 - 1}) {
        const Region* want = expected;
        if (a != addr) {
          want = nullptr;
          for (const Region& r : memory.regions()) {
            if (r.Contains(GuestAddress(a))) want = &r;
          }
        }
        ASSERT_EQ(memory.FindRegion(GuestAddress(a)), want)
            << count << " regions, address 0x" << std::hex << a;
      }
    }
  }
}

TEST(GuestMemory, AlignedObjectMarksOnlyItsPageAndUnalignedOneMarksBoth) {
  ASSERT_OK_AND_ASSIGN(Memory memory, MakeMemory({{0x10000, 4}}));
  const Region& r = memory.region(0);
  ASSERT_OK(memory.WriteObj<uint64_t>(GuestAddress(0x10000 + kPage - 8), 1));
  EXPECT_TRUE(r.bitmap().DirtyAt(0));
  EXPECT_FALSE(r.bitmap().DirtyAt(kPage));
  // Unaligned, straddling pages 2 and 3: both are marked, bytes land.
  ASSERT_OK(memory.WriteObj<uint64_t>(GuestAddress(0x10000 + 3 * kPage - 4),
                                      0x1122334455667788));
  EXPECT_TRUE(r.bitmap().DirtyAt(2 * kPage));
  EXPECT_TRUE(r.bitmap().DirtyAt(3 * kPage));
  EXPECT_FALSE(r.bitmap().DirtyAt(kPage));
  ASSERT_OK_AND_ASSIGN(uint64_t back, memory.ReadObj<uint64_t>(
                                          GuestAddress(0x10000 + 3 * kPage - 4)));
  EXPECT_EQ(back, 0x1122334455667788u);
  // A 16-byte object (not one untorn store) marks what it touches too.
  struct Pair16 {
    uint64_t a, b;
  };
  ASSERT_OK(memory.WriteObj(GuestAddress(0x10000 + 2 * kPage - 8), Pair16{1, 2}));
  EXPECT_TRUE(r.bitmap().DirtyAt(kPage));
}

TEST(GuestMemory, WriteAcrossAdjacentRegionsLandsInBothAndMarksBoth) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  std::array<uint8_t, 16> in;
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint8_t>(i + 1);
  ASSERT_OK(memory.Write(GuestAddress(0x3000 - 8), in));

  const Region& a = memory.region(0);
  const Region& b = memory.region(1);
  EXPECT_EQ(a.region().as_ptr()[2 * kPage - 8], 1);
  EXPECT_EQ(a.region().as_ptr()[2 * kPage - 1], 8);
  EXPECT_EQ(b.region().as_ptr()[0], 9);
  EXPECT_EQ(b.region().as_ptr()[7], 16);
  EXPECT_FALSE(a.bitmap().DirtyAt(0));
  EXPECT_TRUE(a.bitmap().DirtyAt(kPage));
  EXPECT_EQ(a.bitmap().CountDirty(), 1u);
  EXPECT_TRUE(b.bitmap().DirtyAt(0));
  EXPECT_EQ(b.bitmap().CountDirty(), 1u);
  EXPECT_EQ(memory.region(2).bitmap().CountDirty(), 0u);

  std::array<uint8_t, 16> out = {};
  ASSERT_OK(memory.Read(GuestAddress(0x3000 - 8), out));
  EXPECT_EQ(out, in);
}

TEST(GuestMemory, ReadSpanningAllOfTwoRegionsReturnsEveryByte) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  memory.region(0).region().as_ptr()[0] = 0x11;
  memory.region(1).region().as_ptr()[kPage - 1] = 0x22;
  std::vector<uint8_t> out(3 * kPage, 0xFF);
  ASSERT_OK(memory.Read(GuestAddress(0x1000), out));
  EXPECT_EQ(out.front(), 0x11);
  EXPECT_EQ(out.back(), 0x22);
  EXPECT_EQ(out[kPage], 0);
  EXPECT_EQ(memory.region(0).bitmap().CountDirty(), 0u);  // Reads never mark.
}

TEST(GuestMemory, WriteAcrossAGapIsOutOfRangeAndWritesNothing) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  std::array<uint8_t, 16> in;
  in.fill(0xEE);
  EXPECT_THAT(memory.Write(GuestAddress(0x4000 - 8), in),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x4000"));
  // A range covering the end of A, all of B, then the gap.
  std::vector<uint8_t> big(8 + kPage + 8, 0xEE);
  EXPECT_THAT(memory.Write(GuestAddress(0x3000 - 8), big),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x4000"));
  const Region& a = memory.region(0);
  const Region& b = memory.region(1);
  EXPECT_TRUE(AllZero(a, 0, 2 * kPage));
  EXPECT_TRUE(AllZero(b, 0, kPage));
  EXPECT_EQ(a.bitmap().CountDirty(), 0u);
  EXPECT_EQ(b.bitmap().CountDirty(), 0u);
}

TEST(GuestMemory, ReadAcrossAGapIsOutOfRangeAndLeavesTheBufferAlone) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  std::array<uint8_t, 16> out;
  out.fill(0x77);
  EXPECT_THAT(memory.Read(GuestAddress(0x4000 - 8), out),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x4000"));
  for (uint8_t byte : out) EXPECT_EQ(byte, 0x77);
}

TEST(GuestMemory, ObjectsInsideARegionRoundTripAndMarkTheirPage) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  ASSERT_OK(memory.WriteObj<uint64_t>(GuestAddress(0x9008), 0x1122334455667788));
  ASSERT_OK_AND_ASSIGN(uint64_t v, memory.ReadObj<uint64_t>(GuestAddress(0x9008)));
  EXPECT_EQ(v, 0x1122334455667788u);
  const Region& c = memory.region(2);
  EXPECT_EQ(c.region().as_ptr()[kPage + 8], 0x88);
  EXPECT_FALSE(c.bitmap().DirtyAt(0));
  EXPECT_TRUE(c.bitmap().DirtyAt(kPage));
  // The last object that fits in C.
  ASSERT_OK(memory.WriteObj<uint32_t>(GuestAddress(0x9ffc), 7));
  ASSERT_OK_AND_ASSIGN(uint32_t last, memory.ReadObj<uint32_t>(GuestAddress(0x9ffc)));
  EXPECT_EQ(last, 7u);
}

TEST(GuestMemory, ObjectsStraddlingAdjacentRegionsRoundTripAndMarkBoth) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  const uint64_t value = 0x0807060504030201;
  ASSERT_OK(memory.WriteObj<uint64_t>(GuestAddress(0x2ffd), value));
  const Region& a = memory.region(0);
  const Region& b = memory.region(1);
  EXPECT_EQ(a.region().as_ptr()[2 * kPage - 3], 0x01);
  EXPECT_EQ(a.region().as_ptr()[2 * kPage - 1], 0x03);
  EXPECT_EQ(b.region().as_ptr()[0], 0x04);
  EXPECT_EQ(b.region().as_ptr()[4], 0x08);
  EXPECT_TRUE(a.bitmap().DirtyAt(kPage));
  EXPECT_FALSE(a.bitmap().DirtyAt(0));
  EXPECT_TRUE(b.bitmap().DirtyAt(0));
  ASSERT_OK_AND_ASSIGN(uint64_t v, memory.ReadObj<uint64_t>(GuestAddress(0x2ffd)));
  EXPECT_EQ(v, value);
}

TEST(GuestMemory, ObjectStraddlingIntoAGapIsOutOfRangeAndNotWritten) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  EXPECT_THAT(memory.WriteObj<uint64_t>(GuestAddress(0x3ffc), ~uint64_t{0}),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x4000"));
  EXPECT_THAT(memory.ReadObj<uint64_t>(GuestAddress(0x3ffc)),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x4000"));
  EXPECT_TRUE(AllZero(memory.region(1), kPage - 4, 4));
  EXPECT_EQ(memory.region(1).bitmap().CountDirty(), 0u);
}

TEST(GuestMemory, UnmappedAddressIsOutOfRangeNamingItInHex) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  std::array<uint8_t, 4> buf = {};
  EXPECT_THAT(memory.Read(GuestAddress(0x5000), buf),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x5000"));
  EXPECT_THAT(memory.Write(GuestAddress(0x5000), buf),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x5000"));
  EXPECT_THAT(memory.ReadObj<uint32_t>(GuestAddress(0x5000)),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x5000"));
  EXPECT_THAT(memory.WriteObj<uint32_t>(GuestAddress(0x5000), 1),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x5000"));
  EXPECT_THAT(memory.GetSlice(GuestAddress(0x5000), 4),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x5000"));
  EXPECT_THAT(memory.ReadObj<uint8_t>(GuestAddress(0x0)),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0x0"));
  EXPECT_THAT(memory.ReadObj<uint8_t>(GuestAddress(0xa000)),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "0xa000"));
}

TEST(GuestMemory, RangeOverflowingTheAddressSpaceIsInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  std::array<uint8_t, 16> buf = {};
  EXPECT_THAT(memory.Read(GuestAddress(kMax - 3), buf),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(memory.Write(GuestAddress(kMax - 3), buf),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(memory.ReadObj<uint64_t>(GuestAddress(kMax - 3)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(memory.WriteObj<uint64_t>(GuestAddress(kMax), 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(memory.GetSlice(GuestAddress(0x1001),
                              std::numeric_limits<size_t>::max()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemory, RegionAtTheTopOfTheAddressSpaceIsUsable) {
  ASSERT_OK_AND_ASSIGN(Memory memory,
                       MakeMemory({{0x0, 1}, {kMax - kPage + 1, 1}}));
  ASSERT_OK(memory.WriteObj<uint64_t>(GuestAddress(kMax - 7), 99));
  ASSERT_OK_AND_ASSIGN(uint64_t v, memory.ReadObj<uint64_t>(GuestAddress(kMax - 7)));
  EXPECT_EQ(v, 99u);
  EXPECT_TRUE(memory.region(1).bitmap().DirtyAt(kPage - 1));
  std::array<uint8_t, 8> buf = {};
  EXPECT_THAT(memory.Read(GuestAddress(kMax - 6), buf),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GuestMemory, GetSliceWithinARegionIsThatRegionsMemory) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  ASSERT_OK_AND_ASSIGN(auto slice, memory.GetSlice(GuestAddress(0x2100), 0x100));
  const Region& a = memory.region(0);
  EXPECT_EQ(slice.len(), 0x100u);
  EXPECT_EQ(slice.as_ptr(), a.region().as_ptr() + 0x1100);
  ASSERT_OK(slice.WriteObj<uint16_t>(0xBEEF, 0));
  EXPECT_TRUE(a.bitmap().DirtyAt(kPage));
  EXPECT_FALSE(a.bitmap().DirtyAt(0));
  ASSERT_OK_AND_ASSIGN(uint16_t v, memory.ReadObj<uint16_t>(GuestAddress(0x2100)));
  EXPECT_EQ(v, 0xBEEF);
  ASSERT_OK_AND_ASSIGN(auto to_end, memory.GetSlice(GuestAddress(0x2f00), 0x100));
  EXPECT_EQ(to_end.len(), 0x100u);
}

TEST(GuestMemory, GetSliceCrossingRegionsIsOutOfRange) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  EXPECT_THAT(memory.GetSlice(GuestAddress(0x2f00), 0x200),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(memory.GetSlice(GuestAddress(0x3f00), 0x200),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(GuestMemory, SizesCountEveryRegion) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  EXPECT_EQ(memory.num_regions(), 3u);
  EXPECT_EQ(memory.regions().size(), 3u);
  EXPECT_EQ(memory.total_size(), 5 * kPage);
  ASSERT_OK_AND_ASSIGN(Memory single, MakeMemory({{0x100000, 4}}));
  EXPECT_EQ(single.num_regions(), 1u);
  EXPECT_EQ(single.total_size(), 4 * kPage);
}

TEST(GuestMemory, MovedMemoryKeepsRegionsAndMarks) {
  ASSERT_OK_AND_ASSIGN(Memory memory, StandardMemory());
  ASSERT_OK(memory.WriteObj<uint8_t>(GuestAddress(0x8000), 1));
  Memory moved(std::move(memory));
  EXPECT_EQ(moved.num_regions(), 3u);
  EXPECT_TRUE(moved.region(2).bitmap().DirtyAt(0));
  ASSERT_OK_AND_ASSIGN(uint8_t v, moved.ReadObj<uint8_t>(GuestAddress(0x8000)));
  EXPECT_EQ(v, 1);
}

}  // namespace
}  // namespace livemig
