#include "migration/internal/provided_mapping.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig::migration_internal {
namespace {

// One line of /proc/self/maps.
struct Mapping {
  uintptr_t start = 0, end = 0;
  char perms[5] = {};
  uint64_t offset = 0;
  unsigned major = 0, minor = 0;
  uint64_t inode = 0;
};

bool ParseMapping(const std::string& line, Mapping* m) {
  return std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %4s %" SCNx64 " %x:%x %" SCNu64,
                     &m->start, &m->end, m->perms, &m->offset, &m->major, &m->minor,
                     &m->inode) == 7;
}

std::string Hex(uintptr_t v) { return absl::StrCat("0x", absl::Hex(v)); }

}  // namespace

absl::Status CheckProvidedMapping(const void* addr, size_t size, int fd, uint64_t file_offset,
                                  uint32_t region) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t hi = lo + size;
  auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("region ", region, ": the VMM's memory [",
                                                   Hex(lo), ", +", size, ") ", why));
  };
  struct stat file {};
  if (fd >= 0) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 && errno == EBADF) {
      return refuse(absl::StrCat("comes with fd ", fd, ", which is not open"));
    }
    if (flags < 0 || ::fstat(fd, &file) != 0) {
      return PosixError(absl::StrCat("region ", region, ": the VMM's memory fd ", fd), errno);
    }
    if ((flags & O_ACCMODE) == O_RDONLY) {
      return refuse(absl::StrCat("comes with fd ", fd, ", open read-only: round 0 writes it"));
    }
    if ((flags & O_APPEND) != 0) {
      return refuse(absl::StrCat("comes with fd ", fd,
                                 ", open O_APPEND: pwrite(2) would append every page"));
    }
  }
  std::ifstream maps("/proc/self/maps");
  if (!maps) {
    return absl::InternalError(
        absl::StrCat("region ", region, ": cannot read /proc/self/maps to check the VMM's memory"));
  }
  uintptr_t covered = lo;  // [lo, covered) is checked.
  std::string line;
  while (covered < hi && std::getline(maps, line)) {
    Mapping m;
    if (!ParseMapping(line, &m) || m.end <= covered) continue;
    if (m.start > covered) break;  // A gap: reported below.
    if (m.perms[0] != 'r' || m.perms[1] != 'w') {
      return refuse(absl::StrCat("is mapped ", m.perms, " at ", Hex(covered),
                                 ": not readable and writable"));
    }
    if (fd >= 0) {
      if (m.perms[3] != 's') {
        return refuse(absl::StrCat("is a private mapping at ", Hex(covered),
                                   ": what is written to its fd would not show there"));
      }
      if (m.major != major(file.st_dev) || m.minor != minor(file.st_dev) ||
          m.inode != file.st_ino) {
        return refuse(absl::StrCat("at ", Hex(covered), " maps another file (inode ", m.inode,
                                   ") than its fd ", fd, " (inode ", file.st_ino, ")"));
      }
      const uint64_t maps_at = m.offset + (covered - m.start);
      const uint64_t fd_says = file_offset + (covered - lo);
      if (maps_at != fd_says) {
        return refuse(absl::StrCat("at ", Hex(covered), " maps file offset ", maps_at,
                                   "; its file_offset puts that address at ", fd_says));
      }
    }
    covered = m.end;
  }
  if (covered < hi) return refuse(absl::StrCat("is not mapped at ", Hex(covered)));
  return absl::OkStatus();
}

}  // namespace livemig::migration_internal
