#include "migration/internal/known_zero.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/file_offset.h"
#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

constexpr size_t kPage = 4096;

// Indices of the pages Find() says are zero, among [0, pages).
std::vector<uint64_t> ZeroPages(const KnownZero& known, uint64_t first, uint64_t pages) {
  std::vector<uint8_t> zero;
  known.Find(first, pages, &zero);
  EXPECT_EQ(zero.size(), pages);
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < zero.size(); ++i) {
    if (zero[i] != 0) out.push_back(first + i);
  }
  return out;
}

// A memfd of `pages` pages, mapped shared through a FileOffset at `start`.
MmapRegion<AtomicBitmap> MemfdRegion(size_t pages, uint64_t start, int* fd_out) {
  const int fd = ::memfd_create("known-zero-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(start + pages * kPage)), 0);
  *fd_out = fd;
  absl::StatusOr<FileOffset> file = FileOffset::Dup(fd, start);
  EXPECT_OK(file.status());
  absl::StatusOr<MmapRegion<AtomicBitmap>> region =
      MmapRegion<AtomicBitmap>::FromFile(std::move(*file), pages * kPage);
  EXPECT_OK(region.status());
  return std::move(*region);
}

TEST(KnownZero, HolesOfTheRegionsFileAreZeroAndWrittenPagesAreNot) {
  int fd = -1;
  MmapRegion<AtomicBitmap> region = MemfdRegion(16, 4 * kPage, &fd);
  const KnownZero known = KnownZero::For(region);
  ASSERT_EQ(known.source(), KnownZero::Source::kFileHoles);
  std::vector<uint64_t> all(16);
  for (uint64_t i = 0; i < 16; ++i) all[i] = i;
  EXPECT_EQ(ZeroPages(known, 0, 16), all);

  region.as_ptr()[3 * kPage + 100] = 1;  // Through the mapping.
  const char byte = 2;
  ASSERT_EQ(::pwrite(fd, &byte, 1, 4 * kPage + 9 * kPage + 4095), 1);  // Through the file.
  // Allocated but never written (fallocate) still reads as zeros.
  ASSERT_EQ(::fallocate(fd, 0, 4 * kPage + 12 * kPage, kPage), 0);
  EXPECT_EQ(ZeroPages(known, 0, 16),
            (std::vector<uint64_t>{0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15}));
  // A window of the region: indices are the region's pages.
  EXPECT_EQ(ZeroPages(known, 8, 4), (std::vector<uint64_t>{8, 10, 11}));
  // A page read through the mapping is allocated (shmem): data from then on.
  volatile uint8_t sink = region.as_ptr()[14 * kPage];
  (void)sink;
  EXPECT_EQ(ZeroPages(known, 13, 3), (std::vector<uint64_t>{13, 15}));
  ::close(fd);
}

// Every block allocated: no hole to ask for (SEEK_HOLE would walk the
// whole page cache), every page is read.
TEST(KnownZero, AFileWithoutHolesIsNotAsked) {
  int fd = -1;
  MmapRegion<AtomicBitmap> region = MemfdRegion(16, 4 * kPage, &fd);
  ASSERT_EQ(::fallocate(fd, 0, 0, 20 * kPage), 0);
  const KnownZero known = KnownZero::For(region);
  EXPECT_EQ(known.source(), KnownZero::Source::kNothing);
  EXPECT_EQ(ZeroPages(known, 0, 16), std::vector<uint64_t>{});
  ::close(fd);
}

TEST(KnownZero, UnmappedPagesOfPrivateAnonymousMemoryAreZero) {
  constexpr size_t kPages = 1100;  // More than one pagemap read.
  void* addr = ::mmap(nullptr, kPages * kPage, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(addr, MAP_FAILED);
  ASSERT_EQ(::madvise(addr, kPages * kPage, MADV_NOHUGEPAGE), 0);  // Page by page.
  ASSERT_OK_AND_ASSIGN(MmapRegion<AtomicBitmap> region,
                       MmapRegion<AtomicBitmap>::BuildRaw(addr, kPages * kPage,
                                                          PROT_READ | PROT_WRITE,
                                                          MAP_PRIVATE | MAP_ANONYMOUS));
  const KnownZero known = KnownZero::For(region);
  ASSERT_EQ(known.source(), KnownZero::Source::kPagemap);
  uint8_t* p = region.as_ptr();
  p[7 * kPage] = 1;
  p[1050 * kPage + 5] = 1;
  volatile uint8_t sink = p[600 * kPage];  // Read: the zero page is mapped.
  (void)sink;
  std::vector<uint8_t> zero;
  known.Find(0, kPages, &zero);
  std::vector<uint64_t> not_zero;
  for (uint64_t i = 0; i < kPages; ++i) {
    if (zero[i] == 0) not_zero.push_back(i);
  }
  EXPECT_EQ(not_zero, (std::vector<uint64_t>{7, 600, 1050}));
  // Discarded, a page reads as zeros again.
  ASSERT_EQ(::madvise(p + 7 * kPage, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(ZeroPages(known, 6, 3), (std::vector<uint64_t>{6, 7, 8}));
  ::munmap(addr, kPages * kPage);
}

// What the caller declared does not count: a private mapping of a file,
// wrapped as if it were anonymous, holds the file's bytes where it has no
// page of its own.
TEST(KnownZero, APrivateFileMappingDeclaredAnonymousIsNotTrusted) {
  const int fd = ::memfd_create("known-zero-private", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4 * kPage), 0);
  const char byte = 9;
  ASSERT_EQ(::pwrite(fd, &byte, 1, kPage), 1);
  void* addr = ::mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ASSERT_NE(addr, MAP_FAILED);
  ASSERT_OK_AND_ASSIGN(MmapRegion<AtomicBitmap> region,
                       MmapRegion<AtomicBitmap>::BuildRaw(addr, 4 * kPage,
                                                          PROT_READ | PROT_WRITE,
                                                          MAP_PRIVATE | MAP_ANONYMOUS));
  const KnownZero known = KnownZero::For(region);
  EXPECT_EQ(known.source(), KnownZero::Source::kNothing);
  EXPECT_TRUE(ZeroPages(known, 0, 4).empty());
  ::munmap(addr, 4 * kPage);
  ::close(fd);
}

TEST(KnownZero, SharedAnonymousMemoryKnowsNothing) {
  ASSERT_OK_AND_ASSIGN(MmapRegion<AtomicBitmap> region,
                       MmapRegion<AtomicBitmap>::Build(std::nullopt, 4 * kPage,
                                                       PROT_READ | PROT_WRITE, MAP_SHARED));
  const KnownZero known = KnownZero::For(region);
  EXPECT_EQ(known.source(), KnownZero::Source::kNothing);
  EXPECT_TRUE(ZeroPages(known, 0, 4).empty());
}

}  // namespace
}  // namespace livemig::migration_internal
