// File: migration/internal/batch_runs.h
//
// Where a PAGE_BATCH's pages land on the destination: its runs, checked
// against the region they name, and the pieces of the region's mapping they
// fill, in the order the batch's payload (or its page hashes) carries them.
//
//   LIVEMIG_ASSIGN_OR_RETURN(BatchTarget target,
//                            TargetOf(batch, round, base, pages, guest_addr, claims));
//   ... read target.pages * kMigrationPageSize bytes into target.destination ...
//
// A batch is refused before any of its bytes land (proto PageBatch says what a
// source may send): OutOfRange for a run outside the region or of no pages;
// DataLoss for a batch of another round, a run that overlaps or precedes the
// one before it, and a page that arrived already in this round (RoundPages).
// The runs before a refused one stay claimed: the migration fails anyway.
// CheckBatchFrame() then checks what the frame carries for those pages
// (DataLoss), also before any byte is read.
//
// Thread safety: as RoundPages::Claim() (any channel reader, concurrently).
#ifndef LIVEMIG_MIGRATION_INTERNAL_BATCH_RUNS_H_
#define LIVEMIG_MIGRATION_INTERNAL_BATCH_RUNS_H_

#include <sys/uio.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/internal/round_pages.h"
#include "migration/wire/frame_codec.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

struct BatchTarget {
  std::vector<iovec> destination;  // One per run, into the region's mapping.
  uint64_t pages = 0;              // Of all runs.
};

// The target of `batch`, which arrived in `round`, in the region it names:
// mapped at `base`, `region_pages` pages long, at guest address `guest_addr`
// (for messages). Claims every page of it in `claims`.
absl::StatusOr<BatchTarget> TargetOf(const proto::PageBatch& batch, uint32_t round,
                                     uint8_t* base, uint64_t region_pages,
                                     uint64_t guest_addr, RoundPages& claims);

// ZSTD or LZ4: pages whose payload must be decompressed (compressed_batch.h).
bool IsCompressedEncoding(proto::Encoding encoding);

// Whether the frame `header` of `batch`, whose runs hold `pages` pages, is
// one a source may send with the features in effect (proto::Feature bits):
//   RAW         payload_len == pages * kMigrationPageSize;
//   RAW, ZSTD,  kFramePagesHashed (the payload is not in frame_checksum) and
//   LZ4         one page hash per page (a compressed payload's size is the
//               decompressor's to check);
//   ZERO        FEATURE_ZERO_PAGES offered and no payload;
// and no other encoding. DataLoss naming what is wrong otherwise.
absl::Status CheckBatchFrame(const proto::PageBatch& batch, const wire::FrameHeader& header,
                             uint64_t pages, uint64_t features);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_BATCH_RUNS_H_
