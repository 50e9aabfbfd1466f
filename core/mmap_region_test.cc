#include "core/mmap_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_tracker.h"
#include "core/file_offset.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr size_t kPage = 4096;

// A temporary file of `size` zero bytes in TEST_TMPDIR, unlinked when the
// object goes away. `fd` stays open for pread/pwrite checks.
class TempFile {
 public:
  explicit TempFile(size_t size) {
    const char* dir = std::getenv("TEST_TMPDIR");
    path_ = std::string(dir != nullptr ? dir : "/tmp") + "/mmap_region_XXXXXX";
    fd_ = ScopedFd(::mkstemp(path_.data()));
    if (fd_.valid() && ::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0) {
      fd_.Reset();
    }
  }
  ~TempFile() { ::unlink(path_.c_str()); }

  bool ok() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // A new, independent descriptor for the same file (a second open(2)).
  absl::StatusOr<FileOffset> Open(uint64_t start) const {
    return FileOffset::Open(path_, start);
  }

 private:
  std::string path_;
  ScopedFd fd_;
};

// True iff `addr` is no longer mapped (msync reports ENOMEM for unmapped
// pages).
bool IsUnmapped(void* addr) {
  errno = 0;
  const int rc = ::msync(addr, kPage, MS_ASYNC);
  return rc == -1 && errno == ENOMEM;
}

TEST(MmapRegion, CreateOfZeroBytesIsRefusedWithInvalidArgument) {
  EXPECT_THAT(MmapRegion<>::Create(0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MmapRegion<AtomicBitmap>::Create(0),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MmapRegion, CreateMakesAnOwnedSharedAnonymousReadWriteRegion) {
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<AtomicBitmap>::Create(3 * kPage));
  EXPECT_EQ(region.size(), 3 * kPage);
  EXPECT_EQ(region.len(), 3 * kPage);
  EXPECT_EQ(region.prot(), PROT_READ | PROT_WRITE);
  EXPECT_EQ(region.flags(), MAP_SHARED | MAP_NORESERVE | MAP_ANONYMOUS);
  EXPECT_TRUE(region.owned());
  EXPECT_FALSE(region.file_offset().has_value());
  EXPECT_FALSE(region.mapping_identity().has_value());
  EXPECT_EQ(region.bitmap().num_pages(), 3u);
  EXPECT_EQ(region.bitmap().CountDirty(), 0u);
  ASSERT_NE(region.as_ptr(), nullptr);
  EXPECT_EQ(region.as_ptr()[3 * kPage - 1], 0);
}

TEST(MmapRegion, WriteObjThroughTheRegionMarksItsPage) {
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<AtomicBitmap>::Create(4 * kPage));
  ASSERT_OK(region.WriteObj<uint64_t>(42, kPage));
  EXPECT_TRUE(region.bitmap().DirtyAt(kPage));
  EXPECT_EQ(region.bitmap().CountDirty(), 1u);
  ASSERT_OK_AND_ASSIGN(uint64_t v, region.ReadObj<uint64_t>(kPage));
  EXPECT_EQ(v, 42u);
  EXPECT_THAT(region.WriteObj<uint64_t>(1, 4 * kPage - 4),
              StatusIs(absl::StatusCode::kOutOfRange));
}

TEST(MmapRegion, BuildWithMapFixedIsRefusedWithInvalidArgument) {
  EXPECT_THAT(MmapRegion<>::Build(std::nullopt, kPage, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_FIXED),
              StatusIs(absl::StatusCode::kInvalidArgument));
  TempFile file(kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(0));
  EXPECT_THAT(MmapRegion<>::Build(std::move(offset), kPage, PROT_READ,
                                  MAP_SHARED | MAP_FIXED),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MmapRegion, BuildWithoutAFileAddsMapAnonymousAndKeepsProt) {
  ASSERT_OK_AND_ASSIGN(auto region,
                       MmapRegion<>::Build(std::nullopt, kPage, PROT_READ,
                                           MAP_PRIVATE));
  EXPECT_EQ(region.prot(), PROT_READ);
  EXPECT_EQ(region.flags(), MAP_PRIVATE | MAP_ANONYMOUS);
  ASSERT_OK_AND_ASSIGN(uint32_t v, region.ReadObj<uint32_t>(0));
  EXPECT_EQ(v, 0u);
}

TEST(MmapRegion, FileShorterThanMappingIsRefusedWithOutOfRange) {
  TempFile file(2 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset whole, file.Open(0));
  EXPECT_THAT(MmapRegion<>::FromFile(std::move(whole), 3 * kPage),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange, "8192"));
  ASSERT_OK_AND_ASSIGN(FileOffset at_page_one, file.Open(kPage));
  auto region = MmapRegion<>::FromFile(std::move(at_page_one), 2 * kPage);
  EXPECT_THAT(region, StatusIsWithMessage(absl::StatusCode::kOutOfRange, "8192"));
  EXPECT_THAT(region, StatusIsWithMessage(absl::StatusCode::kOutOfRange, "12288"));
}

TEST(MmapRegion, FileExactlyOffsetPlusSizeLongIsAccepted) {
  TempFile file(3 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(kPage));
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<>::FromFile(std::move(offset), 2 * kPage));
  EXPECT_EQ(region.size(), 2 * kPage);
}

TEST(MmapRegion, UnalignedFileOffsetIsRefusedWithInvalidArgument) {
  TempFile file(4 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(100));
  EXPECT_THAT(MmapRegion<>::FromFile(std::move(offset), kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MmapRegion, FileOffsetPlusSizeOverflowIsRefusedWithInvalidArgument) {
  TempFile file(kPage);
  ASSERT_TRUE(file.ok());
  const uint64_t huge = std::numeric_limits<uint64_t>::max() & ~uint64_t{kPage - 1};
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(huge));
  EXPECT_THAT(MmapRegion<>::FromFile(std::move(offset), kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK_AND_ASSIGN(FileOffset zero, file.Open(0));
  EXPECT_THAT(MmapRegion<>::FromFile(std::move(zero),
                                     std::numeric_limits<size_t>::max() & ~(kPage - 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MmapRegion, MapAnonymousWithAFileIsRefusedWithInvalidArgument) {
  TempFile file(kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(0));
  EXPECT_THAT(MmapRegion<>::Build(std::move(offset), kPage, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MmapRegion, FileBackedRegionAtAnOffsetSharesTheFilesBytes) {
  TempFile file(4 * kPage);
  ASSERT_TRUE(file.ok());
  const std::array<uint8_t, 4> marker = {0xC0, 0xFF, 0xEE, 0x11};
  ASSERT_EQ(::pwrite(file.fd(), marker.data(), marker.size(), 2 * kPage + 7), 4);
  ASSERT_OK_AND_ASSIGN(FileOffset offset, file.Open(2 * kPage));
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<AtomicBitmap>::FromFile(
                                        std::move(offset), 2 * kPage));
  EXPECT_EQ(region.prot(), PROT_READ | PROT_WRITE);
  EXPECT_EQ(region.flags(), MAP_SHARED);
  EXPECT_TRUE(region.owned());
  ASSERT_TRUE(region.file_offset().has_value());
  EXPECT_EQ(region.file_offset()->start(), 2 * kPage);
  EXPECT_NE(region.file_offset()->fd(), file.fd());

  std::array<uint8_t, 4> seen = {};
  ASSERT_OK(region.Read(seen, 7));
  EXPECT_EQ(seen, marker);

  const std::array<uint8_t, 3> written = {1, 2, 3};
  ASSERT_OK(region.Write(written, kPage + 5));
  EXPECT_TRUE(region.bitmap().DirtyAt(kPage));
  EXPECT_FALSE(region.bitmap().DirtyAt(0));
  std::array<uint8_t, 3> in_file = {};
  ASSERT_EQ(::pread(file.fd(), in_file.data(), in_file.size(), 3 * kPage + 5), 3);
  EXPECT_EQ(in_file, written);
  std::array<uint8_t, 3> before = {9, 9, 9};
  ASSERT_EQ(::pread(file.fd(), before.data(), before.size(), kPage + 5), 3);
  EXPECT_THAT(before, ::testing::ElementsAre(0, 0, 0));
}

TEST(MmapRegion, FileBackedRegionKeepsItsFileOpen) {
  TempFile file(kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset dup, FileOffset::Dup(file.fd(), 0));
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<>::FromFile(std::move(dup), kPage));
  ASSERT_TRUE(region.file_offset().has_value());
  const int fd = region.file_offset()->fd();
  EXPECT_NE(fd, file.fd());
  EXPECT_NE(::fcntl(fd, F_GETFD), -1);
  EXPECT_TRUE(region.mapping_identity().has_value());
}

TEST(MmapRegion, SameFileThroughTwoDescriptorsOverlapsWhenRangesIntersect) {
  TempFile file(4 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset a_off, file.Open(0));
  ASSERT_OK_AND_ASSIGN(FileOffset b_off, file.Open(kPage));
  ASSERT_NE(a_off.fd(), b_off.fd());
  ASSERT_OK_AND_ASSIGN(auto a, MmapRegion<>::FromFile(std::move(a_off), 2 * kPage));
  ASSERT_OK_AND_ASSIGN(auto b, MmapRegion<AtomicBitmap>::FromFile(std::move(b_off),
                                                                  2 * kPage));
  EXPECT_TRUE(a.FdsOverlap(b));
  EXPECT_TRUE(b.FdsOverlap(a));
  EXPECT_TRUE(a.FdsOverlap(a));
}

TEST(MmapRegion, SameFileWithDisjointRangesDoesNotOverlap) {
  TempFile file(4 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset a_off, file.Open(0));
  ASSERT_OK_AND_ASSIGN(FileOffset b_off, file.Open(2 * kPage));
  ASSERT_OK_AND_ASSIGN(auto a, MmapRegion<>::FromFile(std::move(a_off), 2 * kPage));
  ASSERT_OK_AND_ASSIGN(auto b, MmapRegion<>::FromFile(std::move(b_off), 2 * kPage));
  EXPECT_FALSE(a.FdsOverlap(b));  // [0, 2p) and [2p, 4p) only touch.
  EXPECT_FALSE(b.FdsOverlap(a));
}

TEST(MmapRegion, DifferentFilesDoNotOverlap) {
  TempFile file1(2 * kPage);
  TempFile file2(2 * kPage);
  ASSERT_TRUE(file1.ok());
  ASSERT_TRUE(file2.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset a_off, file1.Open(0));
  ASSERT_OK_AND_ASSIGN(FileOffset b_off, file2.Open(0));
  ASSERT_OK_AND_ASSIGN(auto a, MmapRegion<>::FromFile(std::move(a_off), 2 * kPage));
  ASSERT_OK_AND_ASSIGN(auto b, MmapRegion<>::FromFile(std::move(b_off), 2 * kPage));
  EXPECT_FALSE(a.FdsOverlap(b));
  EXPECT_FALSE(b.FdsOverlap(a));
}

TEST(MmapRegion, AnonymousRegionsNeverOverlap) {
  TempFile file(kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset off, file.Open(0));
  ASSERT_OK_AND_ASSIGN(auto backed, MmapRegion<>::FromFile(std::move(off), kPage));
  ASSERT_OK_AND_ASSIGN(auto anon1, MmapRegion<>::Create(kPage));
  ASSERT_OK_AND_ASSIGN(auto anon2, MmapRegion<>::Create(kPage));
  EXPECT_FALSE(anon1.FdsOverlap(anon2));
  EXPECT_FALSE(anon1.FdsOverlap(anon1));
  EXPECT_FALSE(anon1.FdsOverlap(backed));
  EXPECT_FALSE(backed.FdsOverlap(anon1));
}

TEST(MmapRegion, BuildRawRefusesNullUnalignedAndEmpty) {
  EXPECT_THAT(MmapRegion<>::BuildRaw(nullptr, kPage, PROT_READ, MAP_SHARED),
              StatusIs(absl::StatusCode::kInvalidArgument));
  void* addr = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(addr, MAP_FAILED);
  EXPECT_THAT(MmapRegion<>::BuildRaw(static_cast<uint8_t*>(addr) + 8, 64,
                                     PROT_READ, MAP_PRIVATE),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MmapRegion<>::BuildRaw(addr, 0, PROT_READ, MAP_PRIVATE),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_EQ(::munmap(addr, kPage), 0);
}

TEST(MmapRegion, RawRegionIsNotOwnedAndStaysMappedAfterDestruction) {
  void* addr = ::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(addr, MAP_FAILED);
  {
    ASSERT_OK_AND_ASSIGN(auto region,
                         MmapRegion<AtomicBitmap>::BuildRaw(
                             addr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE));
    EXPECT_FALSE(region.owned());
    EXPECT_EQ(region.as_ptr(), addr);
    EXPECT_EQ(region.size(), 2 * kPage);
    EXPECT_EQ(region.prot(), PROT_READ | PROT_WRITE);
    EXPECT_EQ(region.flags(), MAP_PRIVATE);
    EXPECT_FALSE(region.file_offset().has_value());
    ASSERT_OK(region.WriteObj<uint32_t>(77, kPage));
    EXPECT_TRUE(region.bitmap().DirtyAt(kPage));
  }
  EXPECT_FALSE(IsUnmapped(addr));
  auto* bytes = static_cast<uint8_t*>(addr);
  bytes[kPage + 100] = 5;  // Would fault if the region had unmapped it.
  EXPECT_EQ(bytes[kPage], 77);
  EXPECT_EQ(::munmap(addr, 2 * kPage), 0);
}

TEST(MmapRegion, OwnedRegionIsUnmappedOnDestruction) {
  void* addr = nullptr;
  {
    ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<>::Create(kPage));
    addr = region.as_ptr();
    EXPECT_FALSE(IsUnmapped(addr));
  }
  EXPECT_TRUE(IsUnmapped(addr));
}

TEST(MmapRegion, MoveConstructionKeepsTheMappingAndTheBitmap) {
  ASSERT_OK_AND_ASSIGN(auto original, MmapRegion<AtomicBitmap>::Create(4 * kPage));
  ASSERT_OK(original.WriteObj<uint32_t>(0xAB, kPage));
  ASSERT_OK_AND_ASSIGN(auto early_slice, original.GetSlice(3 * kPage, 16));
  uint8_t* const addr = original.as_ptr();

  MmapRegion<AtomicBitmap> moved(std::move(original));
  EXPECT_EQ(moved.as_ptr(), addr);
  EXPECT_EQ(moved.size(), 4 * kPage);
  EXPECT_TRUE(moved.owned());
  EXPECT_TRUE(moved.bitmap().DirtyAt(kPage));
  ASSERT_OK_AND_ASSIGN(uint32_t v, moved.ReadObj<uint32_t>(kPage));
  EXPECT_EQ(v, 0xABu);
  // A slice handed out before the move still marks the (same) bitmap.
  ASSERT_OK(early_slice.WriteObj<uint8_t>(1, 0));
  EXPECT_TRUE(moved.bitmap().DirtyAt(3 * kPage));
  EXPECT_EQ(moved.bitmap().CountDirty(), 2u);
  EXPECT_FALSE(IsUnmapped(addr));
}

TEST(MmapRegion, MoveAssignmentKeepsTheSourceAndUnmapsTheTarget) {
  TempFile file(2 * kPage);
  ASSERT_TRUE(file.ok());
  ASSERT_OK_AND_ASSIGN(FileOffset off, file.Open(0));
  ASSERT_OK_AND_ASSIGN(auto source,
                       MmapRegion<AtomicBitmap>::FromFile(std::move(off), 2 * kPage));
  ASSERT_OK(source.WriteObj<uint16_t>(0x5A5A, kPage + 2));
  ASSERT_OK_AND_ASSIGN(auto target, MmapRegion<AtomicBitmap>::Create(kPage));
  uint8_t* const source_addr = source.as_ptr();
  uint8_t* const target_addr = target.as_ptr();

  target = std::move(source);
  EXPECT_TRUE(IsUnmapped(target_addr));
  EXPECT_EQ(target.as_ptr(), source_addr);
  EXPECT_EQ(target.size(), 2 * kPage);
  EXPECT_EQ(target.flags(), MAP_SHARED);
  ASSERT_TRUE(target.file_offset().has_value());
  EXPECT_TRUE(target.mapping_identity().has_value());
  EXPECT_TRUE(target.bitmap().DirtyAt(kPage));
  EXPECT_FALSE(target.bitmap().DirtyAt(0));
  EXPECT_EQ(target.bitmap().num_pages(), 2u);
  ASSERT_OK_AND_ASSIGN(uint16_t v, target.ReadObj<uint16_t>(kPage + 2));
  EXPECT_EQ(v, 0x5A5A);
}

TEST(MmapRegion, HugetlbfsHintIsUnsetUntilSet) {
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<>::Create(kPage));
  EXPECT_EQ(region.is_hugetlbfs(), std::nullopt);
  region.set_hugetlbfs(true);
  EXPECT_EQ(region.is_hugetlbfs(), std::optional<bool>(true));
  region.set_hugetlbfs(false);
  EXPECT_EQ(region.is_hugetlbfs(), std::optional<bool>(false));
}

}  // namespace
}  // namespace livemig
