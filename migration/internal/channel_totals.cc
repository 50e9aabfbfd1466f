#include "migration/internal/channel_totals.h"

#include <algorithm>
#include <atomic>

#include "migration/protocol.h"

namespace livemig::migration_internal {

ChannelTotals ReadTotals(const ChannelCounters& counters, uint64_t bytes_written) {
  // Relaxed: each is a count on its own (see the header for what orders a
  // round's additions before the read that ends it).
  constexpr auto kRelaxed = std::memory_order_relaxed;
  ChannelTotals t;
  t.bytes = bytes_written;
  t.raw_pages = counters.raw_pages.load(kRelaxed);
  t.zero_pages = counters.zero_pages.load(kRelaxed);
  t.compressed_batches = counters.compressed_batches.load(kRelaxed);
  t.incompressible_batches = counters.incompressible_batches.load(kRelaxed);
  t.skipped_batches = counters.skipped_batches.load(kRelaxed);
  t.packed_in = counters.compress_bytes_in.load(kRelaxed);
  t.packed_out = counters.compress_bytes_out.load(kRelaxed);
  t.compress_ns = counters.compress_ns.load(kRelaxed);
  return t;
}

ChannelTotals operator-(const ChannelTotals& later, const ChannelTotals& earlier) {
  ChannelTotals d;
  d.bytes = later.bytes - earlier.bytes;
  d.raw_pages = later.raw_pages - earlier.raw_pages;
  d.zero_pages = later.zero_pages - earlier.zero_pages;
  d.compressed_batches = later.compressed_batches - earlier.compressed_batches;
  d.incompressible_batches = later.incompressible_batches - earlier.incompressible_batches;
  d.skipped_batches = later.skipped_batches - earlier.skipped_batches;
  d.packed_in = later.packed_in - earlier.packed_in;
  d.packed_out = later.packed_out - earlier.packed_out;
  d.compress_ns = later.compress_ns - earlier.compress_ns;
  return d;
}

uint64_t PendingWireBytes(uint64_t pending_pages, const ChannelTotals& round, bool compressing) {
  const uint64_t pending = pending_pages * kMigrationPageSize;
  if (!compressing || round.raw_pages == 0) return pending;
  const double page_bytes = static_cast<double>(round.raw_pages * kMigrationPageSize);
  const double wire_share = std::clamp(
      (page_bytes - static_cast<double>(round.packed_in) + static_cast<double>(round.packed_out)) /
          page_bytes,
      0.0, 1.0);
  return static_cast<uint64_t>(static_cast<double>(pending) * wire_share);
}

void RecordTotals(const ChannelTotals& totals, const wire::CompressionSpec& compression,
                  MigrationStats* stats) {
  stats->transferred = totals.bytes;
  stats->normal = totals.raw_pages;
  stats->normal_bytes = totals.raw_pages * kMigrationPageSize;
  stats->duplicate = totals.zero_pages;
  CompressionStats& z = stats->compression;
  z.codec = wire::CodecName(compression.codec);
  z.level = wire::EffectiveLevel(compression);
  z.compressed_batches = totals.compressed_batches;
  z.incompressible_batches = totals.incompressible_batches;
  z.skipped_batches = totals.skipped_batches;
  z.bytes_in = totals.packed_in;
  z.bytes_out = totals.packed_out;
  z.busy_ms = static_cast<double>(totals.compress_ns) / 1e6;
}

}  // namespace livemig::migration_internal
