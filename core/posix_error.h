// File: core/posix_error.h
//
// The one place where an errno value becomes an absl::Status. Every system call
// failure in livemig goes through PosixError so messages read the same way:
// "<context>: <strerror(errno)>" with a canonical code chosen from the errno.
#ifndef LIVEMIG_CORE_POSIX_ERROR_H_
#define LIVEMIG_CORE_POSIX_ERROR_H_

#include <string_view>

#include "absl/status/status.h"

namespace livemig {

// Returns a non-OK status describing `error_number` (an errno value) with
// `context` (what was being done, e.g. "mmap of 4096 bytes") in front.
// ENOENT -> NotFound, EACCES/EPERM -> PermissionDenied, EINVAL -> InvalidArgument,
// ENOMEM/ENOSPC/EMFILE/ENFILE -> ResourceExhausted, EEXIST/EADDRINUSE -> AlreadyExists,
// connection errors -> Unavailable, ETIMEDOUT -> DeadlineExceeded, else Internal.
[[nodiscard]] absl::Status PosixError(std::string_view context,
                                      int error_number);

}  // namespace livemig

#endif  // LIVEMIG_CORE_POSIX_ERROR_H_
