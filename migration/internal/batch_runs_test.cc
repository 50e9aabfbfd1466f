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

// A frame for `batch` as a source sends it: hashed pages, one hash each.
wire::FrameHeader HashedFrame(proto::PageBatch& batch, uint64_t pages, uint64_t payload) {
  for (uint64_t i = 0; i < pages; ++i) batch.add_page_hashes(i + 2);
  wire::FrameHeader header;
  header.type = wire::FrameType::kPageBatch;
  header.flags = wire::kFramePagesHashed;
  header.payload_len = payload;
  return header;
}

TEST(BatchFrameTest, ARawBatchCarriesItsPagesBytesAndAHashPerPage) {
  proto::PageBatch batch = Batch(0, {{0, 3}});
  batch.set_encoding(proto::ENCODING_RAW);
  wire::FrameHeader header = HashedFrame(batch, 3, 3 * kMigrationPageSize);
  EXPECT_OK(CheckBatchFrame(batch, header, 3, 0));
  header.payload_len = 2 * kMigrationPageSize;
  EXPECT_THAT(CheckBatchFrame(batch, header, 3, 0),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "PAGE_BATCH of 3 pages carries 8192 payload bytes"));
}

TEST(BatchFrameTest, PageBatchesWithoutAHashPerPageOrTheFlagAreRefused) {
  for (const proto::Encoding encoding :
       {proto::ENCODING_RAW, proto::ENCODING_ZSTD, proto::ENCODING_LZ4}) {
    SCOPED_TRACE(proto::Encoding_Name(encoding));
    proto::PageBatch batch = Batch(0, {{0, 2}});
    batch.set_encoding(encoding);
    const uint64_t payload = encoding == proto::ENCODING_RAW ? 2 * kMigrationPageSize : 100;
    wire::FrameHeader header = HashedFrame(batch, 2, payload);
    EXPECT_OK(CheckBatchFrame(batch, header, 2, 0));
    const std::string name =
        encoding == proto::ENCODING_RAW ? "RAW" : proto::Encoding_Name(encoding);
    header.flags = 0;
    EXPECT_THAT(CheckBatchFrame(batch, header, 2, 0),
                StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                    name + " PAGE_BATCH of 2 pages carries 2 page hashes and "
                                           "no PAGES_HASHED flag"));
    header.flags = wire::kFramePagesHashed;
    batch.add_page_hashes(9);
    EXPECT_THAT(CheckBatchFrame(batch, header, 2, 0),
                StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                    name + " PAGE_BATCH of 2 pages carries 3 page hashes"));
  }
}

TEST(BatchFrameTest, ZeroBatchesNeedTheFeatureAndCarryNoPayload) {
  proto::PageBatch batch = Batch(0, {{4, 8}});
  batch.set_encoding(proto::ENCODING_ZERO);
  wire::FrameHeader header;
  header.type = wire::FrameType::kPageBatch;
  EXPECT_OK(CheckBatchFrame(batch, header, 8, proto::FEATURE_ZERO_PAGES));
  EXPECT_THAT(CheckBatchFrame(batch, header, 8, 0),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "ZERO PAGE_BATCH, but the source did not offer "
                                  "FEATURE_ZERO_PAGES"));
  header.payload_len = 1;
  EXPECT_THAT(CheckBatchFrame(batch, header, 8, proto::FEATURE_ZERO_PAGES),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "ZERO PAGE_BATCH carries a payload"));
}

TEST(BatchFrameTest, AnUnknownEncodingIsRefused) {
  proto::PageBatch batch = Batch(0, {{0, 1}});
  batch.set_encoding(static_cast<proto::Encoding>(77));
  EXPECT_THAT(CheckBatchFrame(batch, HashedFrame(batch, 1, kMigrationPageSize), 1,
                              proto::FEATURE_ZERO_PAGES),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "PAGE_BATCH encoding 77"));
}

}  // namespace
}  // namespace livemig::migration_internal
