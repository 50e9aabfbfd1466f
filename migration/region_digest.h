// File: migration/region_digest.h
//
// The per-region digest the Completion frame carries (proto RegionDigest,
// FEATURE_XXH3_DIGEST). Up to kDigestChunk bytes it is XXH3-64 (seed 0) of
// the contents; above that it is a two-level digest, so that it can be
// computed by several threads while the VM is paused: XXH3-64 over the
// little-endian array of the XXH3-64 digests of each kDigestChunk-byte chunk
// (the last chunk may be shorter).
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

inline constexpr size_t kDigestChunk = size_t{64} << 20;  // 64 MiB

// The digest (see above) of the `len` bytes at `data`, using up to `threads`
// threads (0: one per CPU, at most 8) for inputs over kDigestChunk. `data`
// may be null when `len` is 0. REQUIRES: [data, data + len) is readable and
// not written while this runs.
[[nodiscard]] uint64_t DigestBytes(const uint8_t* data, size_t len,
                                   unsigned threads = 0);

// The digest of a whole region. REQUIRES: as for DigestBytes.
template <DirtyTracker B>
[[nodiscard]] uint64_t DigestRegion(const MmapRegion<B>& region) {
  return DigestBytes(region.as_ptr(), region.size());
}

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_REGION_DIGEST_H_
