#include "migration/internal/channel_totals.h"

#include "gtest/gtest.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {
namespace {

constexpr uint64_t kPage = kMigrationPageSize;

TEST(ChannelTotals, ReadTotalsTakesEveryCounterAndTheBytesWritten) {
  ChannelCounters c;
  c.raw_pages = 10;
  c.zero_pages = 5;
  c.compressed_batches = 3;
  c.incompressible_batches = 2;
  c.skipped_batches = 1;
  c.compress_bytes_in = 4000;
  c.compress_bytes_out = 1000;
  c.compress_ns = 7;
  const ChannelTotals t = ReadTotals(c, 123);
  EXPECT_EQ(t.bytes, 123u);
  EXPECT_EQ(t.raw_pages, 10u);
  EXPECT_EQ(t.zero_pages, 5u);
  EXPECT_EQ(t.pages(), 15u);
  EXPECT_EQ(t.compressed_batches, 3u);
  EXPECT_EQ(t.incompressible_batches, 2u);
  EXPECT_EQ(t.skipped_batches, 1u);
  EXPECT_EQ(t.packed_in, 4000u);
  EXPECT_EQ(t.packed_out, 1000u);
  EXPECT_EQ(t.compress_ns, 7u);
}

TEST(ChannelTotals, ARoundIsTheDifferenceOfItsEndAndItsStart) {
  ChannelCounters c;
  c.raw_pages = 10;
  c.zero_pages = 1;
  c.compress_bytes_in = 100;
  const ChannelTotals before = ReadTotals(c, 1000);
  c.raw_pages += 4;
  c.zero_pages += 6;
  c.compress_bytes_in += 50;
  c.compress_bytes_out += 20;
  const ChannelTotals round = ReadTotals(c, 1700) - before;
  EXPECT_EQ(round.bytes, 700u);
  EXPECT_EQ(round.raw_pages, 4u);
  EXPECT_EQ(round.zero_pages, 6u);
  EXPECT_EQ(round.packed_in, 50u);
  EXPECT_EQ(round.packed_out, 20u);
  EXPECT_EQ(round.compressed_batches, 0u);
}

TEST(ChannelTotals, PendingPagesCostTheirPageBytesWithoutCompression) {
  ChannelTotals round;
  round.raw_pages = 100;
  round.packed_in = 100 * kPage;  // Ignored: not compressing.
  round.packed_out = kPage;
  EXPECT_EQ(PendingWireBytes(8, round, /*compressing=*/false), 8 * kPage);
}

TEST(ChannelTotals, CompressedPendingPagesCostWhatTheRoundsPagesCostOnTheWire) {
  // 100 pages went out: 60 of them compressed 4:1, 40 raw, so the wire
  // carried (40 + 15) / 100 of the page bytes.
  ChannelTotals round;
  round.raw_pages = 100;
  round.packed_in = 60 * kPage;
  round.packed_out = 15 * kPage;
  EXPECT_EQ(PendingWireBytes(20, round, /*compressing=*/true), 11 * kPage);
}

TEST(ChannelTotals, ARoundWithoutPageBytesLeavesThePendingBytesUnscaled) {
  ChannelTotals round;
  round.zero_pages = 50;  // Zero runs only: no share to learn from.
  EXPECT_EQ(PendingWireBytes(3, round, /*compressing=*/true), 3 * kPage);
}

TEST(ChannelTotals, TheWireShareNeverExceedsThePageBytes) {
  // A codec's frames larger than their input (counted, though such batches
  // go raw) cannot make pending pages cost more than sending them raw.
  ChannelTotals round;
  round.raw_pages = 10;
  round.packed_in = 10 * kPage;
  round.packed_out = 20 * kPage;
  EXPECT_EQ(PendingWireBytes(4, round, /*compressing=*/true), 4 * kPage);
}

TEST(ChannelTotals, RecordTotalsFillsTheMigrationWideFields) {
  ChannelTotals t;
  t.bytes = 9000;
  t.raw_pages = 2;
  t.zero_pages = 3;
  t.compressed_batches = 4;
  t.incompressible_batches = 5;
  t.skipped_batches = 6;
  t.packed_in = 8192;
  t.packed_out = 1024;
  t.compress_ns = 2'500'000;
  wire::CompressionSpec spec;
  spec.codec = wire::Codec::kZstd;
  spec.level = 3;
  MigrationStats stats;
  RecordTotals(t, spec, &stats);
  EXPECT_EQ(stats.transferred, 9000u);
  EXPECT_EQ(stats.normal, 2u);
  EXPECT_EQ(stats.normal_bytes, 2 * kPage);
  EXPECT_EQ(stats.duplicate, 3u);
  EXPECT_EQ(stats.compression.codec, "zstd");
  EXPECT_EQ(stats.compression.level, 3);
  EXPECT_EQ(stats.compression.compressed_batches, 4u);
  EXPECT_EQ(stats.compression.incompressible_batches, 5u);
  EXPECT_EQ(stats.compression.skipped_batches, 6u);
  EXPECT_EQ(stats.compression.bytes_in, 8192u);
  EXPECT_EQ(stats.compression.bytes_out, 1024u);
  EXPECT_DOUBLE_EQ(stats.compression.busy_ms, 2.5);
  EXPECT_DOUBLE_EQ(stats.compression.ratio(), 8.0);
}

}  // namespace
}  // namespace livemig::migration_internal
