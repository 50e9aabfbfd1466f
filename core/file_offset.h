// File: core/file_offset.h
//
// ScopedFd: owns one file descriptor and closes it exactly once.
// FileOffset: a shared, owned file plus the byte offset where a mapping of it
// starts (vm-memory's `FileOffset { file: Arc<File>, start }`). Copies share
// the same descriptor; it is closed when the last copy goes away.
//
// Thread safety: ScopedFd is move-only and not synchronized. FileOffset's
// const methods may be called concurrently; the descriptor itself is only
// used for fstat/mmap, which are thread-safe.
#ifndef LIVEMIG_CORE_FILE_OFFSET_H_
#define LIVEMIG_CORE_FILE_OFFSET_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace livemig {

class ScopedFd {
 public:
  ScopedFd() = default;
  // Takes ownership of `fd` (which may be -1 for "none").
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }

  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = other.Release();
    }
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the descriptor (if any).
  void Reset();

 private:
  int fd_ = -1;
};

class FileOffset {
 public:
  // Wraps an owned descriptor. REQUIRES: fd.valid().
  FileOffset(ScopedFd fd, uint64_t start);
  // Shares a descriptor already owned elsewhere.
  FileOffset(std::shared_ptr<const ScopedFd> file, uint64_t start)
      : file_(std::move(file)), start_(start) {}

  // Opens `path` (O_RDWR | O_CLOEXEC, plus `extra_flags` such as O_CREAT)
  // and wraps it. NotFound / PermissionDenied etc. name the path.
  [[nodiscard]] static absl::StatusOr<FileOffset> Open(const std::string& path,
                                                       uint64_t start,
                                                       int extra_flags = 0,
                                                       int mode = 0600);

  // Duplicates `fd` (F_DUPFD_CLOEXEC); the caller keeps its own descriptor.
  [[nodiscard]] static absl::StatusOr<FileOffset> Dup(int fd, uint64_t start);

  int fd() const { return file_->get(); }
  uint64_t start() const { return start_; }
  const std::shared_ptr<const ScopedFd>& file() const { return file_; }

  // fstat of the descriptor.
  [[nodiscard]] absl::StatusOr<struct stat> Stat() const;

 private:
  std::shared_ptr<const ScopedFd> file_;
  uint64_t start_;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_FILE_OFFSET_H_
