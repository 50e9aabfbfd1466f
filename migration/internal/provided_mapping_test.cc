#include "migration/internal/provided_mapping.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr size_t kPage = 4096;

// A memfd of `pages` pages, closed at the end of the test.
class Memfd {
 public:
  explicit Memfd(size_t pages) : fd_(::memfd_create("provided-mapping-test", MFD_CLOEXEC)) {
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(pages * kPage)), 0);
  }
  ~Memfd() { ::close(fd_); }
  int fd() const { return fd_; }
  // The same file opened again with other flags (O_APPEND, O_RDONLY).
  int Reopen(int flags) const {
    return ::open(absl::StrCat("/proc/self/fd/", fd_).c_str(), flags | O_CLOEXEC);
  }

 private:
  int fd_;
};

// A mapping unmapped at the end of the test.
struct Mapped {
  Mapped(size_t bytes, int prot, int flags, int fd, off_t offset)
      : size(bytes), addr(::mmap(nullptr, bytes, prot, flags, fd, offset)) {
    EXPECT_NE(addr, MAP_FAILED);
  }
  ~Mapped() { ::munmap(addr, size); }
  uint8_t* at(size_t page) const { return static_cast<uint8_t*>(addr) + page * kPage; }
  size_t size;
  void* addr;
};

TEST(CheckProvidedMapping, TheFileMappedSharedAtItsOffsetIsAccepted) {
  Memfd file(8);
  Mapped m(4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 2 * kPage);
  EXPECT_OK(CheckProvidedMapping(m.addr, 4 * kPage, file.fd(), 2 * kPage, 0));
  // Its tail alone, at the offset that tail has in the file.
  EXPECT_OK(CheckProvidedMapping(m.at(1), 3 * kPage, file.fd(), 3 * kPage, 0));
}

TEST(CheckProvidedMapping, ARangeOverTwoAdjacentMappingsOfTheFileIsAccepted) {
  Memfd file(4);
  Mapped m(4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
  // The second half mapped again in place (a VMM that maps in pieces), and
  // the first half made a separate mapping by an mprotect round trip.
  ASSERT_NE(::mmap(m.at(2), 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, file.fd(),
                   2 * kPage),
            MAP_FAILED);
  EXPECT_OK(CheckProvidedMapping(m.addr, 4 * kPage, file.fd(), 0, 0));
}

TEST(CheckProvidedMapping, WithoutAnFdPrivateAnonymousMemoryIsAccepted) {
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_OK(CheckProvidedMapping(m.addr, 2 * kPage, -1, 0, 0));
}

TEST(CheckProvidedMapping, AHoleInTheRangeIsRefusedNamingItsAddress) {
  Mapped m(3 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_EQ(::munmap(m.at(1), kPage), 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 3 * kPage, -1, 0, 2),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  absl::StrCat("region 2: the VMM's memory [0x",
                                               absl::Hex(reinterpret_cast<uintptr_t>(m.addr)),
                                               ", +12288) is not mapped at 0x",
                                               absl::Hex(reinterpret_cast<uintptr_t>(m.at(1))))));
}

TEST(CheckProvidedMapping, AReadOnlyPartIsRefused) {
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_EQ(::mprotect(m.at(1), kPage, PROT_READ), 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, -1, 0, 0),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "is mapped r--p at 0x"));
}

TEST(CheckProvidedMapping, AnFdOfAnotherFileIsRefused) {
  Memfd file(2), other(2);
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, other.fd(), 0, 1),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "maps another file"));
}

TEST(CheckProvidedMapping, AnOffsetThatIsNotTheMappingsIsRefused) {
  Memfd file(4);
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 2 * kPage);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, file.fd(), kPage, 0),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "maps file offset 8192; its file_offset puts that address at "
                                  "4096"));
}

TEST(CheckProvidedMapping, APrivateMappingOfTheFdIsRefused) {
  Memfd file(2);
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd(), 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, file.fd(), 0, 0),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "is a private mapping"));
}

TEST(CheckProvidedMapping, AnFdOpenForAppendOrReadOnlyIsRefused) {
  Memfd file(2);
  Mapped m(2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd(), 0);
  const int append = file.Reopen(O_RDWR | O_APPEND);
  const int read_only = file.Reopen(O_RDONLY);
  ASSERT_GE(append, 0);
  ASSERT_GE(read_only, 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, append, 0, 0),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "open O_APPEND: pwrite(2) would append every page"));
  EXPECT_THAT(CheckProvidedMapping(m.addr, 2 * kPage, read_only, 0, 0),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "open read-only"));
  ::close(append);
  ::close(read_only);
}

TEST(CheckProvidedMapping, AClosedFdIsRefusedNamingIt) {
  Mapped m(kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_THAT(CheckProvidedMapping(m.addr, kPage, 1000000, 0, 3),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "comes with fd 1000000, which is not open"));
}

}  // namespace
}  // namespace livemig::migration_internal
