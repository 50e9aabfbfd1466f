#include "tools/cli/prepared_memory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::cli {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr uint64_t kMiB = 1 << 20;

std::string TempDir(const std::string& name) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<DeclaredRegion> Declared(const std::vector<std::string>& texts) {
  std::vector<DeclaredRegion> out;
  for (const std::string& t : texts) {
    absl::StatusOr<DeclaredRegion> r = ParseDeclaredRegion(t);
    EXPECT_OK(r.status());
    if (r.ok()) out.push_back(*r);
  }
  return out;
}

RegionDescription Incoming(uint32_t index, uint32_t of, uint64_t gpa, uint64_t size,
                           const std::string& file = "", uint64_t file_offset = 0) {
  RegionDescription r;
  r.index = index;
  r.table_regions = of;
  r.guest_addr = gpa;
  r.size = size;
  r.page_size = 4096;
  if (!file.empty()) {
    r.backing = RegionDescription::Backing::kFile;
    r.file_path = file;
    r.file_offset = file_offset;
  }
  return r;
}

// Entries of `dir` (names only).
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(ParseDeclaredRegion, ReadsAddressAndSize) {
  ASSERT_OK_AND_ASSIGN(DeclaredRegion r, ParseDeclaredRegion("gpa=1GiB,size=0x200000"));
  EXPECT_EQ(r.gpa, 1ull << 30);
  EXPECT_EQ(r.size, 2 * kMiB);
  EXPECT_EQ(r.text, "gpa=1GiB,size=0x200000");
}

TEST(ParseDeclaredRegion, RefusesWhatReceiveCannotUseNamingTheFlag) {
  EXPECT_THAT(ParseDeclaredRegion("gpa=0,size=1M,file=/x"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=0,size=1M,file=/x: unknown key \"file\""));
  EXPECT_THAT(ParseDeclaredRegion("size=1M"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=size=1M: gpa= and size= are required"));
  EXPECT_THAT(ParseDeclaredRegion("gpa=0,size=1000"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=0,size=1000: gpa and size must be multiples"));
  EXPECT_THAT(ParseDeclaredRegion("gpa=0,size=1M,gpa=4096"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=0,size=1M,gpa=4096: gpa= is given twice"));
  EXPECT_THAT(ParseDeclaredRegion("gpa=0xfffffffffffff000,size=8K"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "gpa + size is past the end of the address space"));
  EXPECT_THAT(ParseDeclaredRegion("gpa=0,size=lots"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "--region=gpa=0,size=lots: size:"));
}

TEST(PreparedMemory, OverlappingRegionsAreRefusedNamingBoth) {
  const std::string dir = TempDir("overlap");
  EXPECT_THAT(PreparedMemory::Make(dir, Declared({"gpa=0,size=2M", "gpa=1M,size=1M"}), false),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=1M,size=1M overlaps --region=gpa=0,size=2M"));
  EXPECT_TRUE(Entries(dir).empty());
}

TEST(PreparedMemory, PopulatesBeforeAnySourceAndLendsTheMatchingRegion) {
  const std::string dir = TempDir("lend");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=2M", "gpa=1G,size=1M"}),
                                            /*populate=*/true));
  EXPECT_EQ(prepared.populated_bytes(), 3 * kMiB);
  // Made in the directory, under hidden names, before any table.
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{".livemig-prepared-0", ".livemig-prepared-1"}));
  struct stat st;
  ASSERT_EQ(::stat((dir + "/.livemig-prepared-0").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(2 * kMiB));
  EXPECT_GE(st.st_blocks * 512, static_cast<blkcnt_t>(2 * kMiB));  // Allocated.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 0777, 0644 & ~mask) << "the mode of the receiver's own files";

  auto provide = prepared.Provider();
  ASSERT_OK_AND_ASSIGN(ProvidedMemory a, provide(Incoming(0, 2, 0, 2 * kMiB, "guest.img")));
  ASSERT_OK_AND_ASSIGN(ProvidedMemory b, provide(Incoming(1, 2, 1ull << 30, kMiB)));
  ASSERT_NE(a.addr, nullptr);
  EXPECT_EQ(a.size, 2 * kMiB);
  EXPECT_EQ(b.size, kMiB);
  EXPECT_EQ(a.fd, -1);  // Populated: landed through the mapping.
  std::memset(a.addr, 0xab, 4096);  // What the receiver would land.

  ASSERT_OK(prepared.Commit());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> files, prepared.Flush({"", ""}));
  EXPECT_EQ(files, (std::vector<std::string>{dir + "/guest.img", dir + "/region-1.mem"}));
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{"guest.img", "region-1.mem"}));
  std::ifstream in(dir + "/guest.img", std::ios::binary);
  char first = 0;
  in.read(&first, 1);
  EXPECT_EQ(static_cast<unsigned char>(first), 0xab);
}

TEST(PreparedMemory, UnpopulatedMemoryIsLentWithItsFileForPwrite) {
  const std::string dir = TempDir("unpopulated");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false));
  EXPECT_EQ(prepared.populated_bytes(), 0u);
  ASSERT_OK_AND_ASSIGN(ProvidedMemory lent, prepared.Provider()(Incoming(0, 1, 0, kMiB)));
  ASSERT_GE(lent.fd, 0);
  EXPECT_EQ(lent.file_offset, 0u);
  struct stat by_fd, by_name;
  ASSERT_EQ(::fstat(lent.fd, &by_fd), 0);
  ASSERT_EQ(::stat((dir + "/.livemig-prepared-0").c_str(), &by_name), 0);
  EXPECT_EQ(by_fd.st_ino, by_name.st_ino);
  EXPECT_EQ(by_fd.st_blocks, 0);  // Still holes.
}

TEST(PreparedMemory, ARegionMatchingNoDeclaredOneIsRefusedNamingBoth) {
  const std::string dir = TempDir("nomatch");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=2M"}), false));
  EXPECT_THAT(prepared.Provider()(Incoming(0, 1, 0, 4 * kMiB)),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "region 0 (guest 0x0, 4.0 MiB) matches no --region; "
                                  "declared: gpa=0,size=2M"));
}

TEST(PreparedMemory, ATableLeavingADeclaredRegionUnusedIsRefusedAtItsLastRegion) {
  const std::string dir = TempDir("unused");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=2M", "gpa=4M,size=1M"}),
                                            false));
  EXPECT_THAT(prepared.Provider()(Incoming(0, 1, 0, 2 * kMiB)),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "--region=gpa=4M,size=1M: the source's guest has no region there"));
}

// One source file holding two regions (below and above a PCI hole, say):
// published as files of their own, the second would replace the first, at
// the wrong offset.
TEST(PreparedMemory, ALayoutPublishCannotRebuildIsRefusedBeforeAnyPage) {
  const std::string dir = TempDir("layout");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=2M", "gpa=4G,size=1M"}),
                                            false));
  auto provide = prepared.Provider();
  ASSERT_OK(provide(Incoming(0, 2, 0, 2 * kMiB, "guest.mem")).status());
  EXPECT_THAT(provide(Incoming(1, 2, 4ull << 30, kMiB, "guest.mem", 2 * kMiB)),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "region 1 is at offset 2097152 of \"guest.mem\" on the source, "
                                  "but --region=gpa=4G,size=1M is published as a file of its own"));
  // An anonymous region whose default name a file region already has.
  ASSERT_OK_AND_ASSIGN(PreparedMemory again,
                       PreparedMemory::Make(TempDir("names"),
                                            Declared({"gpa=0,size=2M", "gpa=4G,size=1M"}), false));
  auto lend = again.Provider();
  ASSERT_OK(lend(Incoming(0, 2, 0, 2 * kMiB, "region-1.mem")).status());
  EXPECT_THAT(lend(Incoming(1, 2, 4ull << 30, kMiB)),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "regions 0 and 1 would both be published as \"region-1.mem\""));
}

// The source names the regions: a name of the hidden prepared files, or a
// path the receiver would refuse for its own files (an existing directory,
// a symlinked directory), is refused at the table, before any page.
TEST(PreparedMemory, NamesPublishWouldMisuseAreRefusedAtTheTable) {
  const std::string dir = TempDir("names-refused");
  std::filesystem::create_directories(dir + "/region-0.mem/sub");
  std::filesystem::create_directories(dir + "/../names-outside");
  std::filesystem::create_symlink(dir + "/../names-outside", dir + "/vm");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false));
  auto provide = prepared.Provider();
  EXPECT_THAT(provide(Incoming(0, 1, 0, kMiB, ".livemig-prepared-1")),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "region 0: file_path \".livemig-prepared-1\" is a name livemig "
                                  "keeps for its own files"));
  EXPECT_THAT(provide(Incoming(0, 1, 0, kMiB)),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "\"region-0.mem\" exists and is not a regular file"));
  EXPECT_THAT(provide(Incoming(0, 1, 0, kMiB, "vm/mem0")),
              StatusIsWithMessage(absl::StatusCode::kPermissionDenied, "component \"vm\" is a symlink"));
  ASSERT_OK_AND_ASSIGN(ProvidedMemory lent, provide(Incoming(0, 1, 0, kMiB, "ok/mem0")));
  EXPECT_TRUE(lent.zeroed);  // Fresh: ZERO pages are left as holes.
}

TEST(PreparedMemory, CommitMakesTheDirectoriesOfTheRegionsName) {
  const std::string dir = TempDir("subdir");
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false));
  ASSERT_OK(prepared.Provider()(Incoming(0, 1, 0, kMiB, "vm/ram/mem0")).status());
  ASSERT_OK(prepared.Commit());
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> files, prepared.Flush({""}));
  EXPECT_EQ(files, (std::vector<std::string>{dir + "/vm/ram/mem0"}));
  EXPECT_EQ(std::filesystem::file_size(dir + "/vm/ram/mem0"), kMiB);
}

// The names are taken before the source is told COMMITTED: one that cannot
// be taken fails the commit (the source resumes its guest), the names
// taken so far are given back, and the memory goes as a failed migration's.
// (Published after COMMITTED, a failure left the guest only in the hidden
// file, which the next start removed.)
TEST(PreparedMemory, ACommitThatCannotTakeANameRenamesNothingAndFails) {
  const std::string dir = TempDir("commit-fails");
  {
    ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                         PreparedMemory::Make(dir, Declared({"gpa=0,size=1M", "gpa=4M,size=1M"}),
                                              false));
    auto provide = prepared.Provider();
    ASSERT_OK(provide(Incoming(0, 2, 0, kMiB, "mem0")).status());
    ASSERT_OK(provide(Incoming(1, 2, 4 * kMiB, kMiB, "taken/mem1")).status());
    std::ofstream(dir + "/taken") << "a file where the directory would go";
    std::ofstream(dir + "/mem0") << "an earlier migration's";
    EXPECT_THAT(prepared.Commit(),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                    "region 1: file_path \"taken/mem1\": component \"taken\" "
                                    "exists and is not a directory"));
    EXPECT_EQ(Entries(dir), (std::vector<std::string>{".livemig-prepared-0",
                                                      ".livemig-prepared-1", "mem0", "taken"}));
  }
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{"mem0", "taken"}));
  // The earlier migration's file is whole again (it had been replaced).
  std::ifstream in(dir + "/mem0");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "an earlier migration's");
}

// An earlier migration's file at the name is swapped out at the commit and
// removed only by Flush(), after the source was told (freeing a large file
// takes long; the pause does not wait for it).
TEST(PreparedMemory, ACommitReplacesAnEarlierFileAndFlushRemovesIt) {
  const std::string dir = TempDir("commit-replaces");
  std::ofstream(dir + "/mem0") << "an earlier migration's";
  ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                       PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false));
  ASSERT_OK(prepared.Provider()(Incoming(0, 1, 0, kMiB, "mem0")).status());
  ASSERT_OK(prepared.Commit());
  EXPECT_EQ(std::filesystem::file_size(dir + "/mem0"), kMiB);
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{".livemig-prepared-0", "mem0"}));
  ASSERT_OK(prepared.Flush({""}).status());
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{"mem0"}));
}

TEST(PreparedMemory, FilesNeverPublishedAreRemoved) {
  const std::string dir = TempDir("removed");
  {
    ASSERT_OK_AND_ASSIGN(PreparedMemory prepared,
                         PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false));
    EXPECT_EQ(Entries(dir).size(), 1u);
  }  // A failed migration: ReceiveOne() returned an error, nothing published.
  EXPECT_TRUE(Entries(dir).empty());
}

TEST(PreparedMemory, AFileThatCannotBeMadeNamesIt) {
  const std::string dir = TempDir("cannot") + "/missing";
  EXPECT_THAT(PreparedMemory::Make(dir, Declared({"gpa=0,size=1M"}), false),
              StatusIsWithMessage(absl::StatusCode::kNotFound, dir + "/.livemig-prepared-0"));
}

}  // namespace
}  // namespace livemig::cli
