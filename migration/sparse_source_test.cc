// A source guest that wrote little of its memory: the migration reads only
// what the kernel says holds data (internal/known_zero.h), so it does not
// make the source hold the rest. Reading the holes of a memfd through its
// shared mapping allocates them; these tests count the source's pages
// before and after, which does not depend on the machine's speed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/migration_harness.h"
#include "migration/vm_control.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::TempDir;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGuest = 32 * kMiB;

// A paused guest needs nothing else here: no writers, no device state.
class IdleVm : public VmControl {
 public:
  absl::Status Pause() override { return absl::OkStatus(); }
  absl::Status Resume() override { return absl::OkStatus(); }
};

// Pages 0, 100, 101, ... (every 64th page from 100): written, the rest not.
std::vector<uint64_t> WrittenPages() {
  std::vector<uint64_t> pages = {0};
  for (uint64_t p = 100; p < kGuest / kPage; p += 64) pages.push_back(p);
  return pages;
}

// Guest memory of one region, `mapped`, at guest address 0.
absl::StatusOr<GuestMemory<AtomicBitmap>> AtGuestZero(MmapRegion<AtomicBitmap> mapped) {
  absl::StatusOr<GuestRegion<AtomicBitmap>> region =
      GuestRegion<AtomicBitmap>::Create(std::move(mapped), GuestAddress(0));
  if (!region.ok()) return region.status();
  std::vector<GuestRegion<AtomicBitmap>> regions;
  regions.push_back(std::move(*region));
  return GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

// Returns what arrived; comparing it with the source reads the source, so
// the caller counts the source's pages first.
std::optional<ReceivedMigration> WriteAndMigrate(GuestMemory<AtomicBitmap>& memory,
                                                 const std::string& name,
                                                 SenderOptions::Verify verify) {
  uint8_t* base = memory.region(0).region().as_ptr();
  for (uint64_t p : WrittenPages()) std::memset(base + p * kPage + 7, static_cast<int>(p % 251 + 1), 9);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir(name));
  if (receiver == nullptr) return std::nullopt;
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  options.channels = 2;
  options.io_timeout = absl::Seconds(20);
  options.verify = verify;
  IdleVm vm;
  Sender sender(options);
  absl::StatusOr<MigrationStats> stats = sender.Migrate(memory, vm);
  EXPECT_OK(stats.status());
  if (stats.ok()) EXPECT_EQ(stats->audit.untracked_pages, 0u);
  absl::StatusOr<ReceivedMigration> got = std::move(receiver->Join());
  EXPECT_OK(got.status());
  if (!got.ok()) return std::nullopt;
  EXPECT_TRUE(got->verified);
  return std::move(*got);
}

TEST(SparseSource, AMemfdGuestIsNotAllocatedByItsMigration) {
  for (SenderOptions::Verify verify : {SenderOptions::Verify::kSent, SenderOptions::Verify::kFull}) {
    const int fd = ::memfd_create("sparse-guest", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, kGuest), 0);
    ASSERT_OK_AND_ASSIGN(FileOffset file, FileOffset::Dup(fd, 0));
    ASSERT_OK_AND_ASSIGN(MmapRegion<AtomicBitmap> mapped,
                         MmapRegion<AtomicBitmap>::FromFile(std::move(file), kGuest));
    ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory, AtGuestZero(std::move(mapped)));
    std::optional<ReceivedMigration> got = WriteAndMigrate(memory, "sparse_memfd", verify);
    ASSERT_TRUE(got.has_value());
    struct stat st;
    ASSERT_EQ(::fstat(fd, &st), 0);
    // Round 0, the audit (sent) or the re-hash in the pause (full): none
    // of them allocated a page the guest never wrote.
    EXPECT_EQ(static_cast<uint64_t>(st.st_blocks) * 512, WrittenPages().size() * kPage);
    ExpectSameMemory(memory, got->memory);
    ::close(fd);
  }
}

// Pages of private anonymous memory mapped in this process, by pagemap.
uint64_t PresentPages(const uint8_t* addr, uint64_t pages) {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  std::vector<uint64_t> entries(pages);
  const ssize_t n = ::pread(fd, entries.data(), pages * 8,
                            static_cast<off_t>(reinterpret_cast<uintptr_t>(addr) / kPage * 8));
  ::close(fd);
  EXPECT_EQ(n, static_cast<ssize_t>(pages * 8));
  uint64_t present = 0;
  for (uint64_t e : entries) present += (e >> 63) & 1;
  return present;
}

TEST(SparseSource, PagesOfPrivateAnonymousMemoryTheGuestNeverWroteAreNotFaultedIn) {
  void* ram = ::mmap(nullptr, kGuest, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(ram, MAP_FAILED);
  ASSERT_EQ(::madvise(ram, kGuest, MADV_NOHUGEPAGE), 0);
  ASSERT_OK_AND_ASSIGN(MmapRegion<AtomicBitmap> mapped,
                       MmapRegion<AtomicBitmap>::BuildRaw(ram, kGuest, PROT_READ | PROT_WRITE,
                                                          MAP_PRIVATE | MAP_ANONYMOUS));
  ASSERT_OK_AND_ASSIGN(GuestMemory<AtomicBitmap> memory, AtGuestZero(std::move(mapped)));
  std::optional<ReceivedMigration> got =
      WriteAndMigrate(memory, "sparse_private", SenderOptions::Verify::kSent);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(PresentPages(static_cast<uint8_t*>(ram), kGuest / kPage), WrittenPages().size());
  ExpectSameMemory(memory, got->memory);
  ::munmap(ram, kGuest);
}

}  // namespace
}  // namespace livemig
