// File: migration/region_digest.h
//
// The per-region digest the Completion frame carries (proto RegionDigest,
// FEATURE_XXH3_DIGEST): XXH3-64 with seed 0 over a region's whole contents.
// The source digests each region after the final round (VM paused); the
// destination digests what it received and compares.
//
//   const uint64_t digest = DigestRegion(guest_memory.region(i).region());
//
// Contract: the caller guarantees that nothing writes the bytes while they are
// digested (the VM is paused, every receiver thread has stopped); a digest of
// memory being written is meaningless, not undefined in the C++ sense but
// useless, since guest memory is racy by design. Reads go through the raw
// pointer and are not tracked (a read never marks a tracker anyway).
//
// Thread safety: pure functions; any number of threads may digest the same or
// different memory at once.
#ifndef LIVEMIG_MIGRATION_REGION_DIGEST_H_
#define LIVEMIG_MIGRATION_REGION_DIGEST_H_

#include <cstddef>
#include <cstdint>

#include "core/dirty_tracker.h"
#include "core/mmap_region.h"

namespace livemig {

// XXH3_64bits (seed 0) of the `len` bytes at `data`. `data` may be null when
// `len` is 0 (the digest of the empty input). REQUIRES: [data, data + len) is
// readable and not written while this runs.
[[nodiscard]] uint64_t DigestBytes(const uint8_t* data, size_t len);

// The digest of a whole region. REQUIRES: as for DigestBytes.
template <DirtyTracker B>
[[nodiscard]] uint64_t DigestRegion(const MmapRegion<B>& region) {
  return DigestBytes(region.as_ptr(), region.size());
}

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_REGION_DIGEST_H_
