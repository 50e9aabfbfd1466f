// RegionStore::Create refuses every region table it cannot rebuild safely
// (migration/region_table.h): with the exact code, the region and the
// reason, and nothing left under root_dir.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/region_store.h"
#include "migration/testing/region_store_fixture.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

namespace fs = std::filesystem;
using ::livemig::testing::Anonymous;
using ::livemig::testing::FileBacked;
using ::livemig::testing::kPage;
using ::livemig::testing::ReadFile;
using ::livemig::testing::RegionStoreTest;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::Table;
using ::livemig::testing::WriteFile;

class RegionStoreValidationTest : public RegionStoreTest {
 protected:
  // Expects Create to fail with `code`, a message containing `substring`, and
  // nothing left under root_dir.
  void ExpectRefused(const proto::RegionTable& table, absl::StatusCode code,
                     const std::string& substring) {
    EXPECT_THAT(Create(table), StatusIsWithMessage(code, substring));
    EXPECT_TRUE(RootIsEmpty()) << "Create left files behind";
  }
};

TEST_F(RegionStoreValidationTest, EmptyTableIsInvalidArgument) {
  ExpectRefused(Table({}), absl::StatusCode::kInvalidArgument, "no regions");
}

TEST_F(RegionStoreValidationTest, IndexNotItsPositionIsInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, 0, kPage), Anonymous(2, kPage, kPage)}),
                absl::StatusCode::kInvalidArgument, "region 1: index");
}

TEST_F(RegionStoreValidationTest, ZeroSizeIsInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, 0, 0)}),
                absl::StatusCode::kInvalidArgument, "region 0: size");
}

TEST_F(RegionStoreValidationTest, SizeNotAPageMultipleIsInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, 0, kPage), Anonymous(1, kPage, kPage + 1)}),
                absl::StatusCode::kInvalidArgument, "region 1: size");
}

TEST_F(RegionStoreValidationTest, UnspecifiedBackingIsInvalidArgument) {
  proto::RegionInfo info = Anonymous(0, 0, kPage);
  info.set_backing(proto::BACKING_UNSPECIFIED);
  ExpectRefused(Table({info}), absl::StatusCode::kInvalidArgument,
                "region 0: backing");
}

TEST_F(RegionStoreValidationTest, AnonymousWithFilePathIsInvalidArgument) {
  proto::RegionInfo info = Anonymous(0, 0, kPage);
  info.set_file_path("mem");
  ExpectRefused(Table({info}), absl::StatusCode::kInvalidArgument,
                "region 0: file_path");
}

TEST_F(RegionStoreValidationTest, OverlappingGuestRangesAreInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, 0x10000, 4 * kPage),
                       FileBacked(1, 0x10000 + 3 * kPage, kPage, "mem", 0)}),
                absl::StatusCode::kInvalidArgument, "region 1: guest_addr");
}

TEST_F(RegionStoreValidationTest, UnalignedGuestAddressIsInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, 0x1001, kPage)}), absl::StatusCode::kInvalidArgument,
                "region 0: guest_addr 0x1001 is not a multiple of the page size 4096");
}

TEST_F(RegionStoreValidationTest, GuestRangeOverflowIsInvalidArgument) {
  ExpectRefused(Table({Anonymous(0, UINT64_MAX - kPage + 2, kPage)}),
                absl::StatusCode::kInvalidArgument, "region 0: guest_addr");
}

TEST_F(RegionStoreValidationTest, RegionEndingAtTopOfAddressSpaceIsAccepted) {
  EXPECT_OK(Create(Table({Anonymous(0, UINT64_MAX - kPage + 1, kPage)})));
}

TEST_F(RegionStoreValidationTest, OverlappingFileRangesAreInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, 4 * kPage, "mem", 0),
                       FileBacked(1, 0x100000, 2 * kPage, "mem", 3 * kPage)}),
                absl::StatusCode::kInvalidArgument, "region 1: file_offset");
}

TEST_F(RegionStoreValidationTest, UnalignedFileOffsetIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "mem", 512)}),
                absl::StatusCode::kInvalidArgument, "region 0: file_offset");
}

TEST_F(RegionStoreValidationTest, FileOffsetOverflowIsInvalidArgument) {
  ExpectRefused(
      Table({FileBacked(0, 0, 2 * kPage, "mem", (UINT64_MAX / kPage) * kPage)}),
      absl::StatusCode::kInvalidArgument, "region 0: file_offset");
}

TEST_F(RegionStoreValidationTest, EmptyFilePathIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "", 0)}),
                absl::StatusCode::kInvalidArgument, "region 0: file_path");
}

TEST_F(RegionStoreValidationTest, AbsoluteFilePathIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, outside_ + "/mem", 0)}),
                absl::StatusCode::kInvalidArgument, "is absolute");
  EXPECT_TRUE(fs::is_empty(outside_));
}

TEST_F(RegionStoreValidationTest, DotDotFilePathIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "../outside/mem", 0)}),
                absl::StatusCode::kInvalidArgument, "\"..\"");
  ExpectRefused(Table({FileBacked(0, 0, kPage, "a/../../outside/mem", 0)}),
                absl::StatusCode::kInvalidArgument, "\"..\"");
  EXPECT_TRUE(fs::is_empty(outside_));
}

TEST_F(RegionStoreValidationTest, NonCanonicalFilePathIsInvalidArgument) {
  for (const char* path : {"a//mem", "./mem", "a/./mem", "mem/"}) {
    ExpectRefused(Table({FileBacked(0, 0, kPage, path, 0)}),
                  absl::StatusCode::kInvalidArgument, "not canonical");
  }
}

TEST_F(RegionStoreValidationTest, StagingSuffixFilePathIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "mem", 0),
                       FileBacked(1, kPage, kPage, "mem.livemig-partial", 0)}),
                absl::StatusCode::kInvalidArgument, "region 1: file_path");
}

TEST_F(RegionStoreValidationTest, FileUsedAsDirectoryIsInvalidArgument) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "a", 0),
                       FileBacked(1, kPage, kPage, "a/mem", 0)}),
                absl::StatusCode::kInvalidArgument, "region 1: file_path");
}

TEST_F(RegionStoreValidationTest, SymlinkDirectoryOutsideRootIsPermissionDenied) {
  fs::create_directory_symlink(outside_, Root("link"));
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "link/mem", 0)})),
              StatusIsWithMessage(absl::StatusCode::kPermissionDenied,
                                  "region 0: file_path"));
  EXPECT_TRUE(fs::is_empty(outside_));
}

TEST_F(RegionStoreValidationTest, SymlinkDirectoryInsideRootIsPermissionDenied) {
  fs::create_directories(Root("real"));
  fs::create_directory_symlink("real", Root("a"));
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "a/mem", 0)})),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_TRUE(fs::is_empty(Root("real")));
}

TEST_F(RegionStoreValidationTest, SymlinkFinalNameIsPermissionDenied) {
  WriteFile(outside_ + "/victim", "victim");
  fs::create_symlink(outside_ + "/victim", Root("mem"));
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "mem", 0)})),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(ReadFile(outside_ + "/victim"), "victim");
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
}

TEST_F(RegionStoreValidationTest, LaterInvalidRegionCreatesNothing) {
  ExpectRefused(Table({FileBacked(0, 0, kPage, "dir/mem", 0),
                       Anonymous(1, kPage, kPage),
                       FileBacked(2, 2 * kPage, kPage, "/abs", 0)}),
                absl::StatusCode::kInvalidArgument, "region 2: file_path");
}

TEST_F(RegionStoreValidationTest, MissingRootDirIsNotFound) {
  options_.root_dir = root_ + "/missing";
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "mem", 0)})),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(RegionStoreValidationTest, TableOverTheByteLimitIsResourceExhausted) {
  options_.max_total_bytes = 3 * kPage;
  ExpectRefused(Table({Anonymous(0, 0, 2 * kPage),
                       FileBacked(1, 2 * kPage, 2 * kPage, "mem", 0)}),
                absl::StatusCode::kResourceExhausted, "limit");
}

// The bytes before a region's file_offset stay a hole: a source cannot make
// the receiver fill a disk with an 8 KiB region at a large offset.
TEST_F(RegionStoreValidationTest, ARegionAtALargeFileOffsetClaimsOnlyItsOwnBytes) {
  constexpr uint64_t kOffset = uint64_t{1} << 30;
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, 2 * kPage, "mem", kOffset)})));
  ASSERT_OK(store.ClaimDeferredSpace());  // tmpfs claims after round 0.
  struct stat st;
  ASSERT_EQ(::stat(Root(std::string("mem") + kStagingSuffix).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kOffset + 2 * kPage);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, uint64_t{1} << 20);
  store.Abandon();
}

TEST_F(RegionStoreValidationTest, AFileOffsetPastTheFilesystemsLimitIsInvalidArgument) {
  constexpr uint64_t kOffset = uint64_t{1} << 50;  // 1 PiB: ext4 ends at 16 TiB.
  const std::string probe = Root("probe");
  const int fd = ::open(probe.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  const bool allowed = ::ftruncate(fd, static_cast<off_t>(kOffset + 2 * kPage)) == 0;
  ::close(fd);
  ::unlink(probe.c_str());
  if (allowed) GTEST_SKIP() << "this filesystem allows a 1 PiB file";
  ExpectRefused(Table({FileBacked(0, 0, 2 * kPage, "mem", kOffset)}),
                absl::StatusCode::kInvalidArgument,
                "region 0: file_offset + size ends its file at byte 1125899906850816, past "
                "what the filesystem");
}

TEST_F(RegionStoreValidationTest, PageSizeNotAPowerOfTwoIsInvalidArgument) {
  EXPECT_THAT(RegionStore::Create(Table({Anonymous(0, 0, kPage)}), 3000,
                                  options_),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace livemig
