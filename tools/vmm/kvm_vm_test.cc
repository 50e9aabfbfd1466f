// The tiny KVM VMM: the guest runs natively at CPL3, Pause() freezes memory,
// the device state round-trips and a VM restored from it continues the
// guest exactly where it was paused.
#include "tools/vmm/kvm_vm.h"

#include <cstring>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "tools/vmm/device_state.h"
#include "tools/vmm/resume.h"
#include "tools/vmm/testing/kvm_test_util.h"

namespace livemig::vmm {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using testing::MakeMemory;
using testing::WaitFor;

constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> Snapshot(const GuestMemory<AtomicBitmap>& memory) {
  std::vector<uint8_t> bytes;
  for (const auto& r : memory.regions()) {
    bytes.insert(bytes.end(), r.region().as_ptr(), r.region().as_ptr() + r.len());
  }
  return bytes;
}

KvmVmOptions Counter(int vcpus) {
  KvmVmOptions options;
  options.vcpus = vcpus;
  options.pattern.pattern = Pattern::kCounter;
  return options;
}

TEST(KvmVm, CounterGuestKeepsOneBoundaryPerSliceWhenPaused) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({8 * kMiB});
  ASSERT_NE(memory, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, Counter(2)));
  ASSERT_OK(vm->Start());
  // Two full passes over every slice: the counter wrapped at least once.
  const uint64_t target = 2 * vm->layout().workload_pages;
  ASSERT_TRUE(WaitFor([&] { return CheckCounterMemory(*vm).progress >= target; },
                      "two passes of the counter"));
  ASSERT_OK(vm->Pause());
  ASSERT_OK(vm->health());
  const CounterCheck check = CheckCounterMemory(*vm);
  EXPECT_TRUE(check.held) << check.detail;
  EXPECT_GE(check.progress, target);
  std::string detail;
  EXPECT_TRUE(CheckRegistersMatchMemory(*vm, vm->saved_regs(), check, &detail)) << detail;
}

TEST(KvmVm, PauseStopsEveryWriterSoMemoryNoLongerChanges) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  KvmVmOptions options;
  options.vcpus = 2;
  options.pattern.pattern = Pattern::kUniform;
  options.device_bytes_per_second = 4 * kMiB;
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, options));
  ASSERT_OK(vm->Start());
  for (int round = 0; round < 2; ++round) {
    const uint64_t granted = vm->pages_granted();
    const uint64_t chunks = vm->device_chunks();
    ASSERT_TRUE(WaitFor([&] {
      return vm->pages_granted() >= granted + 20000 && vm->device_chunks() >= chunks + 4;
    }, "guest and device writes"));
    ASSERT_OK(vm->Pause());
    const std::vector<uint8_t> first = Snapshot(*memory);
    absl::SleepFor(absl::Milliseconds(30));
    const std::vector<uint8_t> second = Snapshot(*memory);
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size()), 0)
        << "memory changed while paused (round " << round << ")";
    ASSERT_OK(vm->Resume());
  }
  ASSERT_OK(vm->health());
}

TEST(KvmVm, DeviceStateRoundTripsAndARestoredVmContinuesTheCounter) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({8 * kMiB});
  ASSERT_NE(memory, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, Counter(2)));
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(WaitFor([&] { return CheckCounterMemory(*vm).progress >= 5000; },
                      "5000 counter pages"));
  ASSERT_OK(vm->Pause());
  const uint64_t at_pause = CheckCounterMemory(*vm).progress;
  ASSERT_OK_AND_ASSIGN(std::string state, vm->DeviceState());
  EXPECT_EQ(state.size(), vm->DeviceStateSizeHint());
  ASSERT_OK_AND_ASSIGN(DeviceStateData parsed, ParseDeviceState(state));
  EXPECT_EQ(SerializeDeviceState(parsed), state);
  ASSERT_EQ(parsed.vcpus.size(), 2u);

  // The "destination": a copy of the paused memory, untracked.
  auto copy = MakeMemory<NoBitmap>({8 * kMiB});
  ASSERT_NE(copy, nullptr);
  std::memcpy(copy->region(0).region().as_ptr(), memory->region(0).region().as_ptr(),
              8 * kMiB);
  vm.reset();
  ResumeOptions resume;
  resume.min_progress = 3000;
  ASSERT_OK_AND_ASSIGN(ResumeResult result, ResumeAndCheck(*copy, state, resume));
  EXPECT_TRUE(result.invariant_held) << result.detail;
  EXPECT_EQ(result.counter_at_pause, at_pause);
  EXPECT_GE(result.counter_after, at_pause + 3000);
}

TEST(KvmVm, RestoreRefusesACorruptOrTruncatedDeviceStateNamingTheProblem) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, Counter(1)));
  ASSERT_OK(vm->Pause());
  ASSERT_OK_AND_ASSIGN(std::string state, vm->DeviceState());
  vm.reset();

  std::string truncated = state.substr(0, state.size() - 5);
  EXPECT_THAT(KvmVm::Restore(*memory, truncated, {}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "truncated"));
  std::string flipped = state;
  flipped[120] ^= 1;
  EXPECT_THAT(KvmVm::Restore(*memory, flipped, {}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "checksum"));
  // None at all: a source that ran no KVM guest.
  EXPECT_THAT(KvmVm::Restore(*memory, "", {}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "the source ran no KVM guest"));
  // A state from a guest with another layout.
  auto bigger = MakeMemory({8 * kMiB});
  ASSERT_NE(bigger, nullptr);
  EXPECT_THAT(KvmVm::Restore(*bigger, state, {}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "layout"));
}

TEST(KvmVm, DeviceStateBeforePauseIsFailedPrecondition) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, Counter(1)));
  ASSERT_OK(vm->Start());
  EXPECT_THAT(vm->DeviceState(), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(KvmVm, RateLimitedGuestExitsToTheVmmInsteadOfSpinning) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  KvmVmOptions options = Counter(1);
  options.pattern.pages_per_second = 2000;  // 20-page budgets, every 10 ms.
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, options));
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(WaitFor([&] { return vm->pages_granted() >= 200; }, "200 granted pages"));
  ASSERT_OK(vm->Pause());
  // The guest writes only what it was granted.
  EXPECT_LE(CheckCounterMemory(*vm).progress, vm->pages_granted());
}

TEST(KvmVm, AThrottledGuestStillPausesAndResumes) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, Counter(2)));
  vm->SetThrottle(95);  // Naps 19x the time the guest ran, interruptibly.
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(WaitFor([&] { return vm->pages_granted() >= 3 * 4096; }, "three budgets"));
  ASSERT_OK(vm->Pause());
  vm->SetThrottle(0);
  ASSERT_OK(vm->Resume());
  const uint64_t granted = vm->pages_granted();
  ASSERT_TRUE(WaitFor([&] { return vm->pages_granted() >= granted + 4096; }, "a budget"));
  ASSERT_OK(vm->Pause());
  const CounterCheck check = CheckCounterMemory(*vm);
  EXPECT_TRUE(check.held) << check.detail;
}

TEST(KvmVm, HotsetGuestWritesOnlyItsHotPagesAndARestoreKeepsWriting) {
  LIVEMIG_SKIP_WITHOUT_KVM();
  auto memory = MakeMemory({4 * kMiB});
  ASSERT_NE(memory, nullptr);
  KvmVmOptions options;
  options.vcpus = 2;
  options.pattern = {Pattern::kHotset, /*pages_per_second=*/0, /*hot_pages=*/64, /*seed=*/3};
  ASSERT_OK_AND_ASSIGN(auto vm, KvmVm::Boot(*memory, options));
  ASSERT_OK(vm->Start());
  ASSERT_TRUE(WaitFor([&] { return vm->pages_granted() >= 50000; }, "50000 stores"));
  ASSERT_OK(vm->Pause());
  const uint8_t* workload = memory->region(0).region().as_ptr() + vm->layout().workload_gpa;
  uint64_t hot_written = 0;
  for (uint64_t p = 0; p < vm->layout().workload_pages; ++p) {
    uint64_t value;
    std::memcpy(&value, workload + p * 4096, sizeof(value));
    if (p < 64) {
      hot_written += value != 0;
    } else {
      ASSERT_EQ(value, 0u) << "page " << p << " is outside the 64 hot pages";
    }
  }
  EXPECT_EQ(hot_written, 64u);
  ASSERT_OK_AND_ASSIGN(std::string state, vm->DeviceState());
  auto copy = MakeMemory<NoBitmap>({4 * kMiB});
  ASSERT_NE(copy, nullptr);
  std::memcpy(copy->region(0).region().as_ptr(), memory->region(0).region().as_ptr(), 4 * kMiB);
  vm.reset();
  ASSERT_OK_AND_ASSIGN(ResumeResult result, ResumeAndCheck(*copy, state, {}));
  EXPECT_TRUE(result.invariant_held) << result.detail;
  EXPECT_GE(result.counter_after, result.counter_at_pause + 1000);
}

TEST(KvmVmSpec, ParsesTheCliSpecAndNamesABadKey) {
  ASSERT_OK_AND_ASSIGN(KvmVmSpec spec,
                       ParseKvmVmSpec("kvm:vcpus=2,pattern=hotset,rate=64m,size=256m,hot=16m"));
  EXPECT_EQ(spec.options.vcpus, 2);
  EXPECT_EQ(spec.options.pattern.pattern, Pattern::kHotset);
  EXPECT_EQ(spec.options.pattern.pages_per_second, 64u * 256);
  EXPECT_EQ(spec.size, 256 * kMiB);
  EXPECT_EQ(spec.options.pattern.hot_pages, 16u * 256);
  EXPECT_THAT(ParseKvmVmSpec("kvm:vcpus=2,colour=red"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "colour"));
  EXPECT_THAT(ParseKvmVmSpec("kvm:pattern=zigzag"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--vm: unknown guest pattern \"zigzag\""));
}

// Refused as the flag is parsed, not when the guest boots.
TEST(KvmVmSpec, RefusesAKeyGivenTwiceAndAHotSetLargerThanTheGuest) {
  EXPECT_THAT(ParseKvmVmSpec("kvm:vcpus=2,vcpus=1"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--vm: vcpus= is given twice"));
  EXPECT_THAT(ParseKvmVmSpec("kvm:size=8m,pattern=hotset,hot=16m"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "--vm: hot= is 4096 pages; the guest's workload has"));
}

}  // namespace
}  // namespace livemig::vmm
