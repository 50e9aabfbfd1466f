#include "migration/internal/provided_mapping.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"
#include "migration/internal/process_maps.h"

namespace livemig::migration_internal {
namespace {

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
  absl::StatusOr<std::vector<ProcessMapping>> mappings = MappingsOver(lo, hi);
  if (!mappings.ok()) {
    return absl::InternalError(absl::StrCat("region ", region, ": checking the VMM's memory: ",
                                            mappings.status().message()));
  }
  uintptr_t covered = lo;  // [lo, covered) is checked.
  for (const ProcessMapping& m : *mappings) {
    if (m.start > covered) break;  // A gap: reported below.
    if (!m.read || !m.write) {
      return refuse(absl::StrCat("is mapped ", m.perms, " at ", Hex(covered),
                                 ": not readable and writable"));
    }
    if (fd >= 0) {
      if (!m.shared) {
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
    if (covered >= hi) break;
  }
  if (covered < hi) return refuse(absl::StrCat("is not mapped at ", Hex(covered)));
  return absl::OkStatus();
}

}  // namespace livemig::migration_internal
