#include "migration/internal/torn_pages.h"

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

TEST(TornPagesTest, NothingTornIsResolved) {
  TornPages torn;
  torn.Landed(0, 0, 100, 3);
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 0u);
}

TEST(TornPagesTest, APageLandedWholeInALaterRoundIsNoLongerTorn) {
  TornPages torn;
  torn.Tore(1, 100, 0x40064000, 0, 0xaa, 0xbb);
  torn.Landed(1, 90, 20, 1);  // A run that covers it.
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 1u);
}

TEST(TornPagesTest, APageNotSentAgainIsDataLossNamingItsRegionPageRoundAndHashes) {
  TornPages torn;
  torn.Tore(1, 100, 0x40064000, 2, 0xaa, 0xbb);
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 1 page 100 (guest 0x40064000) of round 2 did not land "
                                  "as sent: hash 0xaa, the source sent 0xbb, and it was not "
                                  "sent again (1 page like it)"));
}

TEST(TornPagesTest, OnlyALaterRoundClearsATear) {
  TornPages torn;
  torn.Tore(0, 5, 0x5000, 1, 0xaa, 0xbb);
  torn.Landed(0, 5, 1, 1);  // The same page again in its own round.
  EXPECT_THAT(torn.Unresolved(), StatusIsWithMessage(absl::StatusCode::kDataLoss, "page 5"));
  torn.Landed(0, 5, 1, 0);  // An earlier round (never happens) neither.
  EXPECT_THAT(torn.Unresolved(), StatusIsWithMessage(absl::StatusCode::kDataLoss, "page 5"));
}

TEST(TornPagesTest, RunsClearOnlyTheirOwnRegionAndPages) {
  TornPages torn;
  torn.Tore(0, 9, 0x9000, 0, 1, 2);
  torn.Tore(0, 20, 0x14000, 0, 1, 2);
  torn.Tore(1, 10, 0x10a000, 0, 1, 2);
  torn.Landed(0, 10, 10, 1);  // Pages 10..19 of region 0: none of them.
  torn.Landed(1, 0, 10, 1);   // Pages 0..9 of region 1: not page 10.
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 0 page 9 (guest 0x9000) of round 0 did not land as "
                                  "sent: hash 0x1, the source sent 0x2, and it was not sent "
                                  "again (3 pages like it)"));
  torn.Landed(0, 9, 12, 1);  // Pages 9..20.
  EXPECT_THAT(torn.Unresolved(), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                     "region 1 page 10 (guest 0x10a000)"));
  torn.Landed(1, 10, 1, 2);
  EXPECT_OK(torn.Unresolved());
}

TEST(TornPagesTest, ATornPageThatTearsAgainIsNamedByItsLatestTear) {
  TornPages torn;
  torn.Tore(0, 3, 0x3000, 0, 0x1, 0x2);
  torn.Tore(0, 3, 0x3000, 1, 0x3, 0x4);
  EXPECT_THAT(
      torn.Unresolved(),
      StatusIsWithMessage(absl::StatusCode::kDataLoss,
                          "of round 1 did not land as sent: hash 0x3, the source sent 0x4"));
  torn.Landed(0, 3, 1, 1);  // Its latest tear's own round: still torn.
  EXPECT_FALSE(torn.Unresolved().ok());
  torn.Landed(0, 3, 1, 2);
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 2u);
}

}  // namespace
}  // namespace livemig::migration_internal
