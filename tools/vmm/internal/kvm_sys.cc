#include "tools/vmm/internal/kvm_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig::vmm_internal {
namespace {

// Written by the owning thread (SetThreadRun), read by the signal handler
// on the same thread: a relaxed atomic is enough (same thread; atomic only
// so the handler never reads a torn pointer).
thread_local std::atomic<kvm_run*> tls_run{nullptr};

void KickHandler(int) {
  kvm_run* run = tls_run.load(std::memory_order_relaxed);
  if (run != nullptr) run->immediate_exit = 1;
}

}  // namespace

absl::StatusOr<ScopedMapping> ScopedMapping::MapShared(int fd, size_t size,
                                                       int prot, off_t offset,
                                                       std::string_view what) {
  void* addr = mmap(nullptr, size, prot, MAP_SHARED, fd, offset);
  if (addr == MAP_FAILED) return PosixError(what, errno);
  ScopedMapping m;
  m.addr_ = addr;
  m.size_ = size;
  return m;
}

ScopedMapping::~ScopedMapping() {
  if (addr_ != nullptr) munmap(addr_, size_);
}

ScopedMapping::ScopedMapping(ScopedMapping&& other) noexcept
    : addr_(other.addr_), size_(other.size_) {
  other.addr_ = nullptr;
  other.size_ = 0;
}

ScopedMapping& ScopedMapping::operator=(ScopedMapping&& other) noexcept {
  if (this != &other) {
    if (addr_ != nullptr) munmap(addr_, size_);
    addr_ = other.addr_;
    size_ = other.size_;
    other.addr_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

absl::StatusOr<int> Ioctl(int fd, unsigned long request, unsigned long arg,
                          std::string_view what) {
  int ret;
  do {
    ret = ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR);
  if (ret < 0) return PosixError(what, errno);
  return ret;
}

absl::StatusOr<ScopedFd> OpenKvm() {
  ScopedFd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!kvm.valid()) {
    const int err = errno;
    return absl::FailedPreconditionError(
        absl::StrCat("/dev/kvm is not usable: ", PosixError("open", err).message()));
  }
  const int version = ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("/dev/kvm speaks API version ", version, ", not ",
                     KVM_API_VERSION));
  }
  return kvm;
}

int KickSignal() { return SIGUSR1; }

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa = {};
    sa.sa_handler = KickHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // No SA_RESTART: KVM_RUN must return EINTR.
    sigaction(KickSignal(), &sa, nullptr);
  });
}

void SetThreadRun(kvm_run* run) { tls_run.store(run, std::memory_order_relaxed); }

}  // namespace livemig::vmm_internal
