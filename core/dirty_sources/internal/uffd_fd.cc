#include "core/dirty_sources/internal/uffd_fd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/dirty_sources/internal/uffd_abi.h"
#include "core/posix_error.h"

namespace livemig::uffd_internal {
namespace {

constexpr int kUffdFlags = O_CLOEXEC | O_NONBLOCK;

std::string ErrnoName(int error_number) {
  const char* name = strerrorname_np(error_number);
  return name != nullptr ? name : absl::StrCat("errno ", error_number);
}

}  // namespace

absl::StatusOr<ScopedFd> OpenUserfaultfd() {
  int device_errno = 0;
  {
    ScopedFd device(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (device.valid()) {
      const int fd = ::ioctl(device.get(), kUserfaultfdIocNew, kUffdFlags);
      if (fd >= 0) return ScopedFd(fd);
    }
    device_errno = errno;
  }
  const long fd = ::syscall(SYS_userfaultfd, kUffdFlags);
  if (fd >= 0) return ScopedFd(static_cast<int>(fd));
  return OpenFailure(device_errno, errno);
}

absl::Status OpenFailure(int device_errno, int syscall_errno) {
  const std::string both =
      absl::StrCat("userfaultfd: /dev/userfaultfd: ", ErrnoName(device_errno),
                   ", userfaultfd(2): ", ErrnoName(syscall_errno));
  switch (syscall_errno) {
    case ENOSYS:
      return absl::UnimplementedError(
          absl::StrCat(both, " (kernel built without CONFIG_USERFAULTFD)"));
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(absl::StrCat(
          both,
          " (needs read-write access to /dev/userfaultfd, or "
          "vm.unprivileged_userfaultfd=1, or CAP_SYS_PTRACE)"));
    default:
      return PosixError(both, syscall_errno);
  }
}

absl::Status CheckFeatures(uint64_t supported) {
  std::string missing;
  if ((supported & kFeatureWpAsync) == 0) missing = "UFFD_FEATURE_WP_ASYNC (Linux 6.7+)";
  if ((supported & kFeatureWpUnpopulated) == 0) {
    absl::StrAppend(&missing, missing.empty() ? "" : " and ",
                    "UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+)");
  }
  if (missing.empty()) return absl::OkStatus();
  return absl::UnimplementedError(
      absl::StrCat("userfaultfd: kernel lacks ", missing, "; features 0x",
                   absl::Hex(supported)));
}

absl::StatusOr<uint64_t> SupportedFeatures() {
  absl::StatusOr<ScopedFd> fd = OpenUserfaultfd();
  if (!fd.ok()) return fd.status();
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = 0;
  if (::ioctl(fd->get(), UFFDIO_API, &api) != 0) {
    return PosixError("userfaultfd: UFFDIO_API", errno);
  }
  // On success the kernel answers with every feature it supports.
  return static_cast<uint64_t>(api.features);
}

absl::Status EnableAsyncWriteProtect(int uffd) {
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = kFeatureWpAsync | kFeatureWpUnpopulated;
  if (::ioctl(uffd, UFFDIO_API, &api) == 0) return absl::OkStatus();
  const int error_number = errno;
  if (error_number == EINVAL) {
    // Most likely a feature this kernel lacks: ask a fresh fd which.
    absl::StatusOr<uint64_t> supported = SupportedFeatures();
    if (supported.ok()) {
      absl::Status missing = CheckFeatures(*supported);
      if (!missing.ok()) return missing;
    }
  }
  return PosixError("userfaultfd: UFFDIO_API with WP_ASYNC|WP_UNPOPULATED",
                    error_number);
}

absl::Status ScanFailure(const char* context, int error_number) {
  switch (error_number) {
    case ENOTTY:
      return absl::UnimplementedError(
          absl::StrCat(context, ": kernel lacks PAGEMAP_SCAN (Linux 6.7+)"));
    case EPERM:
      return absl::FailedPreconditionError(absl::StrCat(
          context, ": ", ErrnoName(EPERM),
          " (a range not registered for async write-protect: was the "
          "userfaultfd closed or the memory remapped?)"));
    default:
      return PosixError(context, error_number);
  }
}

absl::StatusOr<ScopedFd> OpenPagemap() {
  ScopedFd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open /proc/self/pagemap", errno);
  return fd;
}

}  // namespace livemig::uffd_internal
