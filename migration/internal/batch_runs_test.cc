#include "migration/internal/batch_runs.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

proto::PageBatch Batch(uint32_t round, std::vector<std::pair<uint64_t, uint64_t>> runs) {
  proto::PageBatch batch;
  batch.set_region_index(0);
  batch.set_round(round);
  for (auto [first, count] : runs) {
    proto::PageRun* run = batch.add_runs();
    run->set_first_page(first);
    run->set_count(count);
  }
  return batch;
}

TEST(BatchRunsTest, RunsBecomeTheirPiecesOfTheMappingInPayloadOrder) {
  std::vector<uint8_t> region(16 * kMigrationPageSize);
  RoundPages claims({16});
  ASSERT_OK_AND_ASSIGN(BatchTarget target,
                       TargetOf(Batch(2, {{1, 3}, {10, 6}}), 2, region.data(), 16, 0, claims));
  EXPECT_EQ(target.pages, 9u);
  ASSERT_EQ(target.destination.size(), 2u);
  EXPECT_EQ(target.destination[0].iov_base, region.data() + 1 * kMigrationPageSize);
  EXPECT_EQ(target.destination[0].iov_len, 3 * kMigrationPageSize);
  EXPECT_EQ(target.destination[1].iov_base, region.data() + 10 * kMigrationPageSize);
  EXPECT_EQ(target.destination[1].iov_len, 6 * kMigrationPageSize);
}

TEST(BatchRunsTest, ARunOutsideTheRegionOrOfNoPagesIsOutOfRange) {
  std::vector<uint8_t> region(16 * kMigrationPageSize);
  for (auto [first, count] : std::vector<std::pair<uint64_t, uint64_t>>{
           {16, 1}, {15, 2}, {3, 0}, {1, ~uint64_t{0}}}) {
    RoundPages claims({16});
    EXPECT_THAT(TargetOf(Batch(0, {{first, count}}), 0, region.data(), 16, 0, claims).status(),
                StatusIsWithMessage(absl::StatusCode::kOutOfRange,
                                    absl::StrCat("PAGE_BATCH run [", first, ", +", count,
                                                 ") is outside region 0 (16 pages)")));
  }
}

TEST(BatchRunsTest, RunsThatOverlapOrGoDownAreDataLoss) {
  std::vector<uint8_t> region(16 * kMigrationPageSize);
  RoundPages claims({16});
  EXPECT_THAT(TargetOf(Batch(0, {{4, 4}, {7, 1}}), 0, region.data(), 16, 0, claims).status(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "run [7, +1) overlaps or precedes the run before it (which "
                                  "ends at page 8)"));
  RoundPages fresh({16});
  EXPECT_THAT(TargetOf(Batch(0, {{9, 1}, {2, 1}}), 0, region.data(), 16, 0, fresh).status(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "run [2, +1) overlaps or precedes"));
}

TEST(BatchRunsTest, ABatchOfAnotherRoundIsDataLossAndClaimsNothing) {
  std::vector<uint8_t> region(16 * kMigrationPageSize);
  RoundPages claims({16});
  EXPECT_THAT(TargetOf(Batch(3, {{0, 16}}), 2, region.data(), 16, 0, claims).status(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "PAGE_BATCH of round 3 arrived in round 2"));
  EXPECT_OK(TargetOf(Batch(2, {{0, 16}}), 2, region.data(), 16, 0, claims).status());
}

TEST(BatchRunsTest, APageClaimedEarlierInTheRoundIsRefusedNamingItsGuestAddress) {
  std::vector<uint8_t> region(16 * kMigrationPageSize);
  RoundPages claims({16});
  ASSERT_OK(TargetOf(Batch(1, {{5, 1}}), 1, region.data(), 16, 0x100000, claims).status());
  EXPECT_THAT(TargetOf(Batch(1, {{0, 8}}), 1, region.data(), 16, 0x100000, claims).status(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 0 page 5 (guest 0x105000) arrived twice in round 1"));
}

}  // namespace
}  // namespace livemig::migration_internal
