// File: tools/vmm/internal/kvm_sys.h
//
// The system-call layer of the tiny VMM: an owned mmap (ScopedMapping), KVM
// ioctls turned into absl::Status, and the process-wide vCPU kick signal.
//
// Thread safety: ScopedMapping is move-only; the functions are reentrant.
#ifndef LIVEMIG_TOOLS_VMM_INTERNAL_KVM_SYS_H_
#define LIVEMIG_TOOLS_VMM_INTERNAL_KVM_SYS_H_

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "core/file_offset.h"

namespace livemig::vmm_internal {

// KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2 as the kernel defines them.
// g++ 12 in C++ mode gives struct kvm_cpuid2 (with its zero-length array)
// size 12 instead of C's 8, which changes the size field of the
// _IOWR/_IOW macros and makes KVM answer EINVAL.
inline constexpr unsigned long kKvmGetSupportedCpuid = 0xc008ae05;
inline constexpr unsigned long kKvmSetCpuid2 = 0x4008ae90;

// An mmap this object unmaps in its destructor.
class ScopedMapping {
 public:
  ScopedMapping() = default;
  // mmap(NULL, size, prot, MAP_SHARED, fd, offset).
  static absl::StatusOr<ScopedMapping> MapShared(int fd, size_t size, int prot,
                                                 off_t offset,
                                                 std::string_view what);
  ~ScopedMapping();
  ScopedMapping(ScopedMapping&& other) noexcept;
  ScopedMapping& operator=(ScopedMapping&& other) noexcept;
  ScopedMapping(const ScopedMapping&) = delete;
  ScopedMapping& operator=(const ScopedMapping&) = delete;

  void* addr() const { return addr_; }
  size_t size() const { return size_; }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// ioctl(fd, request, arg), retried on EINTR; PosixError(what) on failure.
absl::StatusOr<int> Ioctl(int fd, unsigned long request, unsigned long arg,
                          std::string_view what);
template <typename T>
absl::StatusOr<int> Ioctl(int fd, unsigned long request, T* arg,
                          std::string_view what) {
  return Ioctl(fd, request, reinterpret_cast<unsigned long>(arg), what);
}

// Opens /dev/kvm and checks its API version. FailedPrecondition when KVM is
// missing or unusable (the message says why; tests skip on it).
absl::StatusOr<ScopedFd> OpenKvm();

// The signal that kicks a vCPU thread out of KVM_RUN (SIGUSR1, installed
// once, without SA_RESTART). Its handler sets immediate_exit on the run
// structure registered for the receiving thread.
int KickSignal();
void InstallKickHandler();
// Registers `run` as the calling thread's (nullptr: none).
void SetThreadRun(kvm_run* run);

}  // namespace livemig::vmm_internal

#endif  // LIVEMIG_TOOLS_VMM_INTERNAL_KVM_SYS_H_
