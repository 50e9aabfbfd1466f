// File: tools/vmm/testing/kvm_test_util.h
//
// Test helpers for code that runs the tiny KVM VMM: guest memory made of
// anonymous regions, a skip when /dev/kvm cannot run our guest, and waits
// that count the guest's work (never wall-clock speed; the deadlines are
// hang guards only).
#ifndef LIVEMIG_TOOLS_VMM_TESTING_KVM_TEST_UTIL_H_
#define LIVEMIG_TOOLS_VMM_TESTING_KVM_TEST_UTIL_H_

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "gtest/gtest.h"

namespace livemig::vmm::testing {

// Why KVM cannot be used here, or "" when it can.
inline std::string KvmUnusableReason() {
  const int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return "/dev/kvm cannot be opened (no KVM on this machine)";
  const int vm = ioctl(fd, KVM_CREATE_VM, 0);
  std::string reason;
  if (vm < 0) {
    reason = "KVM_CREATE_VM fails on /dev/kvm";
  } else {
    close(vm);
  }
  close(fd);
  return reason;
}

#define LIVEMIG_SKIP_WITHOUT_KVM()                                            \
  do {                                                                        \
    const std::string livemig_kvm_reason =                                    \
        ::livemig::vmm::testing::KvmUnusableReason();                         \
    if (!livemig_kvm_reason.empty()) {                                        \
      GTEST_SKIP() << "skipped: " << livemig_kvm_reason;                      \
    }                                                                         \
  } while (0)

// One anonymous region per size, back to back from guest address `base`.
template <DirtyTracker B = AtomicBitmap>
std::unique_ptr<GuestMemory<B>> MakeMemory(std::vector<uint64_t> sizes,
                                           uint64_t base = 0) {
  std::vector<GuestRegion<B>> regions;
  uint64_t at = base;
  for (uint64_t size : sizes) {
    auto mapping = MmapRegion<B>::Create(size);
    EXPECT_TRUE(mapping.ok()) << mapping.status();
    if (!mapping.ok()) return nullptr;
    auto region = GuestRegion<B>::Create(std::move(*mapping), GuestAddress(at));
    EXPECT_TRUE(region.ok()) << region.status();
    if (!region.ok()) return nullptr;
    regions.push_back(std::move(*region));
    at += size;
  }
  auto memory = GuestMemory<B>::FromRegions(std::move(regions));
  EXPECT_TRUE(memory.ok()) << memory.status();
  if (!memory.ok()) return nullptr;
  return std::make_unique<GuestMemory<B>>(std::move(*memory));
}

// Polls `done` every millisecond; false (with a test failure naming
// `what`) after `guard`, which only guards against a hang.
inline bool WaitFor(const std::function<bool()>& done, const std::string& what,
                    absl::Duration guard = absl::Seconds(60)) {
  const absl::Time deadline = absl::Now() + guard;
  while (!done()) {
    if (absl::Now() > deadline) {
      ADD_FAILURE() << "timed out (hang guard " << guard << ") waiting for " << what;
      return false;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace livemig::vmm::testing

#endif  // LIVEMIG_TOOLS_VMM_TESTING_KVM_TEST_UTIL_H_
