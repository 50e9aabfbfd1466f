#include "migration/internal/torn_pages.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

// Region 0: 64 KiB at guest 0; region 1: 2 MiB at guest 0x40000000.
TornPages TwoRegions() { return TornPages({{16, 0}, {512, 0x40000000}}); }

TEST(TornPagesTest, NothingTornIsResolved) {
  TornPages torn = TwoRegions();
  torn.Landing(1, 0, 100);
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 0u);
}

TEST(TornPagesTest, APageLandedWholeInALaterRoundIsNoLongerTorn) {
  TornPages torn = TwoRegions();
  torn.Tore(1, 100, 0, 0xaa, 0xbb);
  torn.Landing(1, 90, 20);  // A later round's run that covers it.
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 1u);
}

TEST(TornPagesTest, APageNotSentAgainIsDataLossNamingItsRegionPageRoundAndHashes) {
  TornPages torn = TwoRegions();
  torn.Tore(1, 100, 2, 0xaa, 0xbb);
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 1 page 100 (guest 0x40064000) of round 2 did not land "
                                  "as sent: hash 0xaa, the source sent 0xbb, and it was not "
                                  "sent again (1 page like it)"));
}

// A run's old notes are cleared before its own pages are checked: a page
// that tears in the run that lands it stays torn.
TEST(TornPagesTest, ATearOfTheRunBeingLandedStays) {
  TornPages torn = TwoRegions();
  torn.Landing(0, 0, 16);
  torn.Tore(0, 5, 1, 0xaa, 0xbb);
  EXPECT_THAT(torn.Unresolved(), StatusIsWithMessage(absl::StatusCode::kDataLoss, "page 5"));
}

TEST(TornPagesTest, RunsClearOnlyTheirOwnRegionAndPages) {
  TornPages torn = TwoRegions();
  torn.Tore(0, 9, 0, 1, 2);
  torn.Tore(0, 15, 0, 1, 2);
  torn.Tore(1, 10, 0, 1, 2);
  torn.Tore(1, 64, 0, 1, 2);
  torn.Landing(0, 10, 5);  // Pages 10..14 of region 0: none of them.
  torn.Landing(1, 0, 10);  // Pages 0..9 of region 1: not page 10.
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 0 page 9 (guest 0x9000) of round 0 did not land as "
                                  "sent: hash 0x1, the source sent 0x2, and it was not sent "
                                  "again (4 pages like it)"));
  torn.Landing(0, 9, 7);  // Pages 9..15.
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 1 page 10 (guest 0x4000a000) of round 0 did not land "
                                  "as sent: hash 0x1, the source sent 0x2, and it was not sent "
                                  "again (2 pages like it)"));
  torn.Landing(1, 10, 60);  // Across a word boundary: 10..69.
  EXPECT_OK(torn.Unresolved());
}

TEST(TornPagesTest, ATornPageThatTearsAgainIsNamedByItsLatestTearAndCountedOnce) {
  TornPages torn = TwoRegions();
  torn.Tore(0, 3, 0, 0x1, 0x2);
  torn.Landing(0, 3, 1);
  torn.Tore(0, 3, 1, 0x3, 0x4);
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "of round 1 did not land as sent: hash 0x3, the source sent "
                                  "0x4, and it was not sent again (1 page like it)"));
  torn.Landing(0, 3, 1);
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 2u);
}

// Whatever a source makes tear, the record stays one bit a page: past
// kDetailedTears notes a page is named without its hashes, and counted.
TEST(TornPagesTest, TearsPastTheDetailedOnesAreNamedWithoutHashes) {
  TornPages torn = TwoRegions();
  for (uint64_t p = 0; p < 512; ++p) torn.Tore(1, p, 0, 1, 2);
  EXPECT_THAT(torn.Unresolved(), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                     "region 1 page 0 (guest 0x40000000) of "
                                                     "round 0 did not land as sent: hash 0x1"));
  torn.Landing(1, 0, TornPages::kDetailedTears);  // The detailed ones.
  EXPECT_THAT(torn.Unresolved(),
              StatusIsWithMessage(
                  absl::StatusCode::kDataLoss,
                  absl::StrCat("region 1 page ", TornPages::kDetailedTears, " (guest 0x40040000) "
                               "did not land as sent, and it was not sent again (",
                               512 - TornPages::kDetailedTears, " pages like it)")));
  torn.Landing(1, 0, 512);
  EXPECT_OK(torn.Unresolved());
  EXPECT_EQ(torn.tears(), 512u);
}

// Readers of one round note and clear different pages of one word at once.
TEST(TornPagesTest, ConcurrentReadersKeepTheCountExact) {
  TornPages torn({{4096, 0}});
  for (uint64_t p = 0; p < 4096; p += 2) torn.Tore(0, p, 0, 1, 2);  // Round 0: even pages.
  std::vector<std::thread> readers;
  for (uint64_t r = 0; r < 2; ++r) {
    readers.emplace_back([&torn, r] {
      // Round 1: reader r lands pages 2r, 2r+1 of every 4 and tears the odd one.
      for (uint64_t p = 2 * r; p < 4096; p += 4) {
        torn.Landing(0, p, 2);
        torn.Tore(0, p + 1, 1, 3, 4);
      }
    });
  }
  for (std::thread& t : readers) t.join();
  // Page 1 keeps its details or not, by the readers' interleaving.
  const absl::Status unresolved = torn.Unresolved();
  EXPECT_THAT(unresolved, StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                              "region 0 page 1 (guest 0x1000)"));
  EXPECT_THAT(unresolved, StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                              "not sent again (2048 pages like it)"));
  EXPECT_EQ(torn.tears(), 4096u);
}

}  // namespace
}  // namespace livemig::migration_internal
