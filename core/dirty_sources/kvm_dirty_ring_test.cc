// The ring harvest loop on a ring buffer the test writes itself (as KVM
// would): entries are taken in order up to the first unpublished one, each
// is handed back with RESET, the fetch index wraps, and duplicates are
// harmless to the consumer.
#include "core/dirty_sources/kvm_dirty_ring.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace livemig {
namespace {

using kvm_ring_internal::HarvestRing;
using kvm_ring_internal::kDirty;
using kvm_ring_internal::kReset;

TEST(KvmDirtyRingHarvest, TakesPublishedEntriesInOrderAndMarksThemForReset) {
  std::vector<kvm_dirty_gfn> ring(8);
  for (int i = 0; i < 5; ++i) ring[i] = {kDirty, 0, static_cast<uint64_t>(10 + i)};
  uint32_t fetch = 0;
  std::vector<uint64_t> seen;
  EXPECT_EQ(HarvestRing(ring.data(), 8, &fetch, [&](uint32_t, uint64_t o) { seen.push_back(o); }),
            5u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{10, 11, 12, 13, 14}));
  EXPECT_EQ(fetch, 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(ring[i].flags, kReset);
  // Nothing new published: nothing taken.
  EXPECT_EQ(HarvestRing(ring.data(), 8, &fetch, [&](uint32_t, uint64_t) {}), 0u);
}

TEST(KvmDirtyRingHarvest, WrapsAroundTheRing) {
  std::vector<kvm_dirty_gfn> ring(4);
  uint32_t fetch = 6;  // Entries 6, 7 -> slots 2, 3; 8, 9 -> slots 0, 1.
  for (uint32_t i = 6; i < 10; ++i) ring[i & 3] = {kDirty, 1, i};
  std::vector<uint64_t> seen;
  EXPECT_EQ(HarvestRing(ring.data(), 4, &fetch, [&](uint32_t, uint64_t o) { seen.push_back(o); }),
            4u);
  EXPECT_EQ(seen, (std::vector<uint64_t>{6, 7, 8, 9}));
  EXPECT_EQ(fetch, 10u);
}

TEST(KvmDirtyRingHarvest, DuplicateEntriesYieldThePageOnce) {
  std::vector<kvm_dirty_gfn> ring(16);
  const uint64_t offsets[] = {3, 5, 3, 3, 9, 5};
  for (int i = 0; i < 6; ++i) ring[i] = {kDirty, 0, offsets[i]};
  uint32_t fetch = 0;
  std::set<uint64_t> pages;
  EXPECT_EQ(HarvestRing(ring.data(), 16, &fetch, [&](uint32_t, uint64_t o) { pages.insert(o); }),
            6u);
  EXPECT_EQ(pages, (std::set<uint64_t>{3, 5, 9}));
}

}  // namespace
}  // namespace livemig
