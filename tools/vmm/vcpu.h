// File: tools/vmm/vcpu.h
//
// Vcpu: one KVM vCPU (its fd, its kvm_run and dirty-ring mappings) and the
// thread that runs it. The loop is mechanics only; every decision (pace,
// probe jobs, ring-full collection, pausing) is the VcpuHost's, which is
// the VM (tools/vmm/kvm_vm.h).
//
// The loop, and how it stops (notes "Stopping a vCPU"):
//   1. If the host wants it parked: finish a pending MMIO exit first
//      (immediate_exit=1 + KVM_RUN, which completes the instruction and
//      returns EINTR), save the registers, then block in VcpuHost::Park().
//   2. Clear immediate_exit, re-check (1) — a kick that landed before the
//      clear would otherwise be lost — and KVM_RUN.
//   3. Exits: MMIO loads are answered by the host (a budget grant or a
//      probe job field, which may sleep), MMIO stores report a finished job,
//      KVM_EXIT_DIRTY_RING_FULL asks the host to collect (and the ring is
//      reset before the next KVM_RUN), EINTR/KVM_EXIT_INTR loop to (1).
//      Anything else (a guest fault, KVM_EXIT_SHUTDOWN) ends the thread
//      with VcpuHost::Failed naming the exit and RIP.
// Kick() sends the kick signal (internal/kvm_sys.h), whose handler sets
// immediate_exit, so KVM_RUN returns EINTR within ~0.1 ms.
//
// Ownership: owns its fd, mappings and thread; the host must outlive it.
// Thread safety: Start/Kick/Join and the accessors are for the VM's
// threads; saved_regs() only while the vCPU is parked (the host's mutex
// orders the save before the park).
#ifndef LIVEMIG_TOOLS_VMM_VCPU_H_
#define LIVEMIG_TOOLS_VMM_VCPU_H_

#include <linux/kvm.h>
#include <pthread.h>

#include <cstdint>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/file_offset.h"
#include "tools/vmm/guest_program.h"
#include "tools/vmm/internal/kvm_sys.h"

namespace livemig::vmm {

class Vcpu;

class VcpuHost {
 public:
  virtual ~VcpuHost() = default;
  // Fast check, called before every KVM_RUN.
  virtual bool ShouldPark() const = 0;
  // Blocks while the VM is paused. False: the thread must end.
  virtual bool Park(int index) = 0;
  // An MMIO load at mmio_gpa + offset; `ran` is the time spent in KVM_RUN
  // since the previous load (for the throttle). May sleep; returns promptly
  // (with 0) once ShouldPark().
  virtual uint64_t MmioLoad(int index, uint64_t offset, absl::Duration ran) = 0;
  virtual void MmioStore(int index, uint64_t offset, uint64_t value) = 0;
  // KVM_EXIT_DIRTY_RING_FULL: harvest and reset the rings.
  virtual absl::Status RingFull(int index) = 0;
  // The thread ends with `status`.
  virtual void Failed(int index, absl::Status status) = 0;
};

class Vcpu {
 public:
  // Creates vCPU `index` of `vm_fd`, sets CPUID (`cpuid`, from
  // KVM_GET_SUPPORTED_CPUID), the CPL3 long-mode control state and the
  // registers of `regs`, and maps the run structure and (ring_entries > 0)
  // the dirty ring.
  static absl::StatusOr<std::unique_ptr<Vcpu>> Create(
      int vm_fd, size_t run_size, int index, const kvm_cpuid2& cpuid,
      uint32_t ring_entries, const VcpuRegs& regs, VcpuHost* host);
  ~Vcpu();  // Joins the thread. REQUIRES: the host lets it end.

  void Start();
  void Kick() const;
  void Join();

  int index() const { return index_; }
  int fd() const { return fd_.get(); }
  // The registers saved when the vCPU last parked.
  const VcpuRegs& saved_regs() const { return saved_; }
  // The dirty ring (nullptr without one), its size in entries, and the
  // consumer's free-running fetch index, which lives here so it survives
  // the trackers that use it (one at a time).
  kvm_dirty_gfn* ring() const {
    return static_cast<kvm_dirty_gfn*>(ring_map_.addr());
  }
  uint32_t ring_entries() const { return ring_entries_; }
  uint32_t* ring_fetch() { return &ring_fetch_; }

  // Reads every register KVM holds (also used by a fresh vCPU's checks).
  absl::StatusOr<VcpuRegs> ReadRegs() const;

 private:
  Vcpu(ScopedFd fd, vmm_internal::ScopedMapping run_map, int index,
       uint32_t ring_entries, vmm_internal::ScopedMapping ring_map,
       VcpuHost* host)
      : fd_(std::move(fd)),
        run_map_(std::move(run_map)),
        ring_map_(std::move(ring_map)),
        run_(static_cast<kvm_run*>(run_map_.addr())),
        index_(index),
        ring_entries_(ring_entries),
        host_(host) {}

  void Loop();
  absl::Status WriteRegs(const VcpuRegs& regs);

  ScopedFd fd_;
  vmm_internal::ScopedMapping run_map_;
  vmm_internal::ScopedMapping ring_map_;
  kvm_run* run_;
  const int index_;
  const uint32_t ring_entries_;
  uint32_t ring_fetch_ = 0;
  VcpuHost* const host_;
  VcpuRegs saved_;  // Written by the vCPU thread before it parks.
  std::thread thread_;
  pthread_t handle_{};  // thread_'s, for Kick(); set by Start().
};

}  // namespace livemig::vmm

#endif  // LIVEMIG_TOOLS_VMM_VCPU_H_
