// File: migration/internal/compressed_batch.h
//
// The receiver's landing of a compressed PageBatch (ENCODING_ZSTD or
// ENCODING_LZ4, protocol.h): the checks its frame must pass before a byte
// is read, then its payload read into the channel's decompressor and
// decompressed into the batch's destination in guest memory
// (migration/wire/compression.h). The page-hash check that follows is the
// RAW batch's, in receiver.cc.
//
// Thread safety: one call per channel thread at a time; `decompressor` is
// that channel's.
#ifndef LIVEMIG_MIGRATION_INTERNAL_COMPRESSED_BATCH_H_
#define LIVEMIG_MIGRATION_INTERNAL_COMPRESSED_BATCH_H_

#include <sys/uio.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "migration/transport/connection.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_io.h"
#include "migration/internal/batch_runs.h"  // IsCompressedEncoding
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

// Lands `batch` (parsed from `frame`, its `pages` pages' runs already
// checked against the region, `destination` their place in guest memory,
// run by run) whose encoding IsCompressedEncoding. DataLoss naming the
// region and round when: the encoding is not the codec the Hellos agreed on
// (`agreed`); pages x kMigrationPageSize exceeds kMaxDecompressedSize; the
// payload is empty or not smaller than the pages (a length that lies: then
// nothing is read); the stream is corrupt, or decompresses to more or fewer
// bytes than the pages (then the destination holds garbage, and the
// migration must fail). Connection errors pass through.
[[nodiscard]] absl::Status LandCompressedBatch(Connection& conn, wire::IncomingFrame& frame,
                                               const proto::PageBatch& batch, uint64_t pages,
                                               absl::Span<const iovec> destination,
                                               wire::Codec agreed,
                                               wire::BatchDecompressor& decompressor,
                                               absl::Duration timeout);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_COMPRESSED_BATCH_H_
