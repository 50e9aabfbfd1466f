// File: migration/internal/lent_memory.h
//
// Regions in memory the destination VMM lends (ProvidedMemory,
// destination_memory.h; RegionStoreOptions::provide): what the store checks
// of it before anything is created, and the StoredRegion it makes of it.
//
//   - CheckLentMemory: page-aligned, large enough, mapped as it says
//     (provided_mapping.h: readable and writable; with an fd, MAP_SHARED of
//     that fd's file at file_offset).
//   - CheckLentRangesApart: no two regions' memory overlaps (each page is
//     hashed as it lands; a later region landing over an earlier one would
//     go unnoticed).
//   - LentRegion: the region over that memory. With an fd, round 0 may land
//     through it (file_landing.h) unless it is on hugetlbfs; on tmpfs its
//     free space is checked now and its holes are claimed once round 0
//     landed (RegionStore::ClaimDeferredSpace), as for the store's own
//     files (space_claim.h), so a later page written through the mapping
//     never meets a full filesystem as SIGBUS.
//
// Errors name the region ("region 2: the VMM's memory ..."): InvalidArgument
// for memory that does not fit or overlaps, ResourceExhausted for a tmpfs
// without room, PosixError's otherwise.
//
// Thread safety: pure functions of their arguments and the process's
// mappings.
#ifndef LIVEMIG_MIGRATION_INTERNAL_LENT_MEMORY_H_
#define LIVEMIG_MIGRATION_INTERNAL_LENT_MEMORY_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/destination_memory.h"
#include "migration/region_store.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

[[nodiscard]] absl::Status CheckLentMemory(const ProvidedMemory& lent,
                                           const proto::RegionInfo& info);

// `provided[i]` for region i of `table` (null addr: not lent).
[[nodiscard]] absl::Status CheckLentRangesApart(const std::vector<ProvidedMemory>& provided,
                                                const proto::RegionTable& table);

// REQUIRES: CheckLentMemory(lent, info) passed.
[[nodiscard]] absl::StatusOr<StoredRegion> LentRegion(const proto::RegionInfo& info,
                                                      const ProvidedMemory& lent);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_LENT_MEMORY_H_
