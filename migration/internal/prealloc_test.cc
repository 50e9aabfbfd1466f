// Tests of the Populator (migration/internal/prealloc.h): what becomes
// resident, that content is kept, stopping, and the errors.
#include "migration/internal/prealloc.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/testing/resident_pages.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::ResidentPages;
using ::livemig::testing::StatusIsWithMessage;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kPage = 4096;

// A mapping that unmaps itself.
struct Mapping {
  uint8_t* addr = nullptr;
  size_t size = 0;
  int fd = -1;
  Mapping(size_t bytes, int flags, int file) : size(bytes), fd(file) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, file, 0);
    EXPECT_NE(p, MAP_FAILED) << std::strerror(errno);
    addr = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);
  }
};

int Memfd(size_t file_size) {
  const int fd = ::memfd_create("prealloc-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(file_size)), 0);
  return fd;
}

TEST(Populator, MakesEveryPageOfPrivateAnonymousMemoryResident) {
  Mapping m(9 * kMiB + 3 * kPage, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
  ASSERT_NE(m.addr, nullptr);
  ASSERT_EQ(ResidentPages(m.addr, m.size), 0);
  PopulateStats stats;
  ASSERT_OK(PopulateAll({{0, m.addr, m.size, ""}}, 2, &stats));
  EXPECT_EQ(ResidentPages(m.addr, m.size), static_cast<int64_t>(m.size / kPage));
  EXPECT_EQ(stats.populated_bytes, m.size);
  EXPECT_EQ(stats.threads, 2);
}

TEST(Populator, MakesEveryPageOfSharedMemoryResidentAndKeepsItsContent) {
  Mapping m(6 * kMiB, MAP_SHARED, Memfd(6 * kMiB));
  ASSERT_NE(m.addr, nullptr);
  // Written through another mapping of the same file: this one has no
  // page table entries yet, but the pages hold data.
  Mapping other(6 * kMiB, MAP_SHARED, ::dup(m.fd));
  for (size_t p = 0; p < m.size / kPage; p += 7) std::memset(other.addr + p * kPage, 0x5a, kPage);
  ASSERT_EQ(ResidentPages(m.addr, m.size), 0);
  ASSERT_OK(PopulateAll({{3, m.addr, m.size, "guest.mem"}}, 3, nullptr));
  EXPECT_EQ(ResidentPages(m.addr, m.size), static_cast<int64_t>(m.size / kPage));
  EXPECT_EQ(std::memcmp(m.addr, other.addr, m.size), 0);
  EXPECT_EQ(m.addr[7 * kPage], 0x5a);
  EXPECT_EQ(m.addr[kPage], 0);
}

TEST(Populator, SeveralTargetsOfUnevenSizesAreAllPopulated) {
  Mapping a(kPage, MAP_PRIVATE | MAP_ANONYMOUS, -1);
  Mapping b(5 * kMiB + kPage, MAP_SHARED, Memfd(5 * kMiB + kPage));
  Mapping c(2 * kMiB, MAP_PRIVATE | MAP_ANONYMOUS, -1);
  PopulateStats stats;
  ASSERT_OK(PopulateAll({{0, a.addr, a.size, ""}, {1, b.addr, b.size, "b"}, {2, c.addr, c.size, ""}},
                        4, &stats));
  EXPECT_EQ(ResidentPages(a.addr, a.size), 1);
  EXPECT_EQ(ResidentPages(b.addr, b.size), static_cast<int64_t>(b.size / kPage));
  EXPECT_EQ(ResidentPages(c.addr, c.size), static_cast<int64_t>(c.size / kPage));
  EXPECT_EQ(stats.populated_bytes, a.size + b.size + c.size);
}

TEST(Populator, NoTargetsIsOkAtOnce) {
  PopulateStats stats;
  EXPECT_OK(PopulateAll({}, 2, &stats));
  EXPECT_EQ(stats.populated_bytes, 0u);
  EXPECT_EQ(stats.threads, 0);
}

TEST(Populator, StopBeforeStartPopulatesNothing) {
  Mapping m(4 * kMiB, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
  Populator populator({{0, m.addr, m.size, ""}});
  populator.Stop();
  EXPECT_EQ(populator.stats().populated_bytes, 0u);
  EXPECT_EQ(ResidentPages(m.addr, m.size), 0);
}

// The file holds 1 MiB but the mapping asks for 4: the pages past its end
// cannot be had (a write there would be SIGBUS).
TEST(Populator, MappingPastItsFilesEndIsResourceExhaustedNamingRegionFileAndBytes) {
  Mapping m(4 * kMiB, MAP_SHARED, Memfd(kMiB));
  ASSERT_NE(m.addr, nullptr);
  PopulateStats stats;
  EXPECT_THAT(PopulateAll({{2, m.addr, m.size, "/dst/guest.mem.livemig-partial"}}, 1, &stats),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 2 (\"/dst/guest.mem.livemig-partial\"): cannot allocate "
                                  "its 4194304 bytes of destination memory: MADV_POPULATE_WRITE "
                                  "at byte 0 failed: Bad address"));
  // The first thread to fail stops the rest: one thread, so nothing after.
  EXPECT_EQ(stats.populated_bytes, 0u);
}

TEST(Populator, AnonymousMemoryIsNamedAsSuchInErrors) {
  // PROT_NONE memory cannot be populated for writing.
  void* p = ::mmap(nullptr, 2 * kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const absl::Status status =
      PopulateAll({{5, static_cast<uint8_t*>(p), 2 * kMiB, ""}}, 1, nullptr);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("region 5 (anonymous memory): cannot allocate its 2097152 bytes"),
            absl::string_view::npos)
      << status;
  ::munmap(p, 2 * kMiB);
}

}  // namespace
}  // namespace livemig::migration_internal
