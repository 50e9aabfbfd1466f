#include "migration/internal/round_pages.h"

#include <thread>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

TEST(RoundPagesTest, EachPageOnceARoundIsFineAcrossWordsAndRegions) {
  RoundPages pages({200, 3});
  EXPECT_OK(pages.Claim(0, 0, 1, 0, 0));
  EXPECT_OK(pages.Claim(0, 1, 127, 0, 0));   // Up to a word boundary.
  EXPECT_OK(pages.Claim(0, 128, 72, 0, 0));  // The last, partial word.
  EXPECT_OK(pages.Claim(1, 0, 3, 0, 0));     // Another region's page 0.
}

TEST(RoundPagesTest, APageArrivingTwiceInARoundIsDataLossNamingIt) {
  RoundPages pages({200});
  EXPECT_OK(pages.Claim(0, 60, 10, 4, 0x40000000));
  EXPECT_THAT(pages.Claim(0, 0, 200, 4, 0x40000000),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 0 page 60 (guest 0x4003c000) arrived twice in "
                                  "round 4: a source sends a page at most once a round"));
  EXPECT_THAT(pages.Claim(0, 69, 1, 4, 0),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "region 0 page 69 (guest 0x45000)"));
}

TEST(RoundPagesTest, TheNextRoundMayCarryEveryPageAgain) {
  RoundPages pages({130});
  EXPECT_OK(pages.Claim(0, 0, 130, 0, 0));
  pages.NextRound();
  EXPECT_OK(pages.Claim(0, 0, 130, 1, 0));
  EXPECT_THAT(pages.Claim(0, 129, 1, 1, 0),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "page 129"));
}

TEST(RoundPagesTest, OfTwoReadersClaimingOnePageConcurrentlyExactlyOneFails) {
  for (int trial = 0; trial < 200; ++trial) {
    RoundPages pages({64});
    absl::Status a, b;
    std::thread ta([&] { a = pages.Claim(0, 0, 64, 0, 0); });
    std::thread tb([&] { b = pages.Claim(0, 63, 1, 0, 0); });
    ta.join();
    tb.join();
    ASSERT_NE(a.ok(), b.ok()) << a << " / " << b;
  }
}

}  // namespace
}  // namespace livemig::migration_internal

namespace livemig::migration_internal {
namespace {

TEST(RoundPagesTest, ARoundWithEveryPageOfEveryRegionIsComplete) {
  RoundPages pages({70, 3});
  ASSERT_OK(pages.Claim(0, 0, 64, 0, 0));
  ASSERT_OK(pages.Claim(0, 64, 6, 0, 0));
  ASSERT_OK(pages.Claim(1, 0, 3, 0, 1 << 20));
  EXPECT_OK(pages.Complete(0, {0, 1 << 20}));
}

TEST(RoundPagesTest, ARoundMissingPagesNamesTheFirstAndCountsTheRest) {
  RoundPages pages({130, 3});
  ASSERT_OK(pages.Claim(0, 0, 130, 0, 0));
  ASSERT_OK(pages.Claim(1, 0, 1, 0, 1 << 20));  // Pages 1 and 2 never come.
  EXPECT_THAT(pages.Complete(0, {0, 1 << 20}),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "round 0 ended without region 1 page 1 (guest 0x101000) and 1 "
                                  "more of its 3 pages"));
  pages.NextRound();
  ASSERT_OK(pages.Claim(0, 0, 129, 1, 0));  // The last page of a partial word.
  ASSERT_OK(pages.Claim(1, 0, 3, 1, 1 << 20));
  EXPECT_THAT(pages.Complete(1, {0, 1 << 20}),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "without region 0 page 129 (guest 0x81000) of its 130 pages"));
}

}  // namespace
}  // namespace livemig::migration_internal
