// File: core/dirty_sources/internal/uffd_fd.h
//
// Opening a userfaultfd in asynchronous write-protect mode, and the errno ->
// Status mapping that says exactly why it cannot be done here. Used by
// UffdWriteTracker::Start() and ::Probe(); the mapping functions are pure so
// tests can check every explanation without the machine that produces it.
//
// Thread safety: every function is safe to call from any thread.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_FD_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_FD_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/file_offset.h"

namespace livemig::uffd_internal {

// A new userfaultfd (O_CLOEXEC | O_NONBLOCK), API not yet negotiated: from
// /dev/userfaultfd with USERFAULTFD_IOC_NEW, else from userfaultfd(2).
// On failure, OpenFailure() of both errnos.
[[nodiscard]] absl::StatusOr<ScopedFd> OpenUserfaultfd();

// Why neither way worked. `device_errno` is open("/dev/userfaultfd")'s or
// USERFAULTFD_IOC_NEW's errno, `syscall_errno` userfaultfd(2)'s.
//   syscall ENOSYS          -> Unimplemented (kernel without userfaultfd)
//   syscall EPERM/EACCES    -> PermissionDenied, naming the three ways to get
//                              access
//   otherwise               -> PosixError of the syscall's errno
// The message always shows both errnos.
[[nodiscard]] absl::Status OpenFailure(int device_errno, int syscall_errno);

// OK iff `supported` (UFFDIO_API's answer) has UFFD_FEATURE_WP_ASYNC and
// UFFD_FEATURE_WP_UNPOPULATED; Unimplemented naming the missing bits and the
// kernel version that has them otherwise.
[[nodiscard]] absl::Status CheckFeatures(uint64_t supported);

// The features this kernel supports, from UFFDIO_API with no features on a
// throw-away fd (the API can be negotiated once per fd).
[[nodiscard]] absl::StatusOr<uint64_t> SupportedFeatures();

// UFFDIO_API on `uffd` (fresh from OpenUserfaultfd) enabling WP_ASYNC and
// WP_UNPOPULATED. When the kernel refuses, the reason from CheckFeatures()
// if a feature is missing, else the ioctl's error.
[[nodiscard]] absl::Status EnableAsyncWriteProtect(int uffd);

// The status for PAGEMAP_SCAN failing with `error_number` while doing
// `context`: ENOTTY -> Unimplemented (kernel lacks PAGEMAP_SCAN, 6.7+),
// EPERM -> FailedPrecondition (a range not registered for async WP: the fd
// was closed or the range remapped), else PosixError.
[[nodiscard]] absl::Status ScanFailure(const char* context, int error_number);

// Opens /proc/self/pagemap read-only (the fd PAGEMAP_SCAN runs on).
[[nodiscard]] absl::StatusOr<ScopedFd> OpenPagemap();

}  // namespace livemig::uffd_internal

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_FD_H_
