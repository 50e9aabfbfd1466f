// ReceiverOptions::prealloc end to end: every kind of destination memory
// (the store's anonymous mappings, shmem files, files on disk, the VMM's
// own memfd) is resident before the first batch lands, counted in the page
// tables, and migrates exactly; a destination that cannot allocate refuses
// the migration before any page is accepted, the source gets the reason and
// keeps running with every page still dirty.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/testing/resident_pages.h"
#include "migration/testing/scoped_tmpfs.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeRegionSpec;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::ResidentPages;
using ::livemig::testing::ScopedTmpfs;
using ::livemig::testing::StatusIs;
using ::livemig::testing::TempDir;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kSize = 6 * kMiB + 5 * 4096;  // Not a whole number of chunks.
constexpr uint64_t kPages = kSize / 4096;

SenderOptions Options(const Endpoint& to) {
  SenderOptions options;
  options.destination = to;
  options.channels = 2;
  options.io_timeout = absl::Seconds(20);
  options.downtime_limit = absl::Milliseconds(300);
  return options;
}

ReceiverOptions BaseOptions(const std::string& root, bool prealloc) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(20);
  options.accept_timeout = absl::Seconds(30);
  options.prealloc = prealloc;
  return options;
}

// Counts, when the first batch has landed, how many pages of its region are
// mapped; and how many batches landed at all.
struct LandingProbe {
  std::atomic<int64_t> resident_at_first{-1};
  std::atomic<int> batches{0};

  void Install(ReceiverOptions& options, uint64_t region_size) {
    options.test_after_landing = [this, region_size](uint32_t, uint64_t first_page,
                                                     uint8_t* data, size_t) {
      if (batches.fetch_add(1) != 0) return;
      resident_at_first.store(ResidentPages(data - first_page * 4096, region_size));
    };
  }
};

enum class Backing { kAnonymous, kShmemFile, kDiskFile, kVmmMemfd };

std::string Name(Backing b) {
  switch (b) {
    case Backing::kAnonymous: return "Anonymous";
    case Backing::kShmemFile: return "ShmemFile";
    case Backing::kDiskFile: return "DiskFile";
    case Backing::kVmmMemfd: return "VmmMemfd";
  }
  return "?";
}

// A directory on /dev/shm (tmpfs: the receiver's staging file is shmem), or
// "" where /dev/shm is not a tmpfs.
std::string ShmemDir(const std::string& name) {
  struct statfs fs;
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != 0x01021994 /* TMPFS_MAGIC */) return "";
  const std::string dir = absl::StrCat("/dev/shm/livemig-prealloc-", ::getpid(), "-", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

class PreallocBacking : public ::testing::TestWithParam<Backing> {};

TEST_P(PreallocBacking, EveryPageIsResidentBeforeTheFirstBatchLandsAndTheCopyIsExact) {
  const Backing backing = GetParam();
  const std::string src = TempDir(absl::StrCat("prealloc_src_", Name(backing)));
  std::string root = TempDir(absl::StrCat("prealloc_dst_", Name(backing)));
  FakeRegionSpec spec{0, kSize, "", 0};
  if (backing == Backing::kShmemFile || backing == Backing::kDiskFile) {
    spec.file = src + "/guest.img";
    spec.file_offset = 64 * 1024;
  }
  if (backing == Backing::kShmemFile) {
    root = ShmemDir(Name(backing));
    if (root.empty()) GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  }
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({spec}, Fill::kMixed, 91));
  ReceiverOptions options = BaseOptions(root, /*prealloc=*/true);
  LandingProbe probe;
  probe.Install(options, kSize);
  void* ram = nullptr;
  if (backing == Backing::kVmmMemfd) {
    const int memfd = ::memfd_create("guest-ram", MFD_CLOEXEC);
    ASSERT_GE(memfd, 0);
    ASSERT_EQ(::ftruncate(memfd, kSize), 0);
    ram = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    ::close(memfd);
    ASSERT_NE(ram, MAP_FAILED);
    ASSERT_EQ(ResidentPages(ram, kSize), 0);
    options.region_memory = [ram](const RegionDescription& info) -> absl::StatusOr<ProvidedMemory> {
      return ProvidedMemory{ram, static_cast<size_t>(info.size)};
    };
  }
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  ASSERT_NE(receiver, nullptr);
  Sender sender(Options(receiver->receiver->endpoint()));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm).status());
  {
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
    EXPECT_TRUE(got.verified);
    ExpectSameMemory(vm->memory(), got.memory);
    EXPECT_EQ(got.prealloc_bytes, kSize);
    EXPECT_GE(got.prealloc_ms, 0);
    EXPECT_GT(probe.batches.load(), 0);
    // All of it, not just the first batch's pages: populated before round 0.
    EXPECT_EQ(probe.resident_at_first.load(), static_cast<int64_t>(kPages));
    if (ram != nullptr) {
      EXPECT_EQ(got.memory.region(0).region().as_ptr(), ram);
    }
  }
  receiver.reset();
  if (ram != nullptr) ::munmap(ram, kSize);
  if (backing == Backing::kShmemFile) std::filesystem::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(AllBackings, PreallocBacking,
                         ::testing::Values(Backing::kAnonymous, Backing::kShmemFile,
                                           Backing::kDiskFile, Backing::kVmmMemfd),
                         [](const ::testing::TestParamInfo<Backing>& info) {
                           return Name(info.param);
                         });

TEST(Prealloc, WithoutTheOptionNothingIsPopulatedOrReported) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kSize, "", 0}}, Fill::kRandom, 92));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        BaseOptions(TempDir("no_prealloc"), false));
  ASSERT_NE(receiver, nullptr);
  Sender sender(Options(receiver->receiver->endpoint()));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm).status());
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(got.prealloc_bytes, 0u);
  EXPECT_EQ(got.prealloc_ms, 0);
}

// A tmpfs destination (shmem files) with the guest writing through several
// rounds: with prealloc every later round lands on resident pages, without
// it the readers fault them in; the copy is exact either way.
class ShmemDestination : public ::testing::TestWithParam<bool> {};

TEST_P(ShmemDestination, IsExactWhileWritersRun) {
  const std::string root = ShmemDir(GetParam() ? "writers_prealloc" : "writers_plain");
  if (root.empty()) GTEST_SKIP() << "/dev/shm is not a tmpfs here";
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 24 * kMiB, "", 0}, {32 * kMiB, kSize, "", 0}},
                                               Fill::kMixed, 95));
  testing::WorkloadSpec work;
  work.writers = 2;
  work.pages_per_second = 5000;
  work.seed = 96;
  vm->StartWorkload(work);
  ReceiverOptions options = BaseOptions(root, GetParam());
  options.anonymous_regions_as_files = true;  // region-<i>.mem on tmpfs.
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  ASSERT_NE(receiver, nullptr);
  SenderOptions sender_options = Options(receiver->receiver->endpoint());
  sender_options.max_bandwidth = 200 * 1000 * 1000;  // Rounds long enough to dirty pages.
  Sender sender(sender_options);
  ASSERT_OK(sender.Migrate(vm->memory(), *vm).status());
  {
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
    EXPECT_TRUE(got.verified);
    ExpectSameMemory(vm->memory(), got.memory);
    EXPECT_GT(got.rounds, 1u);
    EXPECT_EQ(got.prealloc_bytes, GetParam() ? vm->memory().total_size() : 0);
  }
  receiver.reset();
  std::filesystem::remove_all(root);
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutPrealloc, ShmemDestination, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Prealloc" : "Plain";
                         });

// The source's side of a refusal before round 0: the error, the VM never
// paused, every page still dirty, nothing landed.
void ExpectRefusedBeforeAnyPage(FakeVm& vm, Sender& sender, ReceiverThread& receiver,
                                const LandingProbe& probe, const std::string& message) {
  const int resumes_before = vm.resumes();
  absl::StatusOr<MigrationStats> stats = sender.Migrate(vm.memory(), vm);
  EXPECT_THAT(stats, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(std::string(stats.status().message()), HasSubstr(message));
  const absl::StatusOr<ReceivedMigration>& received = receiver.Join();
  EXPECT_THAT(received, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(std::string(received.status().message()), HasSubstr(message));
  EXPECT_EQ(probe.batches.load(), 0) << "a page was accepted";
  EXPECT_FALSE(vm.paused());
  EXPECT_EQ(vm.resumes(), resumes_before);
  EXPECT_EQ(sender.last_stats().status, "failed");
  EXPECT_EQ(vm.memory().region(0).bitmap().CountDirty(),
            vm.memory().region(0).len() / 4096);
}

class TooSmallFilesystem : public ::testing::TestWithParam<bool> {};

// A 1 MiB tmpfs cannot hold a 4 MiB region: refused when the table arrives,
// with the file and the bytes named, with or without prealloc.
TEST_P(TooSmallFilesystem, IsResourceExhaustedBeforeAnyPageAndTheSourceKeepsRunningDirty) {
  const std::string src = TempDir(absl::StrCat("small_src_", GetParam()));
  const std::string root = TempDir(absl::StrCat("small_dst_", GetParam()));
  ScopedTmpfs small(root, "1m");
  if (!small.mounted()) GTEST_SKIP() << small.why();
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, 4 * kMiB, src + "/guest.img", 0}}, Fill::kRandom, 93));
  vm->memory().region(0).bitmap().SetAddrRange(0, 4 * kMiB);
  ReceiverOptions options = BaseOptions(root, GetParam());
  LandingProbe probe;
  probe.Install(options, 4 * kMiB);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  ASSERT_NE(receiver, nullptr);
  SenderOptions sender_options = Options(receiver->receiver->endpoint());
  sender_options.file_names = {"guest.img"};
  Sender sender(sender_options);
  ExpectRefusedBeforeAnyPage(*vm, sender, *receiver, probe,
                             absl::StrCat("region 0: \"", root, "/guest.img",
                                          kStagingSuffix, "\" needs 4194304 bytes"));
  receiver.reset();
  EXPECT_TRUE(std::filesystem::is_empty(root));
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutPrealloc, TooSmallFilesystem, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Prealloc" : "Plain";
                         });

// The VMM lends 4 MiB of mapping over a 1 MiB memfd: without prealloc the
// first write past 1 MiB would be SIGBUS in a channel reader; with it the
// migration is refused before round 0, naming the region and its bytes.
TEST(Prealloc, VmmMemoryThatCannotBeBackedIsRefusedBeforeAnyPage) {
  constexpr uint64_t kRegion = 4 * kMiB;
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kRegion, "", 0}}, Fill::kRandom, 94));
  vm->memory().region(0).bitmap().SetAddrRange(0, kRegion);
  const int memfd = ::memfd_create("short-ram", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  ASSERT_EQ(::ftruncate(memfd, kMiB), 0);
  void* ram = ::mmap(nullptr, kRegion, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  ::close(memfd);
  ASSERT_NE(ram, MAP_FAILED);
  ReceiverOptions options = BaseOptions(TempDir("short_vmm"), true);
  options.region_memory = [ram](const RegionDescription& info) -> absl::StatusOr<ProvidedMemory> {
    return ProvidedMemory{ram, static_cast<size_t>(info.size)};
  };
  LandingProbe probe;
  probe.Install(options, kRegion);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  ASSERT_NE(receiver, nullptr);
  Sender sender(Options(receiver->receiver->endpoint()));
  ExpectRefusedBeforeAnyPage(*vm, sender, *receiver, probe,
                             "region 0 (\"the VMM's memory\"): cannot allocate its 4194304 "
                             "bytes of destination memory");
  receiver.reset();
  ::munmap(ram, kRegion);
}

}  // namespace
}  // namespace livemig
