// The KVM dirty sources (core/dirty_sources/kvm_dirty_log.h, kvm_dirty_ring.h)
// checked page by page against writes the guest is known to have made: a
// probe guest (tools/vmm/guest_program.h) stores to a stride of pages and
// says done, then the source collects and the bitmaps must hold exactly
// those pages — plus, only in the reserved area, the documented conservative
// extras of shadow paging (the code page and the guest's page-table pages).
#include <set>
#include <string>
#include <vector>

#include "core/dirty_sources/kvm_dirty_log.h"
#include "core/dirty_sources/kvm_dirty_ring.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "tools/vmm/guest_program.h"
#include "tools/vmm/kvm_vm.h"
#include "tools/vmm/testing/kvm_test_util.h"

namespace livemig {
namespace {

using vmm::KvmVm;
using vmm::KvmVmOptions;
using vmm::TrackerKind;
using vmm::testing::MakeMemory;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kRegion0 = 16 * kMiB;
constexpr uint64_t kRegion1 = 4 * kMiB;

// Pages of region 0 a harvest may report although no test store hit them:
// the code page (fetched through a 2 MiB guest mapping whose D bit is set)
// and the page-table pages KVM sets A/D bits in. Nothing else.
std::set<uint64_t> AllowedExtras() {
  std::set<uint64_t> pages = {vmm::kCodeOffset / kPage, vmm::kPml4Offset / kPage,
                              vmm::kPdptOffset / kPage};
  for (uint64_t i = 0; i < vmm::kMaxPds; ++i) pages.insert(vmm::kPdOffset / kPage + i);
  return pages;
}

// Pages (global: region 1's are offset by region 0's page count) marked in
// the bitmaps, taken (harvested) so the next call starts empty.
std::set<uint64_t> TakeDirty(const GuestMemory<AtomicBitmap>& memory) {
  std::set<uint64_t> pages;
  uint64_t first = 0;
  for (const auto& region : memory.regions()) {
    std::vector<uint64_t> words(region.bitmap().num_words());
    EXPECT_OK(region.bitmap().GetAndReset(words));
    for (size_t w = 0; w < words.size(); ++w) {
      for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
        pages.insert(first + w * 64 + static_cast<uint64_t>(__builtin_ctzll(bits)));
      }
    }
    first += region.len() / kPage;
  }
  return pages;
}

struct Split {
  std::set<uint64_t> data;    // Outside the allowed extras.
  std::set<uint64_t> extras;  // Allowed extras that were reported.
};
Split SplitExtras(const std::set<uint64_t>& pages) {
  const std::set<uint64_t> allowed = AllowedExtras();
  Split split;
  for (uint64_t p : pages) (allowed.count(p) ? split.extras : split.data).insert(p);
  return split;
}

std::set<uint64_t> Stride(uint64_t first_page, uint64_t end_page, uint64_t every) {
  std::set<uint64_t> pages;
  for (uint64_t p = first_page; p < end_page; p += every) pages.insert(p);
  return pages;
}

std::string Name(const ::testing::TestParamInfo<TrackerKind>& info) {
  switch (info.param) {
    case TrackerKind::kLog: return "Classic";
    case TrackerKind::kLogManual: return "ManualProtect";
    case TrackerKind::kRing: return "Ring";
  }
  return "Unknown";
}

class KvmDirtySourceTest : public ::testing::TestWithParam<TrackerKind> {
 protected:
  void SetUp() override {
    LIVEMIG_SKIP_WITHOUT_KVM();
    memory_ = MakeMemory({kRegion0, kRegion1});
    ASSERT_NE(memory_, nullptr);
  }

  // Boots a probe guest (ring mode for the ring source) and makes its source.
  void Boot(uint32_t ring_entries = 4096) {
    KvmVmOptions options;
    options.vcpus = 1;
    options.pattern.pattern = vmm::Pattern::kProbe;
    if (GetParam() == TrackerKind::kRing) options.dirty_ring_entries = ring_entries;
    ASSERT_OK_AND_ASSIGN(vm_, KvmVm::Boot(*memory_, options));
    ASSERT_OK_AND_ASSIGN(source_, vmm::MakeTracker(*vm_, *memory_, GetParam()));
    ASSERT_OK(vm_->Start());
  }
  void TearDown() override {
    if (source_ != nullptr) source_->Stop();
    source_.reset();
    vm_.reset();
  }

  // Has the guest store to every `every`-th page of [first, end) (global
  // page numbers) and returns those pages.
  std::set<uint64_t> Write(uint64_t first, uint64_t end, uint64_t every) {
    EXPECT_OK(vm_->RunProbe(first * kPage, end * kPage, every * kPage));
    return Stride(first, end, every);
  }
  // Collects and returns what the source reported (bitmaps taken).
  Split Collect() {
    EXPECT_OK(source_->Collect());
    return SplitExtras(TakeDirty(*memory_));
  }

  const uint64_t workload_ = vmm::kReservedBytes / kPage;  // First workload page.
  const uint64_t end0_ = kRegion0 / kPage;
  const uint64_t end1_ = (kRegion0 + kRegion1) / kPage;
  std::unique_ptr<GuestMemory<AtomicBitmap>> memory_;
  std::unique_ptr<KvmVm> vm_;
  std::unique_ptr<DirtySource> source_;
};

TEST_P(KvmDirtySourceTest, FirstHarvestIsExactThenAReHarvestIsEmpty) {
  Boot();
  ASSERT_OK(source_->Start());
  TakeDirty(*memory_);  // The boot image, written through the tracked API.
  std::set<uint64_t> written = Write(workload_, end0_, 3);
  const std::set<uint64_t> in_region1 = Write(end0_ + 1, end1_, 5);
  written.insert(in_region1.begin(), in_region1.end());
  const Split first = Collect();
  EXPECT_EQ(first.data, written);
  const Split again = Collect();
  EXPECT_TRUE(again.data.empty()) << again.data.size() << " pages, first "
                                  << *again.data.begin();
}

TEST_P(KvmDirtySourceTest, SecondSetIsExactWithNothingLeftFromTheFirst) {
  Boot();
  ASSERT_OK(source_->Start());
  TakeDirty(*memory_);
  EXPECT_EQ(Collect().data.size(), 0u);
  const std::set<uint64_t> first = Write(workload_, end0_, 3);
  EXPECT_EQ(Collect().data, first);
  const std::set<uint64_t> second = Write(workload_ + 257, end0_, 7);
  EXPECT_EQ(Collect().data, second);
}

TEST_P(KvmDirtySourceTest, EveryPageWrittenIsEveryPageReported) {
  Boot(/*ring_entries=*/65536);
  ASSERT_OK(source_->Start());
  TakeDirty(*memory_);
  std::set<uint64_t> all = Write(workload_, end0_, 1);
  const std::set<uint64_t> r1 = Write(end0_, end1_, 1);
  all.insert(r1.begin(), r1.end());
  EXPECT_EQ(Collect().data, all);
  EXPECT_EQ(Collect().data.size(), 0u);
}

TEST_P(KvmDirtySourceTest, LoggingEnabledOnALiveSlotSeesPagesTheGuestAlreadyMapped) {
  Boot();
  // Before Start: the guest makes its shadow PTEs writable on these pages.
  const std::set<uint64_t> pages = Write(workload_, end0_, 2);
  TakeDirty(*memory_);
  ASSERT_OK(source_->Start());
  EXPECT_EQ(Collect().data.size(), 0u);
  EXPECT_EQ(Write(workload_, end0_, 2), pages);
  EXPECT_EQ(Collect().data, pages);
}

TEST_P(KvmDirtySourceTest, StopTurnsLoggingOffAndARestartBeginsAfresh) {
  Boot();
  ASSERT_OK(source_->Start());
  Write(workload_, end0_, 4);
  source_->Stop();
  TakeDirty(*memory_);
  Write(workload_ + 1, end0_, 4);  // Unseen: logging is off.
  ASSERT_OK(source_->Start());
  TakeDirty(*memory_);
  const std::set<uint64_t> later = Write(workload_ + 2, end0_, 4);
  EXPECT_EQ(Collect().data, later);
}

INSTANTIATE_TEST_SUITE_P(AllKvmSources, KvmDirtySourceTest,
                         ::testing::Values(TrackerKind::kLog, TrackerKind::kLogManual,
                                           TrackerKind::kRing),
                         Name);

class KvmDirtyRingTest : public KvmDirtySourceTest {};

TEST_P(KvmDirtyRingTest, AFullRingIsCollectedByTheVcpuLoopAndNothingIsLost) {
  Boot(/*ring_entries=*/256);  // Full at 192 entries.
  ASSERT_OK(source_->Start());
  TakeDirty(*memory_);
  const std::set<uint64_t> written = Write(workload_, end0_, 1);  // 4032 pages.
  EXPECT_EQ(Collect().data, written);
  auto* ring = dynamic_cast<KvmDirtyRing*>(source_.get());
  ASSERT_NE(ring, nullptr);
  EXPECT_GE(ring->ring_full_collections(), written.size() / 192);
}

TEST_P(KvmDirtyRingTest, DuplicateEntriesInARingReportThePageOnce) {
  Boot();
  // A ring the test fills itself, as KVM would, with duplicates.
  std::vector<kvm_dirty_gfn> fake(16);
  const uint64_t offsets[] = {100, 101, 100, 100, 300, 101};
  for (int i = 0; i < 6; ++i) fake[i] = {kvm_ring_internal::kDirty, 0, offsets[i]};
  uint32_t fetch = 0;
  KvmDirtyRing ring(vm_->kvm_view(), {{fake.data(), 16, &fetch}}, *memory_);
  ASSERT_OK(ring.Start());
  TakeDirty(*memory_);
  ASSERT_OK(ring.Collect());
  EXPECT_EQ(TakeDirty(*memory_), (std::set<uint64_t>{100, 101, 300}));
  EXPECT_EQ(ring.last_collect().entries, 6u);
  EXPECT_EQ(ring.last_collect().pages, 3u);
  EXPECT_EQ(fetch, 6u);
  ring.Stop();
}

INSTANTIATE_TEST_SUITE_P(Ring, KvmDirtyRingTest, ::testing::Values(TrackerKind::kRing),
                         Name);

TEST(KvmDirtySourceModes, ALogSourceRefusesARingVmAndARingSourceALogVm) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  KvmVmOptions options;
  options.pattern.pattern = vmm::Pattern::kProbe;
  ASSERT_OK_AND_ASSIGN(auto log_vm, KvmVm::Boot(*memory, options));
  EXPECT_THAT(vmm::MakeTracker(*log_vm, *memory, TrackerKind::kRing),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  log_vm.reset();
  options.dirty_ring_entries = 1024;
  ASSERT_OK_AND_ASSIGN(auto ring_vm, KvmVm::Boot(*memory, options));
  EXPECT_THAT(vmm::MakeTracker(*ring_vm, *memory, TrackerKind::kLog),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace livemig
