#include "migration/internal/space_claim.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <map>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig::migration_internal {
namespace {

constexpr uint64_t kUnknown = ~uint64_t{0};

// A tmpfs mounted without a size limit (the kernel's own, behind every
// memfd) reports 0 blocks in all: no limit, not no room. kUnknown too when
// it cannot be asked.
uint64_t FreeBytes(int fd) {
  struct statvfs fs;
  if (::fstatvfs(fd, &fs) != 0) return kUnknown;
  if (fs.f_blocks == 0) return kUnknown;
  return uint64_t{fs.f_bavail} * fs.f_frsize;
}

absl::Status NoSpace(uint64_t free, uint64_t size, int region, const std::string& path,
                     const char* why) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "region ", region, ": \"", path, "\" needs ", size, " bytes; its filesystem has ",
      free == kUnknown ? std::string("too few") : absl::StrCat(free), " free (", why, ")"));
}

// fallocate of [offset, offset + length), for a file of `size` bytes.
// `free` is what the filesystem had before any of it (a failed fallocate
// may keep what it got).
absl::Status Allocate(int fd, uint64_t offset, uint64_t length, uint64_t size, int region,
                      const std::string& path, uint64_t free) {
  if (length == 0 ||
      ::fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) {
    return absl::OkStatus();
  }
  const int error = errno;
  if (error == ENOSPC || error == EDQUOT) {
    return NoSpace(free, size, region, path, std::strerror(error));
  }
  if (error == EOPNOTSUPP) {
    // Nothing to claim ahead with: at least the free space must be there,
    // else a later page written through the mapping would be SIGBUS.
    if (free != kUnknown && free < size) {
      return NoSpace(free, size, region, path, "no fallocate here; checked with statvfs");
    }
    return absl::OkStatus();
  }
  return PosixError(absl::StrCat("region ", region, ": fallocate \"", path, "\" bytes [",
                                 offset, ", ", offset + length, ")"),
                    error);
}

}  // namespace

absl::StatusOr<SpaceClaim> ClaimSpace(int fd, const std::vector<ByteRange>& ranges, int region,
                                      const std::string& path) {
  struct statfs fs;
  if (::fstatfs(fd, &fs) != 0) {
    return PosixError(absl::StrCat("region ", region, ": fstatfs \"", path, "\""), errno);
  }
  uint64_t size = 0;
  for (const ByteRange& r : ranges) size += r.length;
  const uint64_t free = FreeBytes(fd);
  SpaceClaim claim;
  if (fs.f_type == TMPFS_MAGIC) {
    if (free < size) return NoSpace(free, size, region, path, "checked with statvfs");
    claim.deferred = true;
    return claim;
  }
  // Elsewhere fallocate decides (root may use blocks statvfs does not
  // count as available).
  claim.writable = fs.f_type != HUGETLBFS_MAGIC;
  for (const ByteRange& r : ranges) {
    if (absl::Status s = Allocate(fd, r.offset, r.length, size, region, path, free); !s.ok()) {
      return s;
    }
  }
  return claim;
}

absl::StatusOr<SpaceClaim> ClaimSpace(int fd, uint64_t size, int region,
                                      const std::string& path) {
  return ClaimSpace(fd, std::vector<ByteRange>{{0, size}}, region, path);
}

absl::Status CheckDeferredFit(const std::vector<DeferredFile>& files) {
  struct Device {
    uint64_t total = 0;
    const DeferredFile* first = nullptr;
  };
  std::map<dev_t, Device> devices;
  for (const DeferredFile& f : files) {
    struct stat st;
    if (::fstat(f.fd, &st) != 0) {
      return PosixError(absl::StrCat("region ", f.region, ": fstat \"", f.path, "\""), errno);
    }
    Device& d = devices[st.st_dev];
    d.total += f.size;
    if (d.first == nullptr) d.first = &f;
  }
  for (const auto& [device, d] : devices) {
    if (FreeBytes(d.first->fd) < d.total) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "region ", d.first->region, ": \"", d.first->path, "\" and the other files on its "
          "filesystem need ", d.total, " bytes together; it has ", FreeBytes(d.first->fd),
          " free (checked with statvfs)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ClaimRange(int fd, uint64_t offset, uint64_t length, int region,
                        const std::string& path) {
  return Allocate(fd, offset, length, length, region, path, FreeBytes(fd));
}

absl::Status ClaimHoles(int fd, uint64_t size, int region, const std::string& path,
                        uint64_t start) {
  const uint64_t end_of_range = start + size;
  const uint64_t free = FreeBytes(fd);  // Before any hole is claimed.
  off_t at = static_cast<off_t>(start);
  while (static_cast<uint64_t>(at) < end_of_range) {
    const off_t hole = ::lseek(fd, at, SEEK_HOLE);
    if (hole < 0) {
      if (errno == ENXIO) return absl::OkStatus();  // No hole past `at`.
      return PosixError(absl::StrCat("region ", region, ": SEEK_HOLE in \"", path, "\""),
                        errno);
    }
    if (static_cast<uint64_t>(hole) >= end_of_range) return absl::OkStatus();
    off_t data = ::lseek(fd, hole, SEEK_DATA);
    if (data < 0 && errno != ENXIO) {
      return PosixError(absl::StrCat("region ", region, ": SEEK_DATA in \"", path, "\""),
                        errno);
    }
    const uint64_t end = data < 0 ? end_of_range
                                  : std::min<uint64_t>(static_cast<uint64_t>(data), end_of_range);
    if (absl::Status s = Allocate(fd, static_cast<uint64_t>(hole),
                                  end - static_cast<uint64_t>(hole), size, region, path,
                                  free);
        !s.ok()) {
      return s;
    }
    at = static_cast<off_t>(end);
  }
  return absl::OkStatus();
}

}  // namespace livemig::migration_internal
