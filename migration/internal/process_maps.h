// File: migration/internal/process_maps.h
//
// The lines of /proc/self/maps over an address range: what the kernel says
// is mapped there, with which permissions, shared or private, of which file
// at which offset. Used to check memory the engine is handed rather than
// trust what its caller declared (provided_mapping.h, known_zero.h).
//
// Thread safety: reads the process's mappings; REQUIRES nothing maps or
// unmaps the range meanwhile.
#ifndef LIVEMIG_MIGRATION_INTERNAL_PROCESS_MAPS_H_
#define LIVEMIG_MIGRATION_INTERNAL_PROCESS_MAPS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace livemig::migration_internal {

struct ProcessMapping {
  uintptr_t start = 0, end = 0;  // [start, end)
  bool read = false, write = false, shared = false;
  char perms[5] = {};  // As the kernel prints them ("rw-s").
  uint64_t offset = 0;  // In the file, of `start`.
  unsigned major = 0, minor = 0;
  uint64_t inode = 0;  // 0: anonymous.
};

// The mappings that intersect [lo, hi), in address order; gaps between them
// are not mapped. Internal if /proc/self/maps cannot be read.
[[nodiscard]] absl::StatusOr<std::vector<ProcessMapping>> MappingsOver(uintptr_t lo,
                                                                       uintptr_t hi);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_PROCESS_MAPS_H_
