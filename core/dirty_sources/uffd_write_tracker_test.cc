// UffdWriteTracker against known writes, page by page. Every write here goes
// through the raw host pointer (never the tracked API), so each reported page
// comes from the userfaultfd tracking alone. Each region is half populated
// before Start() and half never touched, for every mapping kind the engine
// uses: private anonymous, shared anonymous (shmem), memfd, a MAP_SHARED file
// and a MAP_PRIVATE file.
#include "core/dirty_sources/uffd_write_tracker.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/atomic_bitmap.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "core/internal/guest_copy.h"
#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kRegionPages = 2048;  // 8 MiB.
constexpr uint64_t kRegionBytes = kRegionPages * kPage;
// Pages [0, kPopulated) are written before Start(); the rest never are.
constexpr uint64_t kPopulated = kRegionPages / 2;

enum class Kind { kPrivateAnon, kSharedAnon, kMemfd, kSharedFile, kPrivateFile };

std::string KindName(Kind kind) {
  switch (kind) {
    case Kind::kPrivateAnon: return "PrivateAnon";
    case Kind::kSharedAnon: return "SharedAnon";
    case Kind::kMemfd: return "Memfd";
    case Kind::kSharedFile: return "SharedFile";
    case Kind::kPrivateFile: return "PrivateFile";
  }
  return "?";
}

std::string TestTmpDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

// A file (or memfd) of `size` zero bytes, open read-write.
absl::StatusOr<FileOffset> SizedFile(Kind kind, uint64_t size, const std::string& tag) {
  int fd = -1;
  if (kind == Kind::kMemfd) {
    fd = ::memfd_create(tag.c_str(), MFD_CLOEXEC);
  } else {
    const std::string path = absl::StrCat(TestTmpDir(), "/", tag, ".mem");
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ::unlink(path.c_str());
  }
  if (fd < 0) return absl::InternalError(absl::StrCat("create ", tag, ": ", errno));
  ScopedFd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    return absl::InternalError(absl::StrCat("ftruncate ", tag, ": ", errno));
  }
  return FileOffset(std::move(owned), 0);
}

absl::StatusOr<MmapRegion<AtomicBitmap>> MakeRegion(Kind kind, uint64_t size,
                                                    const std::string& tag) {
  constexpr int kRw = PROT_READ | PROT_WRITE;
  switch (kind) {
    case Kind::kPrivateAnon:
      return MmapRegion<AtomicBitmap>::Build(std::nullopt, size, kRw,
                                             MAP_PRIVATE | MAP_NORESERVE);
    case Kind::kSharedAnon:
      return MmapRegion<AtomicBitmap>::Create(size);
    case Kind::kMemfd:
    case Kind::kSharedFile:
    case Kind::kPrivateFile: {
      absl::StatusOr<FileOffset> file = SizedFile(kind, size, tag);
      if (!file.ok()) return file.status();
      return MmapRegion<AtomicBitmap>::Build(
          std::move(*file), size, kRw, kind == Kind::kPrivateFile ? MAP_PRIVATE : MAP_SHARED);
    }
  }
  return absl::InternalError("unknown kind");
}

absl::StatusOr<GuestMemory<AtomicBitmap>> MakeMemory(const std::vector<Kind>& kinds,
                                                     uint64_t region_bytes) {
  std::vector<GuestRegion<AtomicBitmap>> regions;
  for (size_t i = 0; i < kinds.size(); ++i) {
    absl::StatusOr<MmapRegion<AtomicBitmap>> region =
        MakeRegion(kinds[i], region_bytes, absl::StrCat("uffd_region_", i));
    if (!region.ok()) return region.status();
    // Guest addresses 1 GiB apart.
    absl::StatusOr<GuestRegion<AtomicBitmap>> placed = GuestRegion<AtomicBitmap>::Create(
        std::move(*region), GuestAddress(uint64_t{i} << 30));
    if (!placed.ok()) return placed.status();
    regions.push_back(std::move(*placed));
  }
  return GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

uint8_t* PagePtr(const GuestMemory<AtomicBitmap>& memory, size_t region, uint64_t page) {
  return memory.region(region).region().as_ptr() + page * kPage;
}

// A write the tracked API never sees: one 8-byte store into the page.
void WriteRaw(const GuestMemory<AtomicBitmap>& memory, size_t region, uint64_t page,
              uint64_t value) {
  core_internal::StoreToGuest<uint64_t>(PagePtr(memory, region, page) + 64, value);
}

uint64_t ReadRaw(const GuestMemory<AtomicBitmap>& memory, size_t region, uint64_t page) {
  return core_internal::LoadFromGuest<uint64_t>(PagePtr(memory, region, page) + 64);
}

// Harvests region `region`'s bitmap: the dirty pages, in increasing order.
std::vector<uint64_t> TakeDirty(const GuestMemory<AtomicBitmap>& memory, size_t region) {
  const AtomicBitmap& bitmap = memory.region(region).bitmap();
  std::vector<uint64_t> words(bitmap.num_words());
  EXPECT_OK(bitmap.GetAndReset(words));
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < bitmap.num_pages(); ++p) {
    if ((words[p / 64] >> (p % 64)) & 1) pages.push_back(p);
  }
  return pages;
}

// Collect(), then the dirty pages of region `region`.
std::vector<uint64_t> CollectPages(UffdWriteTracker& tracker,
                                   const GuestMemory<AtomicBitmap>& memory, size_t region = 0) {
  EXPECT_OK(tracker.Collect());
  return TakeDirty(memory, region);
}

std::vector<uint64_t> Range(uint64_t first, uint64_t end, uint64_t stride = 1) {
  std::vector<uint64_t> pages;
  for (uint64_t p = first; p < end; p += stride) pages.push_back(p);
  return pages;
}

#define SKIP_UNLESS_UFFD_WORKS()                                                    \
  do {                                                                              \
    if (absl::Status why = UffdWriteTracker::Probe(); !why.ok()) {                  \
      GTEST_SKIP() << "userfaultfd write tracking is unavailable here: " << why;    \
    }                                                                               \
  } while (0)

// One region of the kind under test, half populated, no page dirty.
class UffdWriteTrackerKindTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    SKIP_UNLESS_UFFD_WORKS();
    absl::StatusOr<GuestMemory<AtomicBitmap>> memory = MakeMemory({GetParam()}, kRegionBytes);
    ASSERT_OK(memory.status());
    memory_.emplace(std::move(*memory));
    for (uint64_t p = 0; p < kPopulated; ++p) WriteRaw(*memory_, 0, p, 0xfeed);
    ASSERT_THAT(TakeDirty(*memory_, 0), IsEmpty());  // Raw writes mark nothing.
  }

  const GuestMemory<AtomicBitmap>& memory() const { return *memory_; }

  std::optional<GuestMemory<AtomicBitmap>> memory_;
};

TEST_P(UffdWriteTrackerKindTest, FirstCollectReportsExactlyThePagesWritten) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  const std::vector<uint64_t> written = Range(1, kRegionPages, 3);  // Both halves.
  for (uint64_t p : written) WriteRaw(memory(), 0, p, p);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(written));
  EXPECT_EQ(tracker.stats().pages_reported, written.size());
}

TEST_P(UffdWriteTrackerKindTest, CollectingAgainWithoutWritesReportsNoPage) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  for (uint64_t p : Range(0, kRegionPages, 5)) WriteRaw(memory(), 0, p, 1);
  EXPECT_EQ(CollectPages(tracker, memory()).size(), Range(0, kRegionPages, 5).size());
  EXPECT_THAT(CollectPages(tracker, memory()), IsEmpty());
}

TEST_P(UffdWriteTrackerKindTest, ASecondSetOfWritesIsReportedAloneAfterTheFirstHarvest) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  for (uint64_t p : Range(0, kRegionPages, 4)) WriteRaw(memory(), 0, p, 1);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(Range(0, kRegionPages, 4)));
  // The same pages again plus new ones: all were re-protected by the scan.
  const std::vector<uint64_t> second = Range(0, kRegionPages, 2);
  for (uint64_t p : second) WriteRaw(memory(), 0, p, 2);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(second));
}

TEST_P(UffdWriteTrackerKindTest, NoWriteReportsNoPage) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  EXPECT_THAT(CollectPages(tracker, memory()), IsEmpty());
  EXPECT_EQ(tracker.stats().ranges_reported, 0u);
}

TEST_P(UffdWriteTrackerKindTest, EveryPageWrittenReportsEveryPage) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  for (uint64_t p = 0; p < kRegionPages; ++p) WriteRaw(memory(), 0, p, p + 7);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(Range(0, kRegionPages)));
  EXPECT_EQ(tracker.stats().pages_reported, kRegionPages);
}

TEST_P(UffdWriteTrackerKindTest, ReadsOfPopulatedAndNeverTouchedPagesReportNoPage) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  uint64_t sum = 0;
  for (uint64_t p = 0; p < kRegionPages; ++p) sum += ReadRaw(memory(), 0, p);
  EXPECT_EQ(sum, kPopulated * 0xfeed);
  EXPECT_THAT(CollectPages(tracker, memory()), IsEmpty());
}

TEST_P(UffdWriteTrackerKindTest, FirstWritesToNeverTouchedPagesAreReported) {
  UffdWriteTracker tracker(memory());
  ASSERT_OK(tracker.Start());
  const std::vector<uint64_t> fresh = Range(kPopulated, kRegionPages, 7);
  for (uint64_t p : fresh) WriteRaw(memory(), 0, p, 3);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(fresh));
}

TEST_P(UffdWriteTrackerKindTest, AScanNeedingManyVecRefillsIsExact) {
  UffdWriteTracker::Options options;
  options.scan_vec_len = 4;
  UffdWriteTracker tracker(memory(), options);
  ASSERT_OK(tracker.Start());
  // Every other page: 1024 separate ranges, at most 4 per PAGEMAP_SCAN call.
  const std::vector<uint64_t> written = Range(0, kRegionPages, 2);
  for (uint64_t p : written) WriteRaw(memory(), 0, p, 9);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(written));
  EXPECT_EQ(tracker.stats().ranges_reported, written.size());
  EXPECT_GE(tracker.stats().scan_ioctls, written.size() / 4);
  // Every refill re-protected what it reported, and only that.
  EXPECT_THAT(CollectPages(tracker, memory()), IsEmpty());
}

// A vec larger than the kernel's 512-range internal buffer: the call that
// completes the walk may answer with walk_end at its last internal flush
// instead of the end; the loop scans the rest again and stays exact.
TEST_P(UffdWriteTrackerKindTest, AVecLargerThanTheKernelBufferIsExact) {
  UffdWriteTracker::Options options;
  options.scan_vec_len = 4096;
  UffdWriteTracker tracker(memory(), options);
  ASSERT_OK(tracker.Start());
  const std::vector<uint64_t> written = Range(1, kRegionPages, 2);  // 1024 ranges.
  for (uint64_t p : written) WriteRaw(memory(), 0, p, 6);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(written));
  EXPECT_EQ(tracker.stats().ranges_reported, written.size());
  EXPECT_THAT(CollectPages(tracker, memory()), IsEmpty());
}

TEST_P(UffdWriteTrackerKindTest, ProtectingInSmallUnalignedChunksIsExact) {
  UffdWriteTracker::Options options;
  options.protect_chunk_bytes = 3 * kPage;  // 683 UFFDIO_WRITEPROTECT calls.
  UffdWriteTracker tracker(memory(), options);
  ASSERT_OK(tracker.Start());
  const std::vector<uint64_t> written = Range(2, kRegionPages, 3);
  for (uint64_t p : written) WriteRaw(memory(), 0, p, 5);
  EXPECT_THAT(CollectPages(tracker, memory()), ElementsAreArray(written));
}

// A writer thread stores a unique value into pseudo-random pages while the
// test collects again and again and copies each reported page into a shadow
// (what a sender would do). After the writer stops, one last collect and
// copy must leave the shadow equal to the memory: no write was lost, however
// the writes fell around the scans. The amount of work is counted, not timed.
TEST_P(UffdWriteTrackerKindTest, WritesFromAnotherThreadDuringCollectsAreNeverLost) {
  UffdWriteTracker::Options options;
  options.scan_vec_len = 16;  // Walks that stop and resume, also mid-write.
  UffdWriteTracker tracker(memory(), options);
  ASSERT_OK(tracker.Start());
  // Round 0: everything, copied after Start() as the sender does.
  std::vector<uint8_t> shadow(kRegionBytes);
  core_internal::CopyFromGuest(shadow.data(), PagePtr(memory(), 0, 0), kRegionBytes);

  // Written by the writer, read by the test: a count, ordered by nothing (the
  // data the test compares is ordered by the join).
  std::atomic<uint64_t> writes{0};
  std::atomic<bool> stop{false};  // Set by the test; relaxed: only ends a loop.
  std::thread writer([&] {
    uint64_t x = 12345;
    for (uint64_t seq = 1; !stop.load(std::memory_order_relaxed); ++seq) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      // Every 8th page, in both halves: each collect copies at most 256
      // pages, which keeps the test short under ThreadSanitizer.
      const uint64_t page = (x >> 33) % (kRegionPages / 8) * 8;
      core_internal::StoreToGuest<uint64_t>(
          PagePtr(memory(), 0, page) + (seq % (kPage / 8)) * 8, seq);
      writes.store(seq, std::memory_order_relaxed);
    }
  });
  auto copy_reported = [&] {
    for (uint64_t p : CollectPages(tracker, memory())) {
      core_internal::CopyFromGuest(shadow.data() + p * kPage, PagePtr(memory(), 0, p), kPage);
    }
  };
  uint64_t collects = 0;
  uint64_t writes_at_last_collect = 0;
  uint64_t collects_with_new_writes = 0;
  // At least 100 collects with writes landing between them, and 10000 writes.
  while (collects_with_new_writes < 100 || writes.load(std::memory_order_relaxed) < 10000) {
    copy_reported();
    ++collects;
    const uint64_t now = writes.load(std::memory_order_relaxed);
    if (now != writes_at_last_collect) ++collects_with_new_writes;
    writes_at_last_collect = now;
  }
  stop.store(true, std::memory_order_relaxed);
  writer.join();
  copy_reported();
  EXPECT_EQ(std::memcmp(shadow.data(), PagePtr(memory(), 0, 0), kRegionBytes), 0)
      << "after " << collects << " collects and " << writes.load() << " writes";
}

INSTANTIATE_TEST_SUITE_P(MappingKinds, UffdWriteTrackerKindTest,
                         ::testing::Values(Kind::kPrivateAnon, Kind::kSharedAnon, Kind::kMemfd,
                                           Kind::kSharedFile, Kind::kPrivateFile),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return KindName(info.param);
                         });

class UffdWriteTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_UNLESS_UFFD_WORKS(); }
};

TEST_F(UffdWriteTrackerTest, SeveralRegionsOfDifferentKindsAreEachReportedExactly) {
  ASSERT_OK_AND_ASSIGN(
      GuestMemory<AtomicBitmap> memory,
      MakeMemory({Kind::kPrivateAnon, Kind::kSharedAnon, Kind::kMemfd, Kind::kSharedFile},
                 2 << 20));
  const uint64_t pages = (2 << 20) / kPage;
  UffdWriteTracker tracker(memory);
  ASSERT_OK(tracker.Start());
  for (size_t r = 0; r < memory.num_regions(); ++r) {
    for (uint64_t p = r; p < pages; p += r + 2) WriteRaw(memory, r, p, r);
  }
  ASSERT_OK(tracker.Collect());
  for (size_t r = 0; r < memory.num_regions(); ++r) {
    EXPECT_THAT(TakeDirty(memory, r), ElementsAreArray(Range(r, pages, r + 2))) << "region " << r;
  }
  // Region 2 alone written now: only it reports.
  WriteRaw(memory, 2, 17, 0);
  ASSERT_OK(tracker.Collect());
  for (size_t r = 0; r < memory.num_regions(); ++r) {
    EXPECT_THAT(TakeDirty(memory, r), ElementsAreArray(r == 2 ? Range(17, 18) : Range(0, 0)))
        << "region " << r;
  }
}

TEST_F(UffdWriteTrackerTest, StartTwiceIsFailedPreconditionAndKeepsTracking) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kSharedAnon}, 1 << 20));
  UffdWriteTracker tracker(memory);
  ASSERT_OK(tracker.Start());
  EXPECT_THAT(tracker.Start(),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "uffd tracker: Start() while already started"));
  EXPECT_TRUE(tracker.started());
  WriteRaw(memory, 0, 3, 1);
  EXPECT_THAT(CollectPages(tracker, memory), ElementsAreArray({uint64_t{3}}));
}

TEST_F(UffdWriteTrackerTest, CollectBeforeStartIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kSharedAnon}, 1 << 20));
  UffdWriteTracker tracker(memory);
  EXPECT_THAT(tracker.Collect(),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "uffd tracker: Collect() before Start()"));
  EXPECT_EQ(tracker.stats().scan_ioctls, 0u);
}

TEST_F(UffdWriteTrackerTest, CollectAfterStopIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kSharedAnon}, 1 << 20));
  UffdWriteTracker tracker(memory);
  ASSERT_OK(tracker.Start());
  tracker.Stop();
  EXPECT_FALSE(tracker.started());
  EXPECT_THAT(tracker.Collect(), StatusIs(absl::StatusCode::kFailedPrecondition));
  tracker.Stop();  // Idempotent.
}

TEST_F(UffdWriteTrackerTest, StopThenStartAgainTracksOnlyWritesAfterTheNewStart) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kPrivateAnon}, 1 << 20));
  UffdWriteTracker tracker(memory);
  ASSERT_OK(tracker.Start());
  WriteRaw(memory, 0, 1, 1);
  tracker.Stop();
  WriteRaw(memory, 0, 2, 1);  // Unseen: nothing is tracked between attempts.
  ASSERT_OK(tracker.Start());
  WriteRaw(memory, 0, 5, 1);
  WriteRaw(memory, 0, 6, 1);
  EXPECT_THAT(CollectPages(tracker, memory), ElementsAreArray({uint64_t{5}, uint64_t{6}}));
  EXPECT_EQ(tracker.stats().starts, 2u);
}

TEST_F(UffdWriteTrackerTest, ASecondTrackerOnTrackedMemoryCannotStartAndTheFirstKeepsWorking) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kSharedAnon}, 1 << 20));
  UffdWriteTracker first(memory);
  ASSERT_OK(first.Start());
  UffdWriteTracker second(memory);
  // EBUSY: the range belongs to another userfaultfd.
  EXPECT_THAT(second.Start(),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "uffd tracker: UFFDIO_REGISTER (WP) of region 0"));
  EXPECT_FALSE(second.started());
  WriteRaw(memory, 0, 9, 1);
  EXPECT_THAT(CollectPages(first, memory), ElementsAreArray({uint64_t{9}}));
}

TEST_F(UffdWriteTrackerTest, StopAndTheDestructorReleaseTheMemoryForAnotherTracker) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kMemfd}, 1 << 20));
  {
    UffdWriteTracker stopped(memory);
    ASSERT_OK(stopped.Start());
    stopped.Stop();
    UffdWriteTracker next(memory);
    ASSERT_OK(next.Start());
  }  // `next` is destroyed while started.
  UffdWriteTracker last(memory);
  ASSERT_OK(last.Start());
  WriteRaw(memory, 0, 0, 1);
  EXPECT_THAT(CollectPages(last, memory), ElementsAreArray({uint64_t{0}}));
}

// The documented limits on discards (uffd_write_tracker.h): MADV_DONTNEED on
// private anonymous memory is reported (the page reads as zeros now); on a
// private file mapping the page silently reverts to the file's content and is
// NOT reported, which is why the VMM must report its own discards.
TEST_F(UffdWriteTrackerTest, DiscardIsReportedOnPrivateAnonButNotOnAPrivateFileMapping) {
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory,
                       MakeMemory({Kind::kPrivateAnon, Kind::kPrivateFile}, 1 << 20));
  for (size_t r = 0; r < 2; ++r) WriteRaw(memory, r, 4, 0xabc);
  UffdWriteTracker tracker(memory);
  ASSERT_OK(tracker.Start());
  for (size_t r = 0; r < 2; ++r) {
    ASSERT_EQ(::madvise(PagePtr(memory, r, 4), kPage, MADV_DONTNEED), 0) << errno;
  }
  ASSERT_OK(tracker.Collect());
  EXPECT_THAT(TakeDirty(memory, 0), ElementsAreArray({uint64_t{4}}));
  EXPECT_THAT(TakeDirty(memory, 1), IsEmpty());
  EXPECT_EQ(ReadRaw(memory, 1, 4), 0u);  // Reverted to the (zero) file content.
}

TEST(UffdWriteTrackerProbe, IsOkOrSaysWhy) {
  const absl::Status status = UffdWriteTracker::Probe();
  if (status.ok()) {
    EXPECT_TRUE(UffdWriteTracker::Available());
    return;
  }
  EXPECT_FALSE(UffdWriteTracker::Available());
  EXPECT_THAT(status.code(), ::testing::AnyOf(absl::StatusCode::kPermissionDenied,
                                              absl::StatusCode::kUnimplemented))
      << status;
}

}  // namespace
}  // namespace livemig
