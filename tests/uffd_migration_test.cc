// End to end with the userfaultfd tracker: a real Sender and ReceiverThread
// over 127.0.0.1, and a "VMM device" thread that writes guest memory ONLY
// through raw host pointers, which livemig's tracked API never sees, while
// pre-copy runs. With UffdWriteTracker as a dirty source the destination is
// the source byte for byte and the audit finds nothing untracked; without
// it, verify=full catches the lost writes. A connection cut mid-migration
// gives every harvested page back, leaves the tracker stopped, and a retry
// (a fresh Start) is exact.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/dirty_sources/uffd_write_tracker.h"
#include "core/internal/guest_copy.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/fault_proxy.h"
#include "migration/testing/migration_harness.h"
#include "migration/vm_control.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::AnyOf;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kRegionBytes = 4 * kMiB;
constexpr uint64_t kRegionPages = kRegionBytes / kPage;
constexpr uint64_t kTotalPages = 2 * kRegionPages;
// Raw writes the device makes after round 0 before pre-copy may go on:
// enough that round 0's copy of some page is stale, whatever the timing.
constexpr uint64_t kWritesAfterRound0 = 512;

// A VM whose only writer is a device model writing through raw pointers.
// Guest memory (4 MiB anonymous at 0, 4 MiB of a MAP_SHARED file at 1 GiB)
// comes from a FakeVm, whose own tracked writers never run. Pause() stops and
// joins the device thread, so memory is frozen; Resume() restarts it if it
// was running.
class RawDeviceVm : public VmControl {
 public:
  static std::unique_ptr<RawDeviceVm> Create(const std::string& name, Fill fill) {
    const std::string file = absl::StrCat(TempDir(absl::StrCat(name, "_src")), "/disk.img");
    auto vm = FakeVm::Create({{0, kRegionBytes, "", 0}, {uint64_t{1} << 30, kRegionBytes, file, 0}},
                             fill, 3);
    EXPECT_TRUE(vm.ok()) << vm.status();
    if (!vm.ok()) return nullptr;
    return std::unique_ptr<RawDeviceVm>(new RawDeviceVm(std::move(*vm)));
  }
  ~RawDeviceVm() override { StopDevice(); }

  const GuestMemory<AtomicBitmap>& memory() const { return vm_->memory(); }

  void StartDevice() {
    running_ = true;
    stop_.store(false, std::memory_order_relaxed);
    device_ = std::thread([this] { RunDevice(); });
  }
  void StopDevice() {
    stop_.store(true, std::memory_order_relaxed);
    if (device_.joinable()) device_.join();
  }
  // Blocks until the device has made `n` more writes (counted, not timed).
  void WaitForWrites(uint64_t n) {
    const uint64_t target = writes() + n;
    while (writes() < target) std::this_thread::yield();
  }
  uint64_t writes() const { return writes_.load(std::memory_order_relaxed); }

  absl::Status Pause() override {
    StopDevice();
    paused_ = true;
    return vm_->Pause();
  }
  absl::Status Resume() override {
    paused_ = false;
    ++resumes_;
    if (running_) StartDevice();
    return vm_->Resume();
  }
  absl::StatusOr<std::string> DeviceState() override { return std::string("raw-device"); }

  bool paused() const { return paused_; }
  int resumes() const { return resumes_; }
  uint64_t DirtyPages() const {
    uint64_t dirty = 0;
    for (const auto& r : memory().regions()) dirty += r.bitmap().CountDirty();
    return dirty;
  }

 private:
  explicit RawDeviceVm(std::unique_ptr<FakeVm> vm) : vm_(std::move(vm)) {}

  // Stores a never-repeated sequence number into pseudo-random pages of both
  // regions, so every write changes its page.
  void RunDevice() {
    uint64_t seq = writes();
    uint64_t x = 0x9e3779b97f4a7c15ull ^ seq;
    while (!stop_.load(std::memory_order_relaxed)) {
      ++seq;
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const uint64_t page = (x >> 33) % kTotalPages;
      const auto& region = memory().region(page / kRegionPages);
      uint8_t* host = region.region().as_ptr() + (page % kRegionPages) * kPage;
      core_internal::StoreToGuest<uint64_t>(host + (seq % (kPage / 8)) * 8, seq);
      writes_.store(seq, std::memory_order_relaxed);
      // A device, not a memory benchmark: leave the CPU to the migration.
      if (seq % 64 == 0) std::this_thread::yield();
    }
  }

  std::unique_ptr<FakeVm> vm_;
  std::thread device_;
  // The test thread and the migration thread (Pause/Resume) use the fields
  // below one at a time; the device thread only reads stop_ and writes
  // writes_. stop_ is relaxed: it only ends the loop, and join() orders the
  // device's memory writes before anything that follows Pause(). writes_ is
  // relaxed: a progress count, publishing nothing.
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> writes_{0};
  bool running_ = false;
  bool paused_ = false;
  int resumes_ = 0;
};

ReceiverOptions ReceiverAt(const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(10);
  options.accept_timeout = absl::Seconds(20);
  return options;
}

SenderOptions Options(const Endpoint& to, SenderOptions::Verify verify,
                      UffdWriteTracker* tracker, RawDeviceVm* vm) {
  SenderOptions options;
  options.destination = to;
  options.channels = 2;
  options.io_timeout = absl::Seconds(10);
  options.verify = verify;
  options.max_rounds = 10;
  options.on_limit = SenderOptions::OnLimit::kForce;
  if (tracker != nullptr) options.dirty_sources = {tracker};
  // After round 0 copied every page: more raw writes before going on.
  options.on_round = [vm](const MigrationStats& stats) {
    if (stats.rounds == 1) vm->WaitForWrites(kWritesAfterRound0);
  };
  return options;
}

#define SKIP_UNLESS_UFFD_WORKS()                                                 \
  do {                                                                           \
    if (absl::Status why = UffdWriteTracker::Probe(); !why.ok()) {               \
      GTEST_SKIP() << "userfaultfd write tracking is unavailable here: " << why; \
    }                                                                            \
  } while (0)

class UffdMigration : public ::testing::TestWithParam<SenderOptions::Verify> {};

TEST_P(UffdMigration, RawPointerWritesDuringPreCopyArriveExactlyAndTheAuditFindsNone) {
  SKIP_UNLESS_UFFD_WORKS();
  const std::string name = absl::StrCat("uffd_exact_", VerifyName(GetParam()));
  auto vm = RawDeviceVm::Create(name, Fill::kRandom);
  ASSERT_NE(vm, nullptr);
  UffdWriteTracker tracker(vm->memory());
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir(name)));
  ASSERT_NE(receiver, nullptr);
  vm->StartDevice();
  Sender sender(Options(receiver->receiver->endpoint(), GetParam(), &tracker, vm.get()));
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_TRUE(vm->paused());  // The device is frozen: compare now.
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_TRUE(stats.audit.ran);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
  // The tracker, not the API, carried the writes after round 0.
  EXPECT_GT(tracker.stats().pages_reported, 0u);
  EXPECT_GE(tracker.stats().collects, 2u);
  EXPECT_FALSE(tracker.started());
}

INSTANTIATE_TEST_SUITE_P(VerifyModes, UffdMigration,
                         ::testing::Values(SenderOptions::Verify::kSent,
                                           SenderOptions::Verify::kFull),
                         [](const ::testing::TestParamInfo<SenderOptions::Verify>& info) {
                           return std::string(VerifyName(info.param));
                         });

// The control: the same device without the tracker loses its writes, and
// verify=full refuses to hand over, naming the pages.
TEST(UffdMigrationControl, WithoutTheTrackerVerifyFullFailsWithDataLossNamingPages) {
  auto vm = RawDeviceVm::Create("uffd_control", Fill::kRandom);
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("uffd_control")));
  ASSERT_NE(receiver, nullptr);
  vm->StartDevice();
  Sender sender(Options(receiver->receiver->endpoint(), SenderOptions::Verify::kFull,
                        /*tracker=*/nullptr, vm.get()));
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "changed without being marked dirty: region "));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_GT(sender.last_stats().audit.untracked_pages, 0u);
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->resumes(), 1);
}

// A connection cut while the pages the tracker reported are being sent: the
// migration fails, every page harvested is dirty again, the tracker is
// stopped, and a second attempt (a fresh Start) is exact.
TEST(UffdMigrationRollBack, ACutConnectionGivesEveryPageBackStopsTheTrackerAndARetryIsExact) {
  SKIP_UNLESS_UFFD_WORKS();
  // Zero memory: round 0 is ZERO runs, a few KiB, so the cut falls in the
  // rounds that send the device's pages (each write makes a page non-zero).
  auto vm = RawDeviceVm::Create("uffd_cut", Fill::kZero);
  ASSERT_NE(vm, nullptr);
  for (const auto& r : vm->memory().regions()) r.bitmap().SetAddrRange(0, kRegionBytes);
  UffdWriteTracker tracker(vm->memory());
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("uffd_cut")));
  ASSERT_NE(receiver, nullptr);
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.offset = 256 * 1024;  // Every connection, a quarter MiB into its stream.
  fault.client_to_server = true;
  fault.connection_index = -1;
  ASSERT_OK_AND_ASSIGN(auto proxy, FaultProxy::Start(receiver->receiver->endpoint(), fault));
  SenderOptions options =
      Options(proxy->endpoint(), SenderOptions::Verify::kSent, &tracker, vm.get());
  // The device starts after round 0 and writes at least 2048 times (at
  // least ~1500 distinct pages, ~6 MiB) before pre-copy goes on.
  options.on_round = [&vm](const MigrationStats& stats) {
    if (stats.rounds != 1) return;
    vm->StartDevice();
    vm->WaitForWrites(4 * kWritesAfterRound0);
  };
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                    StatusIs(absl::StatusCode::kDataLoss)));
  EXPECT_THAT(receiver->Join(), AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                                      StatusIs(absl::StatusCode::kDataLoss),
                                      StatusIs(absl::StatusCode::kDeadlineExceeded)));
  proxy.reset();
  receiver.reset();
  // The cut fell after the tracker had reported pages.
  EXPECT_GT(tracker.stats().pages_reported, 0u);
  EXPECT_FALSE(tracker.started());
  EXPECT_FALSE(vm->paused());
  ASSERT_OK(vm->Pause());  // Freeze memory to count the bitmaps exactly.
  EXPECT_EQ(vm->DirtyPages(), kTotalPages);
  ASSERT_OK(vm->Resume());

  // The retry, with the device still writing: exact.
  auto retry = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                     ReceiverAt(TempDir("uffd_cut_retry")));
  ASSERT_NE(retry, nullptr);
  Sender second(Options(retry->receiver->endpoint(), SenderOptions::Verify::kSent, &tracker,
                        vm.get()));
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, second.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(retry->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
  EXPECT_EQ(tracker.stats().starts, 2u);
  EXPECT_FALSE(tracker.started());
}

}  // namespace
}  // namespace livemig
