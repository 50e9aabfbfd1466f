// File: migration/verification.h
//
// End-to-end verification of a migration from both sides' page hashes
// (migration/page_hashes.h): the digests the source puts in Completion, the
// destination's comparison, and how a mismatch is narrowed to pages.
//
//   source:       AddDigests(sent_hashes, &completion);
//   destination:  LIVEMIG_ASSIGN_OR_RETURN(auto differ,
//                                          CompareDigests(completion, landed));
//                 if `differ` is not empty: send QueryFor(differ[0]), read
//                 the source's PageHashList, and fail with
//                 ExplainMismatch(differ, list, ...), naming the pages.
//
// The comparison costs O(chunks touched since the last refresh + regions'
// chunk counts) — at most a few microseconds per GiB — not O(memory).
//
// Thread safety: pure functions over their arguments; the PageHashes they
// refresh must not be written meanwhile.
#ifndef LIVEMIG_MIGRATION_VERIFICATION_H_
#define LIVEMIG_MIGRATION_VERIFICATION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/page_hashes.h"
#include "proto/migration.pb.h"

namespace livemig {

// Source: refreshes every region's chunk digests and adds one RegionDigest
// per region (in region order) to `completion`.
void AddDigests(std::vector<PageHashes>& sent, proto::Completion* completion);

// Source: InvalidArgument when the digests of `sent` (`total_bytes` of guest
// memory) would not fit one Completion message (8 bytes per chunk and about
// 32 per region, against wire::kMaxMessageSize): "... use verify=off".
[[nodiscard]] absl::Status CheckDigestsFit(const std::vector<PageHashes>& sent,
                                           uint64_t total_bytes);

// One chunk of a region whose digests differ: the pages to ask about.
struct ChunkMismatch {
  uint32_t region = 0;
  uint64_t first_page = 0;
  uint64_t count = 0;
  uint64_t source_digest = 0;  // The chunk's digest in the source's Completion.
};

// Destination: refreshes `landed` and compares it with the source's digests.
// DataLoss when the digests do not name every region exactly once, or a page
// or chunk count differs from the table's. Otherwise the first differing
// chunk of every region whose root differs, in region order (empty: every
// page the destination holds is the version the source sent last).
[[nodiscard]] absl::StatusOr<std::vector<ChunkMismatch>> CompareDigests(
    const proto::Completion& completion, std::vector<PageHashes>& landed);

inline proto::PageHashQuery QueryFor(const ChunkMismatch& m) {
  proto::PageHashQuery q;
  q.set_region_index(m.region);
  q.set_first_page(m.first_page);
  q.set_count(m.count);
  return q;
}

// Source: the hashes a PageHashQuery asks for. DataLoss when it names a
// region or range outside `sent`, or more than kHashChunkPages pages.
[[nodiscard]] absl::StatusOr<proto::PageHashList> AnswerPageHashQuery(
    const proto::PageHashQuery& query, const std::vector<PageHashes>& sent);

// Destination: DataLoss unless `list` answers `query` (same region, first
// page and count).
[[nodiscard]] absl::Status CheckPageHashList(const proto::PageHashQuery& query,
                                             const proto::PageHashList& list);

// Destination: DataLoss unless the hashes of `list`, the answer to
// QueryFor(mismatch) (a whole chunk), make the digest the source's
// Completion gave that chunk: else its pages are not the ones the digest
// was made of, and naming them would repeat the source's word only.
[[nodiscard]] absl::Status CheckPageHashListDigest(const ChunkMismatch& mismatch,
                                                   const proto::PageHashList& list);

// The DataLoss a mismatch fails the migration with: names the region, its
// guest range, the differing pages (page index and guest address, the first
// kMismatchPagesNamed, then how many more), and how many regions differ.
inline constexpr size_t kMismatchPagesNamed = 8;
absl::Status MismatchError(const ChunkMismatch& mismatch,
                           const proto::RegionInfo& region,
                           const std::vector<uint64_t>& pages,
                           size_t regions_differing);

// Destination: the error a mismatch fails the migration with, once the
// source answered QueryFor(differ[0]) with `list`: the DataLoss of a list
// that does not answer it (CheckPageHashList, CheckPageHashListDigest), or
// MismatchError naming the pages of `landed` (the first differing region's
// hashes, `region` its table entry) that differ from the list.
absl::Status ExplainMismatch(const std::vector<ChunkMismatch>& differ,
                             const proto::PageHashList& list, const PageHashes& landed,
                             const proto::RegionInfo& region);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_VERIFICATION_H_
