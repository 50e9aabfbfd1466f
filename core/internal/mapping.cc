#include "core/internal/mapping.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig::core_internal {

size_t SystemPageSize() {
  static const size_t page_size = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page_size;
}

absl::StatusOr<Mapping> Mapping::Map(const std::optional<FileOffset>& file,
                                     size_t size, int prot, int flags) {
  if (size == 0) {
    return absl::InvalidArgumentError("mapping size must be greater than 0");
  }
  if (flags & MAP_FIXED) {
    return absl::InvalidArgumentError(
        "MAP_FIXED is refused: it would silently replace existing mappings");
  }
  int fd = -1;
  off_t offset = 0;
  std::optional<FileIdentity> identity;
  if (file.has_value()) {
    if (flags & MAP_ANONYMOUS) {
      return absl::InvalidArgumentError(
          "MAP_ANONYMOUS given together with a file offset");
    }
    const uint64_t start = file->start();
    if (size > std::numeric_limits<int64_t>::max() ||
        start > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) -
                    size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file offset ", start, " + size ", size, " overflows"));
    }
    if (start % SystemPageSize() != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file offset ", start, " is not a multiple of the page size ",
          SystemPageSize()));
    }
    absl::StatusOr<struct stat> st = file->Stat();
    if (!st.ok()) return st.status();
    if (S_ISREG(st->st_mode) &&
        static_cast<uint64_t>(st->st_size) < start + size) {
      return absl::OutOfRangeError(absl::StrCat(
          "file (fd ", file->fd(), ") is ", st->st_size,
          " bytes; mapping ", size, " bytes at offset ", start, " needs ",
          start + size));
    }
    identity = FileIdentity{st->st_dev, st->st_ino};
    fd = file->fd();
    offset = static_cast<off_t>(start);
  } else {
    flags |= MAP_ANONYMOUS;
  }
  void* addr = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (addr == MAP_FAILED) {
    return PosixError(absl::StrCat("mmap of ", size, " bytes (prot ", prot,
                                   ", flags ", flags, ", offset ", offset, ")"),
                      errno);
  }
  return Mapping(static_cast<uint8_t*>(addr), size, /*owned=*/true, identity);
}

absl::StatusOr<Mapping> Mapping::Wrap(void* addr, size_t size) {
  if (addr == nullptr) {
    return absl::InvalidArgumentError("raw mapping address is null");
  }
  if (reinterpret_cast<uintptr_t>(addr) % SystemPageSize() != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw mapping address ", absl::Hex(reinterpret_cast<uintptr_t>(addr)),
        " is not page-aligned"));
  }
  if (size == 0) {
    return absl::InvalidArgumentError("mapping size must be greater than 0");
  }
  return Mapping(static_cast<uint8_t*>(addr), size, /*owned=*/false,
                 std::nullopt);
}

Mapping::~Mapping() {
  if (owned_ && addr_ != nullptr) ::munmap(addr_, size_);
}

Mapping::Mapping(Mapping&& other) noexcept
    : addr_(std::exchange(other.addr_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owned_(std::exchange(other.owned_, false)),
      identity_(other.identity_) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    if (owned_ && addr_ != nullptr) ::munmap(addr_, size_);
    addr_ = std::exchange(other.addr_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owned_ = std::exchange(other.owned_, false);
    identity_ = other.identity_;
  }
  return *this;
}

}  // namespace livemig::core_internal
