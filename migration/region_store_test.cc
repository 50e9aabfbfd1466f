#include "migration/region_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/guest_memory.h"
#include "core/testing/status_matchers.h"
#include "migration/testing/region_store_fixture.h"
#include "migration/testing/resident_pages.h"
#include "migration/testing/scoped_tmpfs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
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

// How many of this process's descriptors name `path` after its unlinking.
int OpenButDeleted(const std::string& path) {
  int n = 0;
  for (const auto& fd : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    n += fs::read_symlink(fd.path(), ec) == fs::path(path + " (deleted)") ? 1 : 0;
  }
  return n;
}

// `len` bytes of `path` at `offset`, read with pread(2).
std::string Pread(const std::string& path, uint64_t offset, size_t len) {
  std::string bytes(len, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open failed>";
  const ssize_t n = ::pread(fd, bytes.data(), len, static_cast<off_t>(offset));
  ::close(fd);
  if (n != static_cast<ssize_t>(len)) return "<short read>";
  return bytes;
}

void Fill(const StoredRegion& r, char seed) {
  for (size_t i = 0; i < r.region.size(); ++i) {
    r.region.as_ptr()[i] = static_cast<uint8_t>(seed + i % 61);
  }
}

std::string Contents(const StoredRegion& r) {
  return std::string(reinterpret_cast<const char*>(r.region.as_ptr()),
                     r.region.size());
}

// RegionStoreOptions::prealloc: every region of the store's own, anonymous
// and file-backed, is mapped in before Create returns, and the stats say so;
// populated files no longer land through write(2).
TEST_F(RegionStoreTest, PreallocMakesEveryRegionResidentBeforeCreateReturns) {
  options_.prealloc = true;
  options_.prealloc_threads = 2;
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({Anonymous(0, 0, 300 * kPage),
                                     FileBacked(1, 1 << 30, 600 * kPage, "a/mem", 4 * kPage)})));
  for (const StoredRegion& r : store.regions()) {
    EXPECT_EQ(testing::ResidentPages(r.region.as_ptr(), r.region.size()),
              static_cast<int64_t>(r.region.size() / kPage))
        << "region " << r.info.index();
    EXPECT_FALSE(r.lands_through_file) << "region " << r.info.index();
  }
  EXPECT_EQ(store.prealloc().bytes, 900 * kPage);
  EXPECT_EQ(store.prealloc().threads, 2);
  EXPECT_GE(store.prealloc().ms, 0);
}

TEST_F(RegionStoreTest, WithoutPreallocNothingIsResidentAndNothingIsReported) {
  ASSERT_OK_AND_ASSIGN(RegionStore store, Create(Table({Anonymous(0, 0, 300 * kPage)})));
  EXPECT_EQ(testing::ResidentPages(store.regions()[0].region.as_ptr(), 300 * kPage), 0);
  EXPECT_EQ(store.prealloc().bytes, 0u);
  EXPECT_EQ(store.prealloc().threads, 0);
}

// A full filesystem is refused when the table arrives, naming the file and
// the bytes missing, before any page could land (and fault) in a mapping.
TEST_F(RegionStoreTest, TableLargerThanTheFreeSpaceIsResourceExhaustedUpFront) {
  testing::ScopedTmpfs small(root_, "1m");
  if (!small.mounted()) GTEST_SKIP() << small.why();
  EXPECT_THAT(Create(Table({FileBacked(0, 0, 1024 * kPage, "big.mem", 0)})),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 0: \"" + Root("big.mem") + ".livemig-partial\" needs "
                                  "4194304 bytes; its filesystem has "));
  EXPECT_TRUE(RootIsEmpty());
  // What fits is checked, not allocated, on tmpfs (allocating is what
  // landing round 0 through write(2) does anyway); ClaimDeferredSpace then
  // allocates what round 0 left: every page of the file.
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, 128 * kPage, "small.mem", 0)})));
  EXPECT_TRUE(store.regions()[0].lands_through_file);
  const std::string path = Root("small.mem.livemig-partial");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_blocks, 0);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::vector<uint8_t> page(kPage, 0x5a);
  ASSERT_EQ(::pwrite(fd, page.data(), kPage, 3 * kPage), static_cast<ssize_t>(kPage));
  ::close(fd);
  ASSERT_OK(store.ClaimDeferredSpace());
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_blocks) * 512, 128 * kPage);
  EXPECT_EQ(store.regions()[0].region.as_ptr()[3 * kPage], 0x5a);  // Kept.
}

// Space checked at Create but taken by someone else before round 0 ended:
// the deferred claim is the same clear error, before any page is written
// through a mapping into a hole (which would be SIGBUS).
TEST_F(RegionStoreTest, DeferredClaimOnAFilesystemThatFilledUpIsResourceExhausted) {
  testing::ScopedTmpfs small(root_, "1m");
  if (!small.mounted()) GTEST_SKIP() << small.why();
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, 128 * kPage, "vm.mem", 0)})));
  const int fd = ::open(Root("other").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fallocate(fd, 0, 0, 200 * kPage), 0);
  ::close(fd);
  EXPECT_THAT(store.ClaimDeferredSpace(),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 0: \"" + Root("vm.mem") + ".livemig-partial\" needs "
                                  "524288 bytes; its filesystem has "));
}

TEST_F(RegionStoreTest, ReservedPathIsInvalidArgumentAndCreatesNothing) {
  options_.reserved_paths = {"manifest.json"};
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "manifest.json", 0)})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "region 0: file_path \"manifest.json\" is a file the receiver "
                                  "writes itself"));
  EXPECT_TRUE(RootIsEmpty());
  EXPECT_OK(Create(Table({FileBacked(0, 0, kPage, "vm/manifest.json", 0)})));
}

// A directory of a reserved file's name would leave no room for the file:
// every later migration into that root_dir could not write its manifest.
TEST_F(RegionStoreTest, APathBelowOrAboveAReservedOneIsInvalidArgumentAndCreatesNothing) {
  options_.reserved_paths = {"manifest.json.tmp", "vm/state.json"};
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "manifest.json.tmp/x", 0)})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "\"manifest.json.tmp/x\" is in the way of "
                                  "\"manifest.json.tmp\""));
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "vm", 0)})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "\"vm\" is in the way of \"vm/state.json\""));
  EXPECT_TRUE(RootIsEmpty());
  EXPECT_OK(Create(Table({FileBacked(0, 0, kPage, "manifest.json.tmpx", 0)})));
}

TEST_F(RegionStoreTest, AbandonRemovesTheDirectoriesCreateMadeAndNoOthers) {
  fs::create_directories(Root("kept"));
  {
    ASSERT_OK_AND_ASSIGN(RegionStore store,
                         Create(Table({FileBacked(0, 0, kPage, "kept/new/deeper/mem", 0),
                                       FileBacked(1, kPage, kPage, "other/mem", 0)})));
    EXPECT_TRUE(fs::is_directory(Root("kept/new/deeper")));
    EXPECT_TRUE(fs::is_directory(Root("other")));
    store.Abandon();
  }
  EXPECT_TRUE(fs::is_directory(Root("kept")));
  EXPECT_FALSE(fs::exists(Root("kept/new")));
  EXPECT_FALSE(fs::exists(Root("other")));
  // A directory someone else filled meanwhile stays, with its file.
  {
    ASSERT_OK_AND_ASSIGN(RegionStore store,
                         Create(Table({FileBacked(0, 0, kPage, "made/mem", 0)})));
    WriteFile(Root("made/theirs"), "not ours");
  }
  EXPECT_EQ(ReadFile(Root("made/theirs")), "not ours");
}

TEST_F(RegionStoreTest, CreatesWritableAnonymousAndFileRegions) {
  ASSERT_OK_AND_ASSIGN(
      RegionStore store,
      Create(Table({Anonymous(0, 0x100000, 2 * kPage),
                    FileBacked(1, 0x200000, 4 * kPage, "vm/mem0", 2 * kPage)})));
  ASSERT_EQ(store.regions().size(), 2u);

  const StoredRegion& anon = store.regions()[0];
  EXPECT_EQ(anon.info.index(), 0u);
  EXPECT_EQ(anon.region.size(), 2 * kPage);
  EXPECT_FALSE(anon.region.file_offset().has_value());
  EXPECT_EQ(anon.final_path, "");
  EXPECT_EQ(anon.staging_path, "");

  const StoredRegion& file = store.regions()[1];
  EXPECT_EQ(file.region.size(), 4 * kPage);
  ASSERT_TRUE(file.region.file_offset().has_value());
  EXPECT_EQ(file.region.file_offset()->start(), 2 * kPage);
  EXPECT_EQ(file.final_path, Root("vm/mem0"));
  EXPECT_EQ(file.staging_path, Root("vm/mem0.livemig-partial"));

  Fill(anon, 'a');
  Fill(file, 'f');
  EXPECT_EQ(anon.region.as_ptr()[2 * kPage - 1], static_cast<uint8_t>(
                                                     'a' + (2 * kPage - 1) % 61));
  // The staging file exists (sized to offset + size); the final one does not.
  EXPECT_TRUE(fs::is_directory(Root("vm")));
  EXPECT_EQ(fs::file_size(file.staging_path), 6 * kPage);
  EXPECT_FALSE(fs::exists(file.final_path));
  EXPECT_EQ(Pread(file.staging_path, 2 * kPage, 4 * kPage), Contents(file));
}

// Memory the VMM lends (memfd here) is used as is: no mapping, file or
// directory of the store's for those regions; the store still makes what
// the other regions need.
TEST_F(RegionStoreTest, RegionsTheVmmGivesMemoryForUseItAndNothingElse) {
  const int memfd = ::memfd_create("vmm-ram", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  ASSERT_EQ(::ftruncate(memfd, 8 * kPage), 0);
  void* ram = ::mmap(nullptr, 8 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  ASSERT_NE(ram, MAP_FAILED);
  std::vector<uint32_t> asked;
  options_.provide = [&](const RegionDescription& info) -> absl::StatusOr<ProvidedMemory> {
    asked.push_back(info.index);
    if (info.index == 2) return ProvidedMemory{};  // This one: the store's own.
    const size_t offset = info.index == 0 ? 0 : 4 * kPage;
    return ProvidedMemory{static_cast<uint8_t*>(ram) + offset, 4 * kPage};
  };
  {
    ASSERT_OK_AND_ASSIGN(
        RegionStore store,
        Create(Table({Anonymous(0, 0x100000, 4 * kPage),
                      FileBacked(1, 0x200000, 4 * kPage, "vm/mem0", 0),
                      FileBacked(2, 0x300000, 2 * kPage, "vm/mem1", 0)})));
    EXPECT_EQ(asked, (std::vector<uint32_t>{0, 1, 2}));
    EXPECT_EQ(store.regions()[0].region.as_ptr(), ram);
    EXPECT_FALSE(store.regions()[0].starts_zeroed);
    EXPECT_EQ(store.regions()[1].region.as_ptr(), static_cast<uint8_t*>(ram) + 4 * kPage);
    EXPECT_EQ(store.regions()[1].final_path, "");
    EXPECT_TRUE(store.regions()[2].starts_zeroed);
    // Only the region left to the store has a staging file.
    EXPECT_FALSE(fs::exists(Root("vm/mem0.livemig-partial")));
    EXPECT_TRUE(fs::exists(Root("vm/mem1.livemig-partial")));
    Fill(store.regions()[1], 'v');
    ASSERT_OK(store.Commit());
    ASSERT_OK_AND_ASSIGN(GuestMemory<NoBitmap> memory, store.TakeGuestMemory());
    EXPECT_EQ(memory.region(1).region().as_ptr(), static_cast<uint8_t*>(ram) + 4 * kPage);
  }
  // The store never unmapped the VMM's memory: it still holds what landed.
  EXPECT_EQ(static_cast<uint8_t*>(ram)[4 * kPage + 1], static_cast<uint8_t>('v' + 1));
  ::munmap(ram, 8 * kPage);
  ::close(memfd);
}

TEST_F(RegionStoreTest, VmmMemoryThatDoesNotFitOrIsNotItsFdsIsRefusedBeforeAnythingIsCreated) {
  std::vector<uint8_t> small(2 * kPage + kPage);
  uint8_t* aligned = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(small.data()) + kPage - 1) / kPage * kPage);
  options_.provide = [&](const RegionDescription& info) -> absl::StatusOr<ProvidedMemory> {
    if (info.index == 0) return ProvidedMemory{};
    return ProvidedMemory{aligned, kPage};
  };
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "a/mem", 0),
                            Anonymous(1, 0x100000, 2 * kPage)})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "region 1: the VMM's memory (4096 bytes at 0x"));
  // An fd that is not the file the memory maps: its pages would land where
  // the guest never sees them (provided_mapping.h has the other cases).
  const int memfd = ::memfd_create("not-the-vmm-ram", MFD_CLOEXEC);
  options_.provide = [&](const RegionDescription&) -> absl::StatusOr<ProvidedMemory> {
    return ProvidedMemory{aligned, kPage, memfd, 0};
  };
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "a/mem", 0)})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "is a private mapping"));
  ::close(memfd);
  options_.provide = [](const RegionDescription&) -> absl::StatusOr<ProvidedMemory> {
    return absl::ResourceExhaustedError("no hugepages left");
  };
  EXPECT_THAT(Create(Table({FileBacked(0, 0, kPage, "a/mem", 0)})),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 0: the VMM's memory: no hugepages left"));
  // A message that names the region already is not prefixed with it again.
  options_.provide = [](const RegionDescription&) -> absl::StatusOr<ProvidedMemory> {
    return absl::FailedPreconditionError("region 0 (guest 0x0) matches no --region");
  };
  EXPECT_EQ(Create(Table({FileBacked(0, 0, kPage, "a/mem", 0)})).status(),
            absl::FailedPreconditionError(
                "the VMM's memory: region 0 (guest 0x0) matches no --region"));
  EXPECT_TRUE(RootIsEmpty());
}

TEST_F(RegionStoreTest, RegionsSharingAFileShareOneStagingFileSizedToTheMaxEnd) {
  ASSERT_OK_AND_ASSIGN(
      RegionStore store,
      Create(Table({FileBacked(0, 0x0, 3 * kPage, "mem", 8 * kPage),
                    FileBacked(1, 0x100000, 2 * kPage, "mem", 0)})));
  const StoredRegion& high = store.regions()[0];
  const StoredRegion& low = store.regions()[1];
  EXPECT_EQ(high.staging_path, low.staging_path);
  EXPECT_EQ(fs::file_size(high.staging_path), 11 * kPage);
  ASSERT_TRUE(high.region.mapping_identity().has_value());
  ASSERT_TRUE(low.region.mapping_identity().has_value());
  EXPECT_EQ(high.region.mapping_identity()->ino,
            low.region.mapping_identity()->ino);
  EXPECT_FALSE(high.region.FdsOverlap(low.region));

  Fill(high, 'h');
  Fill(low, 'l');
  EXPECT_EQ(Pread(low.staging_path, 0, 2 * kPage), Contents(low));
  EXPECT_EQ(Pread(high.staging_path, 8 * kPage, 3 * kPage), Contents(high));
  // The gap between the two ranges is untouched zeros.
  EXPECT_EQ(Pread(low.staging_path, 2 * kPage, kPage),
            std::string(kPage, '\0'));
}

TEST_F(RegionStoreTest, CommitRenamesStagingToFinalWithBytesAtFileOffsetAndFreesTheOldLater) {
  WriteFile(Root("mem"), "an older file, replaced as a whole by Commit");
  ASSERT_OK_AND_ASSIGN(
      RegionStore store,
      Create(Table({Anonymous(0, 0, kPage),
                    FileBacked(1, 0x10000, 2 * kPage, "mem", 4 * kPage),
                    FileBacked(2, 0x40000, kPage, "d/e/other", kPage)})));
  for (const StoredRegion& r : store.regions()) Fill(r, 'c');
  const std::string mem = Contents(store.regions()[1]);
  const std::string other = Contents(store.regions()[2]);

  ASSERT_OK(store.Commit());

  // The replaced file is freed only once the store lets it go, after the
  // source's pause, never inside it.
  EXPECT_EQ(OpenButDeleted(Root("mem")), 1);
  EXPECT_EQ(store.ReleaseReplaced(), 1u);
  EXPECT_EQ(OpenButDeleted(Root("mem")), 0);
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_FALSE(fs::exists(Root("d/e/other.livemig-partial")));
  EXPECT_EQ(fs::file_size(Root("mem")), 6 * kPage);
  EXPECT_EQ(Pread(Root("mem"), 4 * kPage, 2 * kPage), mem);
  EXPECT_EQ(Pread(Root("mem"), 0, kPage), std::string(kPage, '\0'));
  EXPECT_EQ(Pread(Root("d/e/other"), kPage, kPage), other);
  // Committed memory outlives the store's own destruction.
  ASSERT_OK_AND_ASSIGN(GuestMemory<NoBitmap> memory, store.TakeGuestMemory());
}

TEST_F(RegionStoreTest, AbandonRemovesStagingAndLeavesExistingFinalUntouched) {
  WriteFile(Root("mem"), "original contents");
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  Fill(store.regions()[0], 'x');
  ASSERT_TRUE(fs::exists(Root("mem.livemig-partial")));

  store.Abandon();

  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_EQ(ReadFile(Root("mem")), "original contents");
  EXPECT_THAT(store.Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store.TakeGuestMemory(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(RegionStoreTest, DestructorWithoutCommitAbandons) {
  WriteFile(Root("mem"), "original contents");
  {
    ASSERT_OK_AND_ASSIGN(
        RegionStore store,
        Create(Table({FileBacked(0, 0, kPage, "mem", 0),
                      FileBacked(1, kPage, kPage, "sub/mem", 0)})));
    Fill(store.regions()[0], 'x');
    ASSERT_TRUE(fs::exists(Root("sub/mem.livemig-partial")));
  }
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_FALSE(fs::exists(Root("sub/mem.livemig-partial")));
  EXPECT_FALSE(fs::exists(Root("sub/mem")));
  EXPECT_EQ(ReadFile(Root("mem")), "original contents");
}

TEST_F(RegionStoreTest, MovedStoreKeepsOwnershipOfItsStagingFiles) {
  ASSERT_OK_AND_ASSIGN(RegionStore first,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  std::optional<RegionStore> second;
  second.emplace(std::move(first));
  EXPECT_TRUE(fs::exists(Root("mem.livemig-partial")));
  second.reset();
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
}

TEST_F(RegionStoreTest, StaleStagingFileIsReplacedByAFreshEmptyOne) {
  WriteFile(Root("mem.livemig-partial"), std::string(3 * kPage, 'S'));
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  EXPECT_EQ(fs::file_size(Root("mem.livemig-partial")), kPage);
  EXPECT_EQ(Contents(store.regions()[0]), std::string(kPage, '\0'));
}

TEST_F(RegionStoreTest, FlushKeepsTheStagingNameUntilCommitPublishesIt) {
  WriteFile(Root("mem"), "original contents");
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  Fill(store.regions()[0], 'f');
  const std::string received = Contents(store.regions()[0]);
  ASSERT_OK(store.Flush());
  EXPECT_THAT(store.Flush(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(ReadFile(Root("mem")), "original contents");
  EXPECT_TRUE(ReadFile(Root("mem.livemig-partial")) == received);
  EXPECT_THAT(store.TakeGuestMemory(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(store.Commit());
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_TRUE(ReadFile(Root("mem")) == received);
}

TEST_F(RegionStoreTest, AbandonAfterFlushRemovesStagingAndKeepsTheOldFile) {
  WriteFile(Root("mem"), "original contents");
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  Fill(store.regions()[0], 'f');
  ASSERT_OK(store.Flush());
  store.Abandon();
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_EQ(ReadFile(Root("mem")), "original contents");
  EXPECT_THAT(store.Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(RegionStoreTest, CommitTwiceIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  ASSERT_OK(store.Commit());
  EXPECT_THAT(store.Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));
  store.Abandon();  // A no-op once committed.
  EXPECT_TRUE(fs::exists(Root("mem")));
}

TEST_F(RegionStoreTest, AnonymousOnlyTableCommitsWithoutRootDir) {
  options_.root_dir = "";
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({Anonymous(0, 0, kPage)})));
  EXPECT_OK(store.Commit());
}

TEST_F(RegionStoreTest, FailedCommitIsInternalAndLeavesStagingForAbandon) {
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({FileBacked(0, 0, kPage, "mem", 0)})));
  // Something puts a non-empty directory where the final file goes.
  fs::create_directories(Root("mem/inside"));

  EXPECT_THAT(store.Commit(), StatusIs(absl::StatusCode::kInternal));
  EXPECT_TRUE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_THAT(store.TakeGuestMemory(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(store.Commit(), StatusIs(absl::StatusCode::kFailedPrecondition));

  store.Abandon();
  EXPECT_FALSE(fs::exists(Root("mem.livemig-partial")));
  EXPECT_TRUE(fs::is_directory(Root("mem/inside")));
}

TEST_F(RegionStoreTest, TakeGuestMemoryBeforeCommitIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(RegionStore store,
                       Create(Table({Anonymous(0, 0, kPage)})));
  EXPECT_THAT(store.TakeGuestMemory(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(store.regions().size(), 1u);
}

TEST_F(RegionStoreTest, TakeGuestMemoryAfterCommitPlacesRegionsAtGuestAddrs) {
  ASSERT_OK_AND_ASSIGN(
      RegionStore store,
      Create(Table({FileBacked(0, 0x100000, 2 * kPage, "mem", kPage),
                    Anonymous(1, 0x0, kPage)})));
  store.regions()[0].region.as_ptr()[5] = 0xAB;
  store.regions()[1].region.as_ptr()[7] = 0xCD;
  ASSERT_OK(store.Commit());

  ASSERT_OK_AND_ASSIGN(GuestMemory<NoBitmap> memory, store.TakeGuestMemory());
  EXPECT_TRUE(store.regions().empty());
  ASSERT_EQ(memory.num_regions(), 2u);
  EXPECT_EQ(memory.region(0).start_addr(), GuestAddress(0x0));
  EXPECT_EQ(memory.region(0).len(), kPage);
  EXPECT_EQ(memory.region(1).start_addr(), GuestAddress(0x100000));
  EXPECT_EQ(memory.region(1).len(), 2 * kPage);
  ASSERT_OK_AND_ASSIGN(uint8_t in_file,
                       memory.ReadObj<uint8_t>(GuestAddress(0x100005)));
  EXPECT_EQ(in_file, 0xAB);
  ASSERT_OK_AND_ASSIGN(uint8_t in_anon,
                       memory.ReadObj<uint8_t>(GuestAddress(0x7)));
  EXPECT_EQ(in_anon, 0xCD);
  EXPECT_THAT(memory.ReadObj<uint8_t>(GuestAddress(kPage)),
              StatusIs(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(store.TakeGuestMemory(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

// ---- Validation: nothing is created unless the whole table is valid. ----

}  // namespace
}  // namespace livemig
