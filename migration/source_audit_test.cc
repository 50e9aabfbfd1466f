#include "migration/source_audit.h"

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"

namespace livemig {
namespace {

using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

constexpr uint64_t kHigh = 0x100000000;  // Region 1's guest address.

struct Placement {
  uint64_t guest_addr;
  size_t size;
};

// Memory with regions at the given places, filled with a per-region
// pattern, and the hashes of every page as if all of it had been sent.
class SourceAuditTest : public ::testing::Test {
 protected:
  void Build(std::vector<Placement> placements) {
    std::vector<GuestRegion<AtomicBitmap>> regions;
    for (const Placement& p : placements) {
      ASSERT_OK_AND_ASSIGN(auto mapping, MmapRegion<AtomicBitmap>::Create(p.size));
      ASSERT_OK_AND_ASSIGN(auto region, GuestRegion<AtomicBitmap>::Create(
                                            std::move(mapping), GuestAddress(p.guest_addr)));
      regions.push_back(std::move(region));
    }
    ASSERT_OK_AND_ASSIGN(memory_, GuestMemory<AtomicBitmap>::FromRegions(std::move(regions)));
    for (uint32_t r = 0; r < memory_->num_regions(); ++r) {
      uint8_t* page = Base(r);
      PageHashes& hashes = sent_.emplace_back(memory_->region(r).len() / kHashedPageSize);
      for (uint64_t p = 0; p < hashes.pages(); ++p, page += kHashedPageSize) {
        page[0] = static_cast<uint8_t>(1 + r + p % 251);
        hashes.Set(p, HashPage(page));
      }
    }
  }
  void SetUp() override { Build({{0, 1 << 20}, {kHigh, 2 << 20}}); }

  // Writes through this pointer are not tracked: exactly what the audit is for.
  uint8_t* Base(uint32_t region) { return memory_->region(region).region().as_ptr(); }
  void Scribble(uint32_t region, uint64_t page) {
    Base(region)[page * kHashedPageSize + 100] ^= 0x5a;
  }

  std::optional<GuestMemory<AtomicBitmap>> memory_;
  std::vector<PageHashes> sent_;
};

// A changed page {region, page, guest_addr}.
auto Changed(uint32_t region, uint64_t page, uint64_t guest_addr) {
  return FieldsAre(region, page, guest_addr);
}

TEST_F(SourceAuditTest, MemoryAsSentHasNoChangesAndIsReadWhole) {
  const SourceAudit audit = AuditSource(*memory_, sent_);
  EXPECT_EQ(audit.changed, 0u);
  EXPECT_THAT(audit.first, IsEmpty());
  EXPECT_EQ(audit.bytes, 3u << 20);
  EXPECT_EQ(audit.bytes, memory_->total_size());
}

TEST_F(SourceAuditTest, FindsUntrackedWritesSortedByGuestAddress) {
  Scribble(1, 7);
  Scribble(0, 3);
  const SourceAudit audit = AuditSource(*memory_, sent_);
  EXPECT_EQ(audit.changed, 2u);
  EXPECT_THAT(audit.first, ElementsAre(Changed(0, 3, 0x3000), Changed(1, 7, kHigh + 0x7000)));
  EXPECT_EQ(audit.bytes, 3u << 20);
}

TEST_F(SourceAuditTest, FindsAPageWhoseHashWasNeverRecorded) {
  sent_[1].Set(511, kNoPageHash);  // The last page of region 1, never sent.
  const SourceAudit audit = AuditSource(*memory_, sent_);
  EXPECT_EQ(audit.changed, 1u);
  EXPECT_THAT(audit.first, ElementsAre(Changed(1, 511, kHigh + 0x1ff000)));
}

TEST_F(SourceAuditTest, MaxListedLimitsTheListButNotTheCount) {
  Scribble(1, 0);
  Scribble(0, 255);
  Scribble(0, 3);
  const SourceAudit two = AuditSource(*memory_, sent_, /*max_listed=*/2);
  EXPECT_EQ(two.changed, 3u);
  EXPECT_THAT(two.first, ElementsAre(Changed(0, 3, 0x3000), Changed(0, 255, 0xff000)));

  const SourceAudit none = AuditSource(*memory_, sent_, /*max_listed=*/0);
  EXPECT_EQ(none.changed, 3u);
  EXPECT_THAT(none.first, IsEmpty());
}

TEST_F(SourceAuditTest, OneThreadAndThreeThreadsAgree) {
  // Region 1 spans three 64 MiB slices of work, so three threads share it
  // and each finds more changed pages than are listed.
  sent_.clear();
  memory_.reset();
  Build({{0, 1 << 20}, {kHigh, (2 * 16384 + 100) * kHashedPageSize}});
  for (uint64_t page : {16384u + 5, 32768u + 99, 32768u + 1, 16384u + 1, 2u}) Scribble(1, page);
  Scribble(0, 9);
  for (unsigned threads : {1u, 3u, 0u}) {
    const SourceAudit audit = AuditSource(*memory_, sent_, /*max_listed=*/3, threads);
    EXPECT_EQ(audit.changed, 6u) << threads << " threads";
    EXPECT_THAT(audit.first,
                ElementsAre(Changed(0, 9, 0x9000), Changed(1, 2, kHigh + 0x2000),
                            Changed(1, 16385, kHigh + 16385 * kHashedPageSize)))
        << threads << " threads";
    EXPECT_EQ(audit.bytes, memory_->total_size());
  }
}

TEST(DescribeChangedPages, NoPages) {
  EXPECT_EQ(DescribeChangedPages({.changed = 0, .first = {}, .bytes = 4096}),
            "0 pages changed without being marked dirty");
}

TEST(DescribeChangedPages, OnePage) {
  EXPECT_EQ(DescribeChangedPages({.changed = 1, .first = {{0, 5, 0x5000}}}),
            "1 page changed without being marked dirty: region 0 page 5 (guest 0x5000)");
}

TEST(DescribeChangedPages, SeveralPages) {
  EXPECT_EQ(DescribeChangedPages(
                {.changed = 2, .first = {{0, 5, 0x5000}, {1, 7, kHigh + 0x7000}}}),
            "2 pages changed without being marked dirty: region 0 page 5 (guest 0x5000), "
            "region 1 page 7 (guest 0x100007000)");
}

TEST(DescribeChangedPages, MorePagesThanListedEndWithAnEllipsis) {
  EXPECT_EQ(DescribeChangedPages(
                {.changed = 9, .first = {{0, 5, 0x5000}, {1, 7, kHigh + 0x7000}}}),
            "9 pages changed without being marked dirty: region 0 page 5 (guest 0x5000), "
            "region 1 page 7 (guest 0x100007000), ...");
}

TEST_F(SourceAuditTest, DescribesWhatItFound) {
  Scribble(1, 7);
  Scribble(0, 3);
  EXPECT_EQ(DescribeChangedPages(AuditSource(*memory_, sent_, /*max_listed=*/1)),
            "2 pages changed without being marked dirty: region 0 page 3 (guest 0x3000), ...");
}

}  // namespace
}  // namespace livemig
