// A page arrives at most once a round (internal/round_pages.h), whatever
// channel and encoding carry it, and a compressing source gets no torn
// pages (AgreedFeatures, protocol.h): a hand-driven source breaks each rule
// and the receiver refuses before anything is presented as received.
//
// Why the first rule: two channels landing one page in one round could
// interleave so that the page hash the receiver recorded is of the bytes the
// other channel overwrote (round 0 through a file hashes in the reader's
// buffer before its pwrite), and the Completion compares the source's hashes
// with the recorded ones: wrong memory verified.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/testing/raw_source.h"
#include "migration/transport/connection.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::DirEntries;
using ::livemig::testing::kIo;
using ::livemig::testing::kRegionPages;
using ::livemig::testing::kRegionSize;
using ::livemig::testing::RawSourceTest;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class PageOnceTest : public RawSourceTest, public ::testing::WithParamInterface<bool> {
 protected:
  void Configure(ReceiverOptions& options) override { options.prealloc = GetParam(); }

  // Channel 0 (conn_) and channel 1 (ch1_) of one migration say Hello, and
  // the table is acknowledged: the receiver is in round 0.
  void TwoChannels(const proto::RegionTable& table) {
    auto hello = [&](Connection& c, uint32_t index) {
      ASSERT_OK(wire::WriteFrame(c, wire::FrameType::kHello,
                                 MakeHello(proto::ROLE_SOURCE, index, 2, "id"), kIo));
      proto::Hello reply;
      ASSERT_OK(ReadExpected(c, wire::FrameType::kHello, &reply, kIo));
      ASSERT_OK(CheckHello(reply, proto::ROLE_DESTINATION));
    };
    ASSERT_NO_FATAL_FAILURE(hello(*conn_, 0));
    ASSERT_OK_AND_ASSIGN(ch1_, Connection::Connect(receiver_->endpoint(), kIo));
    ASSERT_NO_FATAL_FAILURE(hello(*ch1_, 1));
    ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
  }

  static absl::Status End(Connection& c, uint32_t round) {
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    return wire::WriteFrame(c, wire::FrameType::kIterationMarker, marker, kIo);
  }

  std::unique_ptr<Connection> ch1_;
};

// Round 0 into a file the receiver made (through pwrite, or with prealloc
// through the mapping): page 5 on both channels, with different bytes,
// each batch honest about its own. Whichever arrives second is refused.
TEST_P(PageOnceTest, OnePageOnTwoChannelsInRound0IsDataLossBeforeItLands) {
  ASSERT_NO_FATAL_FAILURE(TwoChannels(FileTable("guest.mem")));
  const std::vector<uint8_t> a(kRegionSize, 0xAA);
  const std::vector<uint8_t> b(kMigrationPageSize, 0xBB);
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 0, kRegionPages), a, a));
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(
      SendBatch(Batch(0, proto::ENCODING_RAW, 5, 1), b, b, wire::kFramePagesHashed, ch1_.get()));
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "region 0 page 5 (guest 0x5000) arrived twice in round 0: a "
                                  "source sends a page at most once a round"));
  EXPECT_THAT(DirEntries(root_), IsEmpty()) << "nothing presented as received";
}

// A later round, ZERO on one channel and RAW on the other: the same claim.
TEST_P(PageOnceTest, OnePageAsZeroAndAsBytesInOneLaterRoundIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(TwoChannels(FileTable("guest.mem")));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  ASSERT_OK(End(*conn_, 0));
  ASSERT_OK(End(*ch1_, 0));
  proto::Ack round;
  ASSERT_OK(Read(wire::FrameType::kAck, &round));
  ASSERT_EQ(round.kind(), proto::ACK_ROUND);
  ASSERT_OK(wire::WriteFrame(*ch1_, wire::FrameType::kPageBatch,
                             Batch(0, proto::ENCODING_ZERO, 2, 3, /*round=*/1), kIo));
  const std::vector<uint8_t> page(kMigrationPageSize, 0x5A);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 4, 1, /*round=*/1), page, page));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                "region 0 page 4 (guest 0x4000) arrived twice "
                                                "in round 1"));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

INSTANTIATE_TEST_SUITE_P(PreallocOffAndOn, PageOnceTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Prealloc" : "Plain";
                         });

TEST(AgreedFeaturesTest, ASourceAskingForACodecGetsNoTornPagesWhateverItClaims) {
  proto::Hello plain = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  EXPECT_EQ(AgreedFeatures(plain), kSupportedFeatures);
  plain.set_features(plain.features() | (uint64_t{1} << 40));  // Unknown: not agreed.
  EXPECT_EQ(AgreedFeatures(plain), kSupportedFeatures);
  proto::Hello none = plain;
  none.set_compression(proto::COMPRESSION_NONE);
  EXPECT_EQ(AgreedFeatures(none), kSupportedFeatures);
  for (proto::Compression codec : {proto::COMPRESSION_ZSTD, proto::COMPRESSION_LZ4}) {
    proto::Hello compressing = plain;  // Claims torn pages too.
    compressing.set_compression(codec);
    EXPECT_EQ(AgreedFeatures(compressing),
              kSupportedFeatures & ~uint64_t{proto::FEATURE_TORN_PAGES})
        << proto::Compression_Name(codec);
  }
}

// A compressing source that claims torn pages anyway: the destination's
// Hello withholds them, and a compressed page that does not match its hash
// is refused on arrival, not kept as torn.
TEST_F(RawSourceTest, ACompressingSourceClaimingTornPagesHasMismatchesRefusedOnArrival) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  OfferCompression({wire::Codec::kLz4, 0}, &hello);
  hello.set_features(kSupportedFeatures);  // Torn pages included.
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  proto::Hello reply;
  ASSERT_OK(Read(wire::FrameType::kHello, &reply));
  ASSERT_OK(CheckCompressionAnswer(reply, wire::Codec::kLz4));
  EXPECT_EQ(reply.features() & proto::FEATURE_TORN_PAGES, 0u);
  ASSERT_OK(Send(wire::FrameType::kRegionTable, FileTable("guest.mem")));
  proto::Ack ack;
  ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  ASSERT_EQ(ack.kind(), proto::ACK_REGION_TABLE);

  const std::vector<uint8_t> pages(kRegionSize, 0x11);
  ASSERT_OK_AND_ASSIGN(auto compressor,
                       wire::BatchCompressor::Create({wire::Codec::kLz4, 0}, pages.size()));
  const std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  proto::PageBatch batch = Batch(0, proto::ENCODING_LZ4, 0, kRegionPages);
  const std::vector<uint8_t> claimed(kMigrationPageSize, 0x22);  // Every hash wrong.
  for (uint64_t p = 0; p < kRegionPages; ++p) batch.add_page_hashes(HashPage(claimed.data()));
  ASSERT_OK_AND_ASSIGN(
      wire::EncodedFrame frame,
      wire::EncodeFrame(wire::FrameType::kPageBatch, batch, absl::MakeConstSpan(&*packed, 1),
                        wire::kFramePagesHashed));
  const iovec pieces[] = {
      {frame.header.data(), frame.header.size()},
      {frame.message.data(), frame.message.size()},
      {const_cast<uint8_t*>(packed->data()), packed->size()},
  };
  const absl::Time sent = absl::Now();
  ASSERT_OK(conn_->WriteAll(absl::MakeConstSpan(pieces), kIo));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kDataLoss, "region 0 page 0 (guest 0x0) of round 0 did not land as sent"));
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "did not land as sent"));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

}  // namespace
}  // namespace livemig
