// What the region store checks of memory a VMM lends, and what it makes of
// it (internal/lent_memory.h), through RegionStore::Create.
#include "migration/internal/lent_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/region_store.h"
#include "migration/testing/scoped_tmpfs.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::ScopedTmpfs;
using ::livemig::testing::StatusIsWithMessage;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

std::string Dir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/lent_memory_" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

proto::RegionTable AnonymousTable(std::vector<uint64_t> sizes) {
  proto::RegionTable table;
  uint64_t gpa = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    proto::RegionInfo* r = table.add_regions();
    r->set_index(static_cast<uint32_t>(i));
    r->set_guest_addr(gpa);
    r->set_size(sizes[i]);
    r->set_backing(proto::BACKING_ANONYMOUS);
    r->set_prot(PROT_READ | PROT_WRITE);
    gpa += sizes[i] + kMiB;
  }
  return table;
}

absl::StatusOr<RegionStore> Lend(const proto::RegionTable& table, const std::string& root,
                                 std::function<ProvidedMemory(uint32_t)> lend) {
  RegionStoreOptions options;
  options.root_dir = root;
  options.provide = [&](const RegionDescription& r) -> absl::StatusOr<ProvidedMemory> {
    return lend(r.index);
  };
  return RegionStore::Create(table, kPage, options);
}

// Each page is hashed as it lands: a later region landing over an earlier
// one would go unnoticed, so overlapping memory is refused up front.
TEST(LentMemory, OverlappingMemoryOfTwoRegionsIsRefusedNamingBoth) {
  void* ram = ::mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(ram, MAP_FAILED);
  uint8_t* base = static_cast<uint8_t*>(ram);
  EXPECT_THAT(Lend(AnonymousTable({2 * kPage, 2 * kPage}), Dir("overlap"),
                   [&](uint32_t i) { return ProvidedMemory{base + i * kPage, 3 * kPage}; }),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "region 1: the VMM's memory at 0x"));
  EXPECT_THAT(Lend(AnonymousTable({2 * kPage, 2 * kPage}), Dir("overlap"),
                   [&](uint32_t i) { return ProvidedMemory{base + i * kPage, 3 * kPage}; }),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "overlaps region 0's (8192 bytes"));
  // Side by side is fine, whatever size each says it has beyond the region.
  EXPECT_OK(Lend(AnonymousTable({2 * kPage, 2 * kPage}), Dir("apart"),
                 [&](uint32_t i) { return ProvidedMemory{base + 2 * i * kPage, 4 * kPage}; })
                .status());
  ::munmap(ram, 4 * kPage);
}

// On a tmpfs too small for the region, the lent file is refused at the
// table (ResourceExhausted naming it), not met as SIGBUS when a later page
// lands in one of round 0's holes.
TEST(LentMemory, AFileOnATmpfsWithoutRoomIsRefusedAtTheTableNamingIt) {
  const std::string dir = Dir("small");
  ScopedTmpfs small(dir, "1m");
  if (!small.mounted()) GTEST_SKIP() << small.why();
  const std::string path = dir + "/vmm-ram";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4 * kMiB), 0);
  void* ram = ::mmap(nullptr, 4 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(ram, MAP_FAILED);
  EXPECT_THAT(Lend(AnonymousTable({4 * kMiB}), Dir("small-root"),
                   [&](uint32_t) { return ProvidedMemory{ram, 4 * kMiB, fd, 0, true}; }),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 0: \"" + path + "\" needs 4194304 bytes"));
  ::munmap(ram, 4 * kMiB);
  ::close(fd);
}

// With room, the holes round 0 leaves in the lent file are claimed at its
// end (ClaimDeferredSpace), as in the store's own files; memory the VMM
// vouches zeroed starts zeroed (ZERO pages are not cleared through it).
TEST(LentMemory, ALentTmpfsFileHasItsHolesClaimedAfterRoundZero) {
  const std::string dir = Dir("room");
  ScopedTmpfs roomy(dir, "8m");
  if (!roomy.mounted()) GTEST_SKIP() << roomy.why();
  const std::string path = dir + "/vmm-ram";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 2 * kMiB), 0);
  void* ram = ::mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, kMiB);
  ASSERT_NE(ram, MAP_FAILED);
  ASSERT_OK_AND_ASSIGN(
      RegionStore store,
      Lend(AnonymousTable({kMiB}), Dir("room-root"),
           [&](uint32_t) { return ProvidedMemory{ram, kMiB, fd, kMiB, true}; }));
  ASSERT_EQ(store.regions().size(), 1u);
  EXPECT_TRUE(store.regions()[0].starts_zeroed);
  EXPECT_TRUE(store.regions()[0].lands_through_file);
  EXPECT_EQ(store.regions()[0].provided_path, path);
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_blocks, 0);  // Nothing claimed before round 0.
  ASSERT_OK(store.ClaimDeferredSpace());
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(st.st_blocks * 512, static_cast<blkcnt_t>(kMiB));  // The region's MiB only.
  ::munmap(ram, kMiB);
  ::close(fd);
}

}  // namespace
}  // namespace livemig
