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
