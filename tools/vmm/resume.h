// File: tools/vmm/resume.h
//
// The destination side of the tiny VMM, and the guest's own invariants.
//
//   ResumeAndCheck(received.memory, received.device_state, {.run_for = ...})
//
// builds a KVM VM from the rebuilt memory and the device state, checks that
// memory and registers agree, runs the guest, pauses it and checks again.
// For `counter`: every slice holds one N/N-1 boundary, before and after,
// the registers point at that boundary (the guest continues exactly where
// it was paused: memory progress == register progress, or one ahead when
// the pause fell between the store and the index increment), and the
// counter advanced by at least min_progress pages. For uniform/hotset: the
// store count in the registers advanced by at least min_progress.
//
// A broken invariant is not an error: the result says invariant_held =
// false with a detail naming the slice, page and value. Errors are for a
// VM that cannot be built or run (FailedPrecondition without KVM,
// InvalidArgument for a bad device state).
//
// Thread safety: plain functions; reading guest memory while a guest runs
// is racy by design (CounterProgress is then only an estimate).
#ifndef LIVEMIG_TOOLS_VMM_RESUME_H_
#define LIVEMIG_TOOLS_VMM_RESUME_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/guest_memory.h"
#include "tools/vmm/guest_program.h"
#include "tools/vmm/kvm_vm.h"

namespace livemig::vmm {

// The counter pattern's state as memory shows it.
struct CounterCheck {
  bool held = true;
  uint64_t progress = 0;               // Page writes, summed over slices.
  std::vector<uint64_t> slice_progress;
  std::string detail;                  // Why it broke (empty when held).
};
// Reads the slices of a `vcpus`-vCPU counter guest from region 0's host
// mapping (`workload` = the host address of layout.workload_gpa).
CounterCheck CheckCounterMemory(const uint8_t* workload, const GuestLayout& layout,
                                int vcpus);
// The same for a VM (its region 0).
CounterCheck CheckCounterMemory(const KvmVm& vm);
// Register progress of counter vCPU `regs` with `slice_pages` pages.
inline uint64_t CounterRegisterProgress(const VcpuRegs& regs, uint64_t slice_pages) {
  return (regs.gpr[kRcx] - 1) * slice_pages + regs.gpr[kRbx];
}

struct ResumeOptions {
  absl::Duration run_for = absl::Milliseconds(100);
  // Run at least until the guest made this much progress (pages), however
  // long it takes (bounded by hang_guard): no dependence on speed.
  uint64_t min_progress = 1000;
  absl::Duration hang_guard = absl::Seconds(60);
  uint32_t dirty_ring_entries = 0;
};

struct ResumeResult {
  int64_t ran_ms = 0;
  uint64_t counter_at_pause = 0;  // Progress the received memory/state shows.
  uint64_t counter_after = 0;     // Progress after the destination ran.
  bool invariant_held = false;
  std::string detail;             // What broke, naming page and value.
};

// One line for a CLI: "resumed guest ran 512 ms, counter 1234 -> 5678,
// invariant held" (or "... BROKEN: <detail>").
std::string DescribeResume(const ResumeResult& result);

// Checks `vm` (paused or not yet started) against its saved registers.
// Adds what is wrong to *detail and returns false.
bool CheckRegistersMatchMemory(const KvmVm& vm, const std::vector<VcpuRegs>& regs,
                               const CounterCheck& memory, std::string* detail);

absl::StatusOr<ResumeResult> ResumeAndCheckRam(std::unique_ptr<KvmVm> vm,
                                               const ResumeOptions& options);

template <DirtyTracker B>
absl::StatusOr<ResumeResult> ResumeAndCheck(const GuestMemory<B>& memory,
                                            std::string_view device_state,
                                            const ResumeOptions& options = {}) {
  KvmVmOptions vm_options;
  vm_options.dirty_ring_entries = options.dirty_ring_entries;
  absl::StatusOr<std::unique_ptr<KvmVm>> vm =
      KvmVm::Restore(memory, device_state, vm_options);
  if (!vm.ok()) return vm.status();
  return ResumeAndCheckRam(std::move(*vm), options);
}

}  // namespace livemig::vmm

#endif  // LIVEMIG_TOOLS_VMM_RESUME_H_
