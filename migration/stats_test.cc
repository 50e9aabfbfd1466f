#include "migration/stats.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::testing::HasSubstr;

TEST(MigrationStats, JsonUsesQemuQueryMigrateFieldNames) {
  MigrationStats stats;
  stats.status = "completed";
  stats.total_time_ms = 1500;
  stats.downtime_ms = 42.5;
  stats.transferred = 123;
  stats.total = 4096;
  stats.duplicate = 7;
  stats.normal = 3;
  stats.normal_bytes = 3 * 4096;
  stats.dirty_sync_count = 4;
  stats.cpu_throttle_percentage = 30;
  RoundStats round;
  round.round = 2;
  round.dirty_pages = 11;
  round.final = true;
  stats.round_stats.push_back(round);
  stats.downtime_breakdown.completion_ms = 9;
  stats.downtime_breakdown.verify_ms = 4;
  stats.downtime_breakdown.expected_ms = 12;
  stats.verify = "full";
  stats.audit.ran = true;
  stats.audit.ms = 25;
  stats.audit.bytes = uint64_t{1} << 31;
  stats.audit.untracked_pages = 2;
  stats.audit.first_addrs = {0x1000, 0x40002000};
  const std::string json = stats.ToJson();
  for (const char* field :
       {"\"status\":\"completed\"", "\"total-time\":1500.000", "\"downtime\":42.500",
        "\"setup-time\":", "\"expected-downtime\":", "\"transferred\":123",
        "\"remaining\":0", "\"total\":4096", "\"duplicate\":7", "\"normal\":3",
        "\"normal-bytes\":12288", "\"dirty-pages-rate\":", "\"mbps\":",
        "\"dirty-sync-count\":4", "\"pages-per-second\":",
        "\"cpu-throttle-percentage\":30", "\"completion-ms\":9.000",
        "{\"round\":2,\"dirty-pages\":11,", "\"final\":true}", "\"verify-ms\":4.000", "\"expected-ms\":12.000",
        "\"verify\":\"full\"",
        "\"audit\":{\"ran\":true,\"ms\":25.000,\"bytes\":2147483648,\"ms-per-gib\":12.500,"
        "\"untracked-pages\":2,\"first-addrs\":[\"0x1000\",\"0x40002000\"]}"}) {
    EXPECT_THAT(json, HasSubstr(field));
  }
  EXPECT_EQ(json.find('\n'), std::string::npos);  // One line.
}

TEST(MigrationStats, JsonCarriesCompressionSizesRatioAndBusyTime) {
  MigrationStats stats;
  stats.total_time_ms = 200;
  stats.compression.codec = "zstd";
  stats.compression.level = 3;
  stats.compression.compressed_batches = 5;
  stats.compression.incompressible_batches = 2;
  stats.compression.skipped_batches = 6;
  stats.compression.bytes_in = 5 * 4096 * 256;
  stats.compression.bytes_out = 5 * 4096 * 64;
  stats.compression.busy_ms = 50;
  EXPECT_DOUBLE_EQ(stats.compression.ratio(), 4.0);
  EXPECT_THAT(stats.ToJson(),
              HasSubstr("\"compression\":{\"codec\":\"zstd\",\"level\":3,\"pages\":1280,"
                        "\"compressed-batches\":5,\"incompressible-batches\":2,"
                        "\"skipped-batches\":6,\"bytes-in\":5242880,"
                        "\"compressed-size\":1310720,\"compression-rate\":4.000,"
                        "\"busy-ms\":50.000,\"busy-rate\":0.250}"));
  EXPECT_EQ(MigrationStats().compression.ratio(), 0);  // Nothing compressed.
}

}  // namespace
}  // namespace livemig
