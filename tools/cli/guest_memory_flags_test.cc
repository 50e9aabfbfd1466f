#include "tools/cli/guest_memory_flags.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/cli/units.h"

namespace livemig::cli {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::ElementsAre;

// A file of `size` zero bytes under the test's temporary directory.
std::string MakeFile(const std::string& relative, size_t size) {
  const std::string path = ::testing::TempDir() + "/" + relative;
  FILE* f = std::fopen(path.c_str(), "w");
  EXPECT_NE(f, nullptr) << path;
  if (f == nullptr) return path;
  const std::string zeros(size, '\0');
  std::fwrite(zeros.data(), 1, zeros.size(), f);
  std::fclose(f);
  return path;
}

absl::Status NoProbe() { return absl::OkStatus(); }

TEST(ParseRegionFlag, NamesAFileRegionAfterTheFilesLastComponent) {
  absl::StatusOr<RegionFlag> r =
      ParseRegionFlag("gpa=0x100000,size=8K,file=/a/b/guest.mem,offset=4K");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->gpa, 0x100000u);
  EXPECT_EQ(r->size, 8192u);
  EXPECT_EQ(r->file, "/a/b/guest.mem");
  EXPECT_EQ(r->offset, 4096u);
  EXPECT_EQ(r->name, "guest.mem");
  EXPECT_EQ(r->text, "gpa=0x100000,size=8K,file=/a/b/guest.mem,offset=4K");
}

TEST(ParseRegionFlag, KeepsAnExplicitName) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=0,size=4K,file=/a/guest.mem,name=vm/low.mem");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->name, "vm/low.mem");
}

TEST(ParseRegionFlag, LeavesAnAnonymousRegionUnnamed) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=0,size=4K");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->file, "");
  EXPECT_EQ(r->name, "");
}

TEST(ParseRegionFlag, RefusesAnUnknownKeyAndListsTheKnownOnes) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=0,size=4K,bogus=1");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r.status().message(),
            "--region=gpa=0,size=4K,bogus=1: unknown key \"bogus\"; expected "
            "gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]");
}

TEST(ParseRegionFlag, RequiresGpaAndSize) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=0");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r.status().message(), "--region=gpa=0: gpa= and size= are required");
}

TEST(ParseRegionFlag, RefusesANameWithoutAFile) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=0,size=4K,name=x.mem");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r.status().message(),
            "--region=gpa=0,size=4K,name=x.mem: name= needs file= (anonymous regions are "
            "named by the receiver)");
}

TEST(ParseRegionFlag, NamesTheKeyWhoseSizeIsBad) {
  absl::StatusOr<RegionFlag> r = ParseRegionFlag("gpa=zz,size=4K");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(r.status().message(),
            "--region=gpa=zz,size=4K: gpa: " + std::string(ParseSize("zz").status().message()));
}

TEST(CheckNamesAreDistinct, RefusesOneNameForTwoDifferentFiles) {
  const std::string dir = ::testing::TempDir();
  MakeFile("one.mem", 4096);
  MakeFile("two.mem", 4096);
  absl::StatusOr<RegionFlag> a = ParseRegionFlag("gpa=0,size=4K,file=" + dir + "/one.mem,name=g");
  absl::StatusOr<RegionFlag> b =
      ParseRegionFlag("gpa=0x10000,size=4K,file=" + dir + "/two.mem,name=g");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  const absl::Status s = CheckNamesAreDistinct({*a, *b});
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(s.message(), "--region=" + b->text + " and --region=" + a->text +
                             " would both be rebuilt as \"g\" from different files: give "
                             "one of them name=REL");
}

TEST(CheckNamesAreDistinct, AcceptsOneFileAtTwoOffsets) {
  const std::string path = MakeFile("shared.mem", 8192);
  absl::StatusOr<RegionFlag> a = ParseRegionFlag("gpa=0,size=4K,file=" + path);
  absl::StatusOr<RegionFlag> b = ParseRegionFlag("gpa=0x10000,size=4K,offset=4K,file=" + path);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_THAT(CheckNamesAreDistinct({*a, *b}), IsOk());
}

TEST(BuildMemory, NamesRegionsInGuestAddressOrder) {
  const std::string path = MakeFile("high.mem", 4096);
  GuestMemoryFlags flags;
  flags.regions = {"gpa=0x100000,size=4K,file=" + path};
  flags.memory = "8K";
  flags.fill = "keep";
  std::vector<std::string> names;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(flags, &names, NoProbe);
  ASSERT_THAT(memory, IsOk());
  EXPECT_EQ(memory->num_regions(), 2u);
  EXPECT_EQ(memory->total_size(), 3u * 4096);
  EXPECT_THAT(names, ElementsAre("", "high.mem"));
}

TEST(BuildMemory, RequiresSomeMemory) {
  GuestMemoryFlags flags;
  flags.fill = "random";
  std::vector<std::string> names;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(flags, &names, NoProbe);
  EXPECT_THAT(memory, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(memory.status().message(), "give --memory=SIZE or at least one --region=...");
}

TEST(BuildMemory, RefusesASizeThatIsNotWholePages) {
  GuestMemoryFlags flags;
  flags.memory = "3K";
  flags.fill = "random";
  std::vector<std::string> names;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(flags, &names, NoProbe);
  EXPECT_THAT(memory, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(memory.status().message(), "--memory=3K: size 3072 is not a non-zero multiple of 4096");
}

TEST(ParseRegionFlag, RefusesUnalignedAddressesAndAnEmptyFile) {
  EXPECT_THAT(ParseRegionFlag("gpa=0x1001,size=4K"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=0x1001,size=4K: gpa is not a multiple of the "
                                  "page size 4096"));
  EXPECT_THAT(ParseRegionFlag("gpa=0,size=4K,file=x,offset=100"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "offset is not a multiple of the page size 4096"));
  EXPECT_THAT(ParseRegionFlag("gpa=0,size=4K,file="),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--region=gpa=0,size=4K,file=: file= needs a path"));
}

// Refused before any memory is mapped, filled or connected to, naming both.
TEST(BuildMemory, RefusesOverlappingRegionsBeforeCallingBeforeFill) {
  GuestMemoryFlags flags;
  flags.memory = "16K";
  flags.regions = {"gpa=8K,size=4K"};
  std::vector<std::string> names;
  bool called = false;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(flags, &names, [&] {
    called = true;
    return absl::OkStatus();
  });
  EXPECT_THAT(memory, StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                          "--region=gpa=8K,size=4K overlaps --memory=16K"));
  EXPECT_FALSE(called);
}

TEST(BuildMemory, AFileTooSmallIsNamedByItsFlag) {
  const std::string path = MakeFile("small.mem", 3);
  GuestMemoryFlags flags;
  flags.regions = {"gpa=0,size=4K,file=" + path};
  std::vector<std::string> names;
  EXPECT_THAT(BuildMemory(flags, &names, NoProbe),
              StatusIsWithMessage(absl::StatusCode::kOutOfRange,
                                  "--region=gpa=0,size=4K,file=" + path + ": "));
}

// Without --fill, a file= region is the user's guest memory: kept as it is.
// Anonymous memory beside it is filled.
TEST(BuildMemory, WithoutFillKeepsWhatAFileHoldsAndFillsAnonymousMemory) {
  const std::string path = MakeFile("kept.mem", 4096);
  {
    std::FILE* f = std::fopen(path.c_str(), "r+");
    ASSERT_NE(f, nullptr);
    std::fputs("the user's guest", f);
    std::fclose(f);
  }
  GuestMemoryFlags flags;
  flags.regions = {"gpa=0x100000,size=4K,file=" + path};
  flags.memory = "8K";
  std::vector<std::string> names;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(flags, &names, NoProbe);
  ASSERT_THAT(memory, IsOk());
  const uint8_t* file_bytes = memory->region(1).region().as_ptr();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(file_bytes), 16), "the user's guest");
  const uint8_t* anonymous = memory->region(0).region().as_ptr();
  EXPECT_NE(std::count(anonymous, anonymous + 8192, 0), 8192) << "anonymous memory not filled";
}

TEST(BuildMemory, RefusesAnUnknownFillBeforeCallingBeforeFill) {
  GuestMemoryFlags flags;
  flags.memory = "8K";
  flags.fill = "blue";
  std::vector<std::string> names;
  bool called = false;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory =
      BuildMemory(flags, &names, [&] { called = true; return absl::OkStatus(); });
  EXPECT_THAT(memory, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(memory.status().message(), "--fill=blue: expected random, zero, text or keep");
  EXPECT_FALSE(called);
}

TEST(BuildMemory, ReturnsTheErrorOfBeforeFill) {
  GuestMemoryFlags flags;
  flags.memory = "8K";
  flags.fill = "zero";
  std::vector<std::string> names;
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory(
      flags, &names, [] { return absl::UnavailableError("nobody there"); });
  EXPECT_THAT(memory, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(memory.status().message(), "nobody there");
}

}  // namespace
}  // namespace livemig::cli
