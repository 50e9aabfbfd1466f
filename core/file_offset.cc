#include "core/file_offset.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig {

void ScopedFd::Reset() {
  if (fd_ >= 0) {
    // close(2) releases the descriptor even when it reports EINTR on Linux;
    // retrying could close a descriptor another thread just opened.
    ::close(fd_);
    fd_ = -1;
  }
}

FileOffset::FileOffset(ScopedFd fd, uint64_t start)
    : file_(std::make_shared<const ScopedFd>(std::move(fd))), start_(start) {}

absl::StatusOr<FileOffset> FileOffset::Open(const std::string& path,
                                            uint64_t start, int extra_flags,
                                            int mode) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | extra_flags, mode);
  if (fd < 0) return PosixError(absl::StrCat("open ", path), errno);
  return FileOffset(ScopedFd(fd), start);
}

absl::StatusOr<FileOffset> FileOffset::Dup(int fd, uint64_t start) {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return PosixError(absl::StrCat("dup of fd ", fd), errno);
  return FileOffset(ScopedFd(copy), start);
}

absl::StatusOr<struct stat> FileOffset::Stat() const {
  struct stat st;
  if (::fstat(fd(), &st) != 0) {
    return PosixError(absl::StrCat("fstat of fd ", fd()), errno);
  }
  return st;
}

}  // namespace livemig
