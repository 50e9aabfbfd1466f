// File: migration/internal/channel_totals.h
//
// ChannelTotals: what the sender's channels have done so far, read from
// their counters (internal/send_channel.h ChannelCounters) and the bytes
// their connections wrote. Migration::Run() reads them when a round starts
// and when it ends; the difference is the round's line in MigrationStats and
// the sample the convergence decision reads (migration/convergence.h). The
// arithmetic of both lives here, tested without sockets.
//
//   const ChannelTotals before = ReadTotals(counters, BytesWritten());
//   ... the round ...
//   const ChannelTotals round = ReadTotals(counters, BytesWritten()) - before;
//   sample.pending_bytes = PendingWireBytes(dirty_pages, round, compressing);
//
// Thread safety: ReadTotals() may run while channels add to the counters;
// each field is then some value the counter had during the call. The
// sender reads a round's end after every channel's WaitIdle() returned,
// which orders the channels' additions of that round before it.
#ifndef LIVEMIG_MIGRATION_INTERNAL_CHANNEL_TOTALS_H_
#define LIVEMIG_MIGRATION_INTERNAL_CHANNEL_TOTALS_H_

#include <cstdint>

#include "migration/internal/send_channel.h"
#include "migration/stats.h"
#include "migration/wire/compression.h"

namespace livemig::migration_internal {

struct ChannelTotals {
  uint64_t bytes = 0;       // Written on every channel's connection.
  uint64_t raw_pages = 0;   // Sent as page bytes (raw or compressed).
  uint64_t zero_pages = 0;  // Sent as zero runs.
  uint64_t compressed_batches = 0;
  uint64_t incompressible_batches = 0;
  uint64_t skipped_batches = 0;
  uint64_t packed_in = 0;   // Page bytes of the batches sent compressed.
  uint64_t packed_out = 0;  // Their compressed size.
  uint64_t compress_ns = 0;

  uint64_t pages() const { return raw_pages + zero_pages; }
};

// Now. `bytes_written`: the sum of the channels' Connection::bytes_written().
ChannelTotals ReadTotals(const ChannelCounters& counters, uint64_t bytes_written);

// Field by field. REQUIRES: `later` was read after `earlier` (counters only grow).
ChannelTotals operator-(const ChannelTotals& later, const ChannelTotals& earlier);

// What `pending_pages` dirty pages will cost on the link, comparable with a
// bandwidth that counts wire bytes: their page bytes, and with `compressing`
// scaled by the share of the round's page bytes that reached the wire (the
// compressed batches' packed_out for their packed_in, the rest raw). A round
// that sent no page bytes gives no share: the page bytes, unscaled.
uint64_t PendingWireBytes(uint64_t pending_pages, const ChannelTotals& round, bool compressing);

// The whole-migration fields of `stats` the channels decide: transferred,
// normal, normal_bytes, duplicate, and the compression block (codec and
// level from `compression`).
void RecordTotals(const ChannelTotals& totals, const wire::CompressionSpec& compression,
                  MigrationStats* stats);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_CHANNEL_TOTALS_H_
