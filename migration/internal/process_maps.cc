#include "migration/internal/process_maps.h"

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/status/status.h"

namespace livemig::migration_internal {

absl::StatusOr<std::vector<ProcessMapping>> MappingsOver(uintptr_t lo, uintptr_t hi) {
  std::ifstream maps("/proc/self/maps");
  if (!maps) return absl::InternalError("cannot read /proc/self/maps");
  std::vector<ProcessMapping> out;
  std::string line;
  while (std::getline(maps, line)) {
    ProcessMapping m;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %4s %" SCNx64 " %x:%x %" SCNu64,
                    &m.start, &m.end, m.perms, &m.offset, &m.major, &m.minor, &m.inode) != 7) {
      continue;
    }
    if (m.end <= lo) continue;
    if (m.start >= hi) break;  // The lines come in address order.
    m.read = m.perms[0] == 'r';
    m.write = m.perms[1] == 'w';
    m.shared = m.perms[3] == 's';
    out.push_back(m);
  }
  return out;
}

}  // namespace livemig::migration_internal
