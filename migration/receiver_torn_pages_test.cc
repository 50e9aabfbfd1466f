// Torn pages (FEATURE_TORN_PAGES, migration/protocol.h) as the receiver sees
// them from a hand-driven source: a page that did not land as its hash says
// is kept until a later round lands it whole, and fails the migration when
// the final round ends without that.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/testing/raw_source.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::DirEntries;
using ::livemig::testing::kRegionPages;
using ::livemig::testing::kRegionSize;
using ::livemig::testing::RawSourceTest;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::IsEmpty;

constexpr uint64_t kTornPage = 4;

class TornPagesTest : public RawSourceTest {
 protected:
  // Round 0: every page of FileTable's region holds 0x11, but page
  // kTornPage lands with one byte changed after its hash was taken.
  void SendRound0WithATornPage() {
    const std::vector<uint8_t> pages(kRegionSize, 0x11);
    std::vector<uint8_t> landed = pages;
    landed[kTornPage * kMigrationPageSize + 100] = 0x99;
    sent_hash_ = HashPage(pages.data());
    landed_hash_ = HashPage(landed.data() + kTornPage * kMigrationPageSize);
    ASSERT_NO_FATAL_FAILURE(
        SendBatch(Batch(0, proto::ENCODING_RAW, 0, kRegionPages), pages, landed));
  }

  void EndRound(uint32_t round, bool final) {
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    marker.set_final(final);
    ASSERT_OK(Send(wire::FrameType::kIterationMarker, marker));
    if (final) return;
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_ROUND);
  }

  std::string TornMessage() const {
    return absl::StrCat("region 0 page 4 (guest 0x4000) of round 0 did not land as sent: hash 0x",
                        absl::Hex(landed_hash_), ", the source sent 0x", absl::Hex(sent_hash_),
                        ", and it was not sent again (1 page like it)");
  }

  uint64_t sent_hash_ = 0;
  uint64_t landed_hash_ = 0;
};

TEST_F(TornPagesTest, ATornPageLandedWholeInALaterRoundIsReceivedExactly) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_NO_FATAL_FAILURE(SendRound0WithATornPage());
  ASSERT_NO_FATAL_FAILURE(EndRound(0, false));
  const std::vector<uint8_t> again(kMigrationPageSize, 0x22);  // The guest's write.
  ASSERT_NO_FATAL_FAILURE(
      SendBatch(Batch(0, proto::ENCODING_RAW, kTornPage, 1, /*round=*/1), again, again));
  std::vector<uint8_t> guest(kRegionSize, 0x11);
  std::fill_n(guest.begin() + kTornPage * kMigrationPageSize, kMigrationPageSize, 0x22);
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, guest)}, /*round=*/1, kRegionPages + 1));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  ASSERT_NO_FATAL_FAILURE(HandOverAndExpectCommitted());
  ASSERT_OK(Result(absl::Now()));
  EXPECT_EQ(result_->torn_pages, 1u);
  const uint8_t* data = result_->memory.region(0).region().as_ptr();
  EXPECT_TRUE(std::equal(guest.begin(), guest.end(), data));
}

// Sent again as a ZERO page (the guest cleared it) counts as landing whole.
TEST_F(TornPagesTest, ATornPageSentAgainAsAZeroPageIsWhole) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_NO_FATAL_FAILURE(SendRound0WithATornPage());
  ASSERT_NO_FATAL_FAILURE(EndRound(0, false));
  ASSERT_OK(
      Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, kTornPage, 1, /*round=*/1)));
  std::vector<uint8_t> guest(kRegionSize, 0x11);
  std::fill_n(guest.begin() + kTornPage * kMigrationPageSize, kMigrationPageSize, 0);
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, guest)}, /*round=*/1, kRegionPages + 1));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
}

TEST_F(TornPagesTest, ATornPageNotSentAgainFailsWhenTheFinalRoundEnds) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_NO_FATAL_FAILURE(SendRound0WithATornPage());
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(EndRound(0, /*final=*/true));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss, TornMessage()));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, TornMessage()));
  EXPECT_THAT(DirEntries(root_), IsEmpty());  // Nothing presented as received.
}

// A source cannot mend a tear by sending the page twice in one round: only
// a later round (after the guest's write was harvested) counts, and a page
// arriving twice in a round is refused on arrival.
TEST_F(TornPagesTest, ThePageSentAgainInTheSameRoundIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_NO_FATAL_FAILURE(SendRound0WithATornPage());
  const std::vector<uint8_t> whole(kMigrationPageSize, 0x11);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, kTornPage, 1), whole, whole));
  const std::string twice = "region 0 page 4 (guest 0x4000) arrived twice in round 0";
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss, twice));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, twice));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// A source that compresses sends stable copies: it does not offer torn
// pages, so the destination checks each page on arrival.
TEST(TornPagesHello, ACompressingSourceDoesNotOfferTornPages) {
  proto::Hello plain = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  EXPECT_NE(plain.features() & proto::FEATURE_TORN_PAGES, 0u);
  proto::Hello compressing = plain;
  OfferCompression({wire::Codec::kLz4, 0}, &compressing);
  EXPECT_EQ(compressing.features() & proto::FEATURE_TORN_PAGES, 0u);
  EXPECT_EQ(compressing.features() | proto::FEATURE_TORN_PAGES, plain.features());
}

}  // namespace
}  // namespace livemig
