// File: migration/region_table.h
//
// The RegionTable a source sends (proto/migration.proto): one RegionInfo per
// region of its guest memory, in address order, with the backing the
// destination should rebuild — anonymous, or a file named relative to the
// destination's root directory.
//
//   LIVEMIG_ASSIGN_OR_RETURN(proto::RegionTable table,
//                            RegionTableFor(memory, options.file_names));
//
// Thread safety: a pure function of its arguments.
#ifndef LIVEMIG_MIGRATION_REGION_TABLE_H_
#define LIVEMIG_MIGRATION_REGION_TABLE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "proto/migration.pb.h"

namespace livemig {

// `file_names[i]` names file-backed region i (regions in address order, as
// GuestMemory keeps them); missing or empty: DefaultRegionFileName(i).
// InvalidArgument naming the region when its size is not a multiple of
// kMigrationPageSize.
[[nodiscard]] absl::StatusOr<proto::RegionTable> RegionTableFor(
    const GuestMemory<AtomicBitmap>& memory, const std::vector<std::string>& file_names);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_REGION_TABLE_H_
