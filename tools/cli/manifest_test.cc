// manifest.h: the files a manifest lists, and the earlier migration's files
// a later one removes (only those the receiver could have published).
#include "tools/cli/manifest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig::cli {
namespace {

namespace fs = std::filesystem;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

class ManifestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/manifest_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/dst";
    fs::create_directory(dir_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string Make(const std::string& relative, const std::string& text = "x") {
    const fs::path path = fs::path(dir_) / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }
  std::string root_, dir_;
};

TEST_F(ManifestTest, ListsEachRegionsFileOnceInOrder) {
  const std::string manifest =
      R"({"status":"completed","regions":[{"index":0,"file":"/d/b.img","file_offset":0},)"
      R"({"index":1,"file":"/d/a.img","file_offset":4096},{"index":2,"file":"/d/b.img"}]})";
  absl::StatusOr<std::vector<std::string>> files = ManifestFiles(manifest);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, ElementsAre("/d/b.img", "/d/a.img"));
}

// Names as JsonEscape writes them come back whole; a "file" that is a
// value, not a key, names nothing.
TEST_F(ManifestTest, DecodesEscapedNamesAndTakesOnlyFileKeys) {
  const std::string manifest =
      R"({"status":"file","regions":[{"index":0,"file":"/d/a \"b\" \\ c\u000a.img"}],)"
      R"("note":"\"file\":\"/d/not.img\""})";
  absl::StatusOr<std::vector<std::string>> files = ManifestFiles(manifest);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, ElementsAre("/d/a \"b\" \\ c\n.img"));
}

TEST_F(ManifestTest, TextThatIsNoManifestIsInvalidArgument) {
  EXPECT_THAT(ManifestFiles("{\"status\":\"comp"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "manifest.json: not JSON"));
  EXPECT_THAT(ManifestFiles("[]"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "manifest.json: not JSON (no object)"));
  EXPECT_THAT(ManifestFiles(R"({"file":"\q"})"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "manifest.json: not JSON (a bad string at byte"));
  EXPECT_THAT(ManifestFiles(R"({"status":"completed"})"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "manifest.json: no \"regions\" list"));
}

TEST_F(ManifestTest, RemovesTheEarlierFilesTheCurrentOnesDoNotListAndTheirEmptyDirectories) {
  const std::string a = Make("a.img"), b = Make("vm/disk/b.img"), c = Make("c.img");
  const std::string kept_dir_file = Make("vm/other.txt");
  const Unlisted result = RemoveUnlisted(dir_, {a, b, c}, {c, dir_ + "/d.img"});
  EXPECT_THAT(result.removed, UnorderedElementsAre(a, b));
  EXPECT_THAT(result.kept, IsEmpty());
  EXPECT_FALSE(fs::exists(a));
  EXPECT_FALSE(fs::exists(b));
  EXPECT_FALSE(fs::exists(dir_ + "/vm/disk")) << "left empty: removed";
  EXPECT_TRUE(fs::exists(kept_dir_file)) << "vm/ still holds a file: kept";
  EXPECT_TRUE(fs::exists(c)) << "listed by the current migration";
}

TEST_F(ManifestTest, ASpellingOfTheSameFileCountsAsListed) {
  const std::string a = Make("a.img");
  const Unlisted result = RemoveUnlisted(dir_, {a}, {dir_ + "/./a.img"});
  EXPECT_THAT(result.removed, IsEmpty());
  EXPECT_TRUE(fs::exists(a));
}

TEST_F(ManifestTest, FilesTheReceiverCouldNotHavePublishedAreKeptAndSaid) {
  // Outside --dir, through a symlinked directory, not a regular file, the
  // manifest itself, a staging file: a manifest edited by hand (or written
  // by something else) must not make the receiver delete them.
  const std::string outside = root_ + "/outside.img";
  std::ofstream(outside) << "keep";
  fs::create_directory(root_ + "/elsewhere");
  const std::string target = root_ + "/elsewhere/x.img";
  std::ofstream(target) << "keep";
  fs::create_directory_symlink(root_ + "/elsewhere", dir_ + "/link");
  fs::create_directory(dir_ + "/sub.img");
  const std::string manifest = Make("manifest.json", "{}");
  const std::string staging = Make("y.img.livemig-partial");
  const Unlisted result = RemoveUnlisted(
      dir_, {outside, dir_ + "/link/x.img", dir_ + "/sub.img", manifest, staging}, {});
  EXPECT_THAT(result.removed, IsEmpty());
  ASSERT_EQ(result.kept.size(), 5u);
  EXPECT_THAT(result.kept[0], HasSubstr(outside + ": not under --dir=" + dir_));
  EXPECT_THAT(result.kept[1], HasSubstr("/link/x.img: a directory on its way is a symlink"));
  EXPECT_THAT(result.kept[2], HasSubstr("/sub.img: not a regular file"));
  EXPECT_THAT(result.kept[3], HasSubstr("manifest.json: the name of the manifest"));
  EXPECT_THAT(result.kept[4],
              HasSubstr("y.img.livemig-partial: not a path the receiver publishes"));
  EXPECT_TRUE(fs::exists(outside));
  EXPECT_TRUE(fs::exists(target));
  EXPECT_TRUE(fs::is_directory(dir_ + "/sub.img"));
  EXPECT_TRUE(fs::exists(manifest));
  EXPECT_TRUE(fs::exists(staging));
}

TEST_F(ManifestTest, AFileAlreadyGoneIsNeitherRemovedNorKept) {
  const Unlisted result = RemoveUnlisted(dir_, {dir_ + "/gone.img", dir_ + "/no/dir.img"}, {});
  EXPECT_THAT(result.removed, IsEmpty());
  EXPECT_THAT(result.kept, IsEmpty());
}

}  // namespace
}  // namespace livemig::cli
