#include "tools/vmm/vcpu.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"
#include "core/status_macros.h"

namespace livemig::vmm {

using vmm_internal::Ioctl;
using vmm_internal::ScopedMapping;

namespace {

kvm_segment FlatSegment(uint16_t selector, bool code) {
  kvm_segment s = {};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.present = 1;
  s.dpl = static_cast<uint8_t>(selector & 3);
  s.s = 1;
  s.g = 1;
  if (code) {
    s.type = 11;  // execute/read, accessed
    s.l = 1;
  } else {
    s.type = 3;  // read/write, accessed
    s.db = 1;
  }
  return s;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Vcpu>> Vcpu::Create(
    int vm_fd, size_t run_size, int index, const kvm_cpuid2& cpuid,
    uint32_t ring_entries, const VcpuRegs& regs, VcpuHost* host) {
  LIVEMIG_ASSIGN_OR_RETURN(int fd, Ioctl(vm_fd, KVM_CREATE_VCPU,
                                         static_cast<unsigned long>(index),
                                         absl::StrCat("KVM_CREATE_VCPU ", index)));
  ScopedFd vcpu_fd(fd);
  LIVEMIG_ASSIGN_OR_RETURN(
      ScopedMapping run_map,
      ScopedMapping::MapShared(vcpu_fd.get(), run_size, PROT_READ | PROT_WRITE, 0,
                               "mmap of kvm_run"));
  ScopedMapping ring_map;
  if (ring_entries > 0) {
    LIVEMIG_ASSIGN_OR_RETURN(
        ring_map, ScopedMapping::MapShared(
                      vcpu_fd.get(), ring_entries * sizeof(kvm_dirty_gfn),
                      PROT_READ | PROT_WRITE,
                      static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET) * 4096,
                      "mmap of the dirty ring"));
  }
  LIVEMIG_RETURN_IF_ERROR(
      Ioctl(vcpu_fd.get(), vmm_internal::kKvmSetCpuid2, &cpuid, "KVM_SET_CPUID2").status());
  std::unique_ptr<Vcpu> vcpu(new Vcpu(std::move(vcpu_fd), std::move(run_map), index,
                                      ring_entries, std::move(ring_map), host));
  LIVEMIG_RETURN_IF_ERROR(vcpu->WriteRegs(regs));
  vcpu->saved_ = regs;
  return vcpu;
}

absl::Status Vcpu::WriteRegs(const VcpuRegs& v) {
  kvm_sregs sregs;
  LIVEMIG_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS").status());
  sregs.cs = FlatSegment(v.cs, /*code=*/true);
  sregs.ss = FlatSegment(v.ss, /*code=*/false);
  // PVM loads guest selectors into the real segment registers: keep the
  // data segments null (notes, "PVM-specific").
  kvm_segment null_data = FlatSegment(0, /*code=*/false);
  null_data.dpl = 3;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = null_data;
  sregs.cr0 = v.cr0;
  sregs.cr3 = v.cr3;
  sregs.cr4 = v.cr4;
  sregs.efer = v.efer;
  LIVEMIG_RETURN_IF_ERROR(Ioctl(fd(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS").status());
  kvm_regs regs = {};
  __u64* g[16] = {&regs.rax, &regs.rbx, &regs.rcx, &regs.rdx, &regs.rsi, &regs.rdi,
                     &regs.rsp, &regs.rbp, &regs.r8,  &regs.r9,  &regs.r10, &regs.r11,
                     &regs.r12, &regs.r13, &regs.r14, &regs.r15};
  for (int i = 0; i < 16; ++i) *g[i] = v.gpr[i];
  regs.rip = v.rip;
  regs.rflags = v.rflags;
  return Ioctl(fd(), KVM_SET_REGS, &regs, "KVM_SET_REGS").status();
}

absl::StatusOr<VcpuRegs> Vcpu::ReadRegs() const {
  kvm_regs regs;
  kvm_sregs sregs;
  LIVEMIG_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_REGS, &regs, "KVM_GET_REGS").status());
  LIVEMIG_RETURN_IF_ERROR(Ioctl(fd(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS").status());
  VcpuRegs v;
  const uint64_t g[16] = {regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi,
                          regs.rsp, regs.rbp, regs.r8,  regs.r9,  regs.r10, regs.r11,
                          regs.r12, regs.r13, regs.r14, regs.r15};
  for (int i = 0; i < 16; ++i) v.gpr[i] = g[i];
  v.rip = regs.rip;
  v.rflags = regs.rflags;
  v.cr0 = sregs.cr0;
  v.cr3 = sregs.cr3;
  v.cr4 = sregs.cr4;
  v.efer = sregs.efer;
  v.cs = sregs.cs.selector;
  v.ss = sregs.ss.selector;
  return v;
}

Vcpu::~Vcpu() { Join(); }

void Vcpu::Start() {
  vmm_internal::InstallKickHandler();
  thread_ = std::thread([this] { Loop(); });
  handle_ = thread_.native_handle();
}

void Vcpu::Kick() const {
  // The VM kicks only threads it has started and not yet joined (a thread
  // that ended but is not joined still has a valid id).
  if (thread_.joinable()) pthread_kill(handle_, vmm_internal::KickSignal());
}

void Vcpu::Join() {
  if (thread_.joinable()) thread_.join();
}

void Vcpu::Loop() {
  vmm_internal::SetThreadRun(run_);
  bool mmio_pending = false;
  absl::Duration ran = absl::ZeroDuration();
  for (;;) {
    if (host_->ShouldPark()) {
      if (mmio_pending) {
        // Completes the MMIO instruction (its load data is filled in) and
        // returns EINTR before running anything else.
        run_->immediate_exit = 1;
        const int r = ioctl(fd(), KVM_RUN, 0);
        if (r == 0 && run_->exit_reason != KVM_EXIT_INTR) {
          host_->Failed(index_, absl::InternalError(absl::StrCat(
                                    "vCPU ", index_, ": finishing an MMIO exit "
                                    "ran the guest (exit ", run_->exit_reason, ")")));
          break;
        }
        mmio_pending = false;
      }
      absl::StatusOr<VcpuRegs> regs = ReadRegs();
      if (!regs.ok()) {
        host_->Failed(index_, regs.status());
        break;
      }
      saved_ = *regs;
      if (!host_->Park(index_)) break;
      ran = absl::ZeroDuration();
      continue;
    }
    run_->immediate_exit = 0;
    if (host_->ShouldPark()) continue;
    const absl::Time start = absl::Now();
    const int r = ioctl(fd(), KVM_RUN, 0);
    const int err = errno;
    ran += absl::Now() - start;
    mmio_pending = false;  // Any return of KVM_RUN completed it.
    if (r < 0) {
      if (err == EINTR || err == EAGAIN) continue;
      host_->Failed(index_, PosixError(absl::StrCat("KVM_RUN of vCPU ", index_), err));
      break;
    }
    switch (run_->exit_reason) {
      case KVM_EXIT_MMIO: {
        mmio_pending = true;
        const uint64_t gpa = run_->mmio.phys_addr;
        const uint64_t offset = gpa & 0xfff;
        if (run_->mmio.is_write) {
          uint64_t value = 0;
          std::memcpy(&value, run_->mmio.data, std::min<uint32_t>(run_->mmio.len, 8));
          host_->MmioStore(index_, offset, value);
        } else {
          const uint64_t value = host_->MmioLoad(index_, offset, ran);
          ran = absl::ZeroDuration();
          std::memcpy(run_->mmio.data, &value, std::min<uint32_t>(run_->mmio.len, 8));
        }
        break;
      }
      case KVM_EXIT_INTR:
        break;
      case KVM_EXIT_DIRTY_RING_FULL: {
        absl::Status status = host_->RingFull(index_);
        if (!status.ok()) {
          host_->Failed(index_, status);
          vmm_internal::SetThreadRun(nullptr);
          return;
        }
        break;
      }
      default: {
        kvm_regs regs = {};
        ioctl(fd(), KVM_GET_REGS, &regs);
        host_->Failed(index_, absl::InternalError(absl::StrCat(
                                  "vCPU ", index_, " stopped: KVM exit reason ",
                                  run_->exit_reason, " at RIP 0x", absl::Hex(regs.rip))));
        vmm_internal::SetThreadRun(nullptr);
        return;
      }
    }
  }
  vmm_internal::SetThreadRun(nullptr);
}

}  // namespace livemig::vmm
