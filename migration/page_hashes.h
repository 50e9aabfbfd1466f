// File: migration/page_hashes.h
//
// PageHashes: the hash of every page of one region, as one side of a
// migration last saw it, and the small digests both sides compare at the end
// (incremental end-to-end verification; proto RegionDigest).
//
//   source       records HashPage() of every page version it puts on the
//                wire (hashed in guest memory right before it is sent, or
//                from its copy when it compresses; the same hash the
//                PageBatch carries), ZeroPageHash() for zero pages;
//   destination  records HashPage() of every page as it landed in its
//                mapping (checked against the batch's hash; a page torn by
//                a write in flight must land again: protocol.h),
//                ZeroPageHash() for zero runs; a page that never arrived
//                keeps kNoPageHash.
//
// At completion each side calls RefreshChunks() and compares chunk_digests()
// (one XXH3-64 per kHashChunkPages pages over their hashes) and Root(). The
// work is proportional to the pages set since the last refresh, not to the
// region: only touched chunks are re-digested, so refreshing after every
// round leaves the final refresh the final round's pages. A digest mismatch
// is narrowed to pages by comparing the chunks' page hashes (Get()).
//
// What this proves: the destination holds exactly the page versions the
// source sent last, none missing, corrupted or misapplied. What it cannot:
// that the source's memory still equals what was sent — a write the dirty
// tracker missed is sent never again. migration/source_audit.h re-hashes
// the source memory for that.
//
// Thread safety: Set() may be called from any number of threads at once
// (relaxed atomic stores: each slot holds one hash, and concurrent Sets of
// the same page leave one of them — only a broken peer does that). Get(),
// RefreshChunks(), chunk_digests() and Root() see the Sets that happen
// before them; the caller provides that order (the sender's round end, the
// receiver's round barrier or joined readers). RefreshChunks() must not
// overlap Set() or itself.
#ifndef LIVEMIG_MIGRATION_PAGE_HASHES_H_
#define LIVEMIG_MIGRATION_PAGE_HASHES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace livemig {

// The page size page hashes are taken over (Hello.page_size).
inline constexpr size_t kHashedPageSize = 4096;
// Pages per chunk digest: 16 MiB of memory, 32 KiB of page hashes.
inline constexpr uint64_t kHashChunkPages = 4096;
// The hash of a page nobody recorded; HashPage() never returns it.
inline constexpr uint64_t kNoPageHash = 0;

// XXH3-64 (seed 0) of the kHashedPageSize bytes at `page`, 1 where that is 0.
// REQUIRES: the bytes are readable. Racy reads of guest memory are the
// caller's choice (see the callers).
uint64_t HashPage(const uint8_t* page);
// HashPage() of an all-zero page.
uint64_t ZeroPageHash();

// A chunk's digest: XXH3-64 of its pages' hashes as stored (little-endian),
// kNoPageHash for a page nobody recorded. What chunk_digests() holds.
uint64_t ChunkDigest(std::span<const uint64_t> page_hashes);

class PageHashes {
 public:
  // `pages` pages, each kNoPageHash; every chunk is stale.
  explicit PageHashes(uint64_t pages);
  PageHashes(PageHashes&&) noexcept = default;
  PageHashes& operator=(PageHashes&&) noexcept = default;

  uint64_t pages() const { return hashes_.size(); }
  uint64_t chunks() const { return chunk_digests_.size(); }

  // REQUIRES: page < pages().
  void Set(uint64_t page, uint64_t hash);
  uint64_t Get(uint64_t page) const;

  // Re-digests every chunk set since the last call; returns how many.
  uint64_t RefreshChunks();
  // As of the last RefreshChunks().
  std::span<const uint64_t> chunk_digests() const { return chunk_digests_; }
  uint64_t Root() const;

 private:
  std::vector<uint64_t> hashes_;  // Written through std::atomic_ref.
  std::vector<uint8_t> stale_;    // Per chunk; written through std::atomic_ref.
  std::vector<uint64_t> chunk_digests_;
};

// Up to `max` page indexes in [first, first + theirs.size()) where `ours`
// differs from `theirs` (theirs[i] is the other side's hash of page
// first + i), in increasing order. Pages past ours.pages() count as
// different.
std::vector<uint64_t> DifferingPages(const PageHashes& ours, uint64_t first,
                                     std::span<const uint64_t> theirs,
                                     size_t max);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_PAGE_HASHES_H_
