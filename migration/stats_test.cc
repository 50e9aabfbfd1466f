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
  stats.round_stats.push_back(round);
  stats.downtime_breakdown.completion_ms = 9;
  const std::string json = stats.ToJson();
  for (const char* field :
       {"\"status\":\"completed\"", "\"total-time\":1500.000", "\"downtime\":42.500",
        "\"setup-time\":", "\"expected-downtime\":", "\"transferred\":123",
        "\"remaining\":0", "\"total\":4096", "\"duplicate\":7", "\"normal\":3",
        "\"normal-bytes\":12288", "\"dirty-pages-rate\":", "\"mbps\":",
        "\"dirty-sync-count\":4", "\"pages-per-second\":",
        "\"cpu-throttle-percentage\":30", "\"completion-ms\":9.000",
        "{\"round\":2,\"dirty-pages\":11,"}) {
    EXPECT_THAT(json, HasSubstr(field));
  }
  EXPECT_EQ(json.find('\n'), std::string::npos);  // One line.
}

}  // namespace
}  // namespace livemig
