// A Receiver fed hand-crafted frames by a raw Connection (RawSourceTest,
// migration/testing/raw_source.h) from the final round on: a protocol-correct
// migration received exactly; the Completion's digests and page count (none,
// wrong, duplicated, miscounted); the page-hash queries a digest mismatch
// starts and the answers the source gives them; and the handover, where
// nothing is published unless the source's ACK_HANDOVER arrives. Every wrong
// input must make ReceiveOne() fail promptly with the code that names the
// problem and leave nothing behind in root_dir.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/testing/raw_source.h"
#include "migration/verification.h"
#include "migration/wire/frame_format.h"
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

// The helpers speak the protocol correctly: the same prefix, pages and
// completion make a migration the receiver verifies and commits.
TEST_F(RawSourceTest, ProtocolCorrectInputIsReceivedExactly) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  std::vector<uint8_t> contents(kRegionSize, 0);
  std::vector<uint8_t> pages(3 * kMigrationPageSize);
  for (size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<uint8_t>(i * 7 + 1);
  std::memcpy(contents.data() + 5 * kMigrationPageSize, pages.data(), pages.size());
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 5, 3), pages, pages));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, 5)));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 8, kRegionPages - 8)));
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  // Verified, but not published before the handover.
  EXPECT_FALSE(std::filesystem::exists(absl::StrCat(root_, "/guest.mem")));
  ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
  proto::Ack committed;
  ASSERT_OK(Read(wire::FrameType::kAck, &committed));
  EXPECT_EQ(committed.kind(), proto::ACK_COMMITTED);
  EXPECT_EQ(committed.status_code(), 0);
  ASSERT_OK(Result(absl::Now()));
  ASSERT_EQ(result_->memory.num_regions(), 1u);
  EXPECT_EQ(std::memcmp(result_->memory.region(0).region().as_ptr(), contents.data(),
                        contents.size()),
            0);
  EXPECT_EQ(result_->device_state, "state");
  EXPECT_EQ(result_->files[0], absl::StrCat(root_, "/guest.mem"));
  EXPECT_THAT(DirEntries(root_), ::testing::ElementsAre(result_->files[0]));
}

TEST_F(RawSourceTest, CompletionWithoutDigestsIsReceivedUnverified) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  ASSERT_NO_FATAL_FAILURE(Finish({}));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
  proto::Ack committed;
  ASSERT_OK(Read(wire::FrameType::kAck, &committed));
  ASSERT_OK(Result(absl::Now()));
  EXPECT_FALSE(result_->verified);
}

TEST_F(RawSourceTest, CompletionCountingOtherPagesThanArrivedIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, std::vector<uint8_t>(kRegionSize, 0))}, 0,
                                 kRegionPages + 3));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                "the source sent 19 pages; 16 arrived"));
}

// Two regions, two digests, but both for region 0: region 1's contents are
// never checked against the source.
TEST_F(RawSourceTest, CompletionDigestingOneRegionTwiceIsDataLoss) {
  proto::RegionTable table = AnonymousTable();
  proto::RegionInfo* second = table.add_regions();
  *second = table.regions(0);
  second->set_index(1);
  second->set_guest_addr(kRegionSize);
  ASSERT_NO_FATAL_FAILURE(Handshake(table));
  for (uint32_t region : {0, 1}) {
    ASSERT_OK(Send(wire::FrameType::kPageBatch,
                   Batch(region, proto::ENCODING_ZERO, 0, kRegionPages)));
  }
  const std::vector<uint8_t> zero(kRegionSize, 0);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, zero), Digest(0, zero)}, 0, 2 * kRegionPages));
  const absl::Status status = Result(sent);
  EXPECT_THAT(status, StatusIsWithMessage(absl::StatusCode::kDataLoss, ("given twice")));
}

// A digest mismatch: the receiver asks for the source's page hashes of the
// first differing chunk and fails naming the page.
TEST_F(RawSourceTest, CompletionWithAWrongDigestIsDataLossNamingThePage) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  std::vector<uint8_t> contents(kRegionSize, 0);
  contents[9 * kMigrationPageSize + 100] = 1;  // A version the receiver never got.
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}));
  proto::PageHashQuery query;
  ASSERT_OK(Read(wire::FrameType::kPageHashQuery, &query));
  EXPECT_EQ(query.region_index(), 0u);
  EXPECT_EQ(query.first_page(), 0u);
  EXPECT_EQ(query.count(), kRegionPages);
  std::vector<PageHashes> sent;
  sent.push_back(SentHashes(contents));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(query, sent));
  const absl::Time answered = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageHashList, list));
  proto::Abort abort;
  ASSERT_OK(Read(wire::FrameType::kAbort, &abort));
  EXPECT_EQ(abort.code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_THAT(abort.message(), ::testing::HasSubstr("region 0 (guest 0x0, 65536 bytes)"));
  EXPECT_THAT(abort.message(), ::testing::HasSubstr("page 9 (guest 0x9000) differs"));
  EXPECT_THAT(Result(answered), StatusIsWithMessage(absl::StatusCode::kDataLoss, ("page 9 (guest 0x9000) differs")));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// A source whose page list is not what its chunk digest was made of (here
// it blames page 3 for page 9's difference) is not repeated as the
// diagnosis: the migration fails saying the list cannot be trusted.
TEST_F(RawSourceTest, APageListThatDoesNotMakeTheSourcesDigestIsNotTrusted) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  std::vector<uint8_t> contents(kRegionSize, 0);
  contents[9 * kMigrationPageSize + 100] = 1;
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}));
  proto::PageHashQuery query;
  ASSERT_OK(Read(wire::FrameType::kPageHashQuery, &query));
  std::vector<uint8_t> lie(kRegionSize, 0);
  lie[3 * kMigrationPageSize] = 1;
  std::vector<PageHashes> sent;
  sent.push_back(SentHashes(lie));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(query, sent));
  const absl::Time answered = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageHashList, list));
  proto::Abort abort;
  ASSERT_OK(Read(wire::FrameType::kAbort, &abort));
  EXPECT_EQ(abort.code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_THAT(abort.message(), ::testing::HasSubstr(
                                   "PAGE_HASH_LIST for region 0 pages [0, +16) hashes to 0x"));
  EXPECT_THAT(Result(answered),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "the pages it names cannot be trusted"));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// A page missing from the rounds is caught even when every page that did
// arrive is right.
// Round 0 sends every page: one never sent is refused when round 0 ends,
// whatever the digests say (a source that lost a page has no hash of it
// either, so its digests would agree with the hole).
TEST_F(RawSourceTest, APageRoundZeroNeverSentIsDataLossWhenTheRoundEnds) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, 5)));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 6, 9)));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kIterationMarker, EndOf(0, /*final=*/true)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss, "page 5"));
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "round 0 ended without region 0 page 5 (guest 0x5000) and 1 "
                                  "more of its 16 pages: round 0 sends every page"));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// The same for a round that is not the last: refused at its end, before
// its acknowledgement.
TEST_F(RawSourceTest, ALiveRoundZeroWithoutEveryPageIsNotAcknowledged) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages - 1)));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kIterationMarker, EndOf(0)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss, "page 15"));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                "round 0 ended without region 0 page 15"));
}

TEST_F(RawSourceTest, AnswerToAnotherPageHashQueryIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  std::vector<uint8_t> contents(kRegionSize, 0);
  contents[0] = 1;
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}));
  proto::PageHashQuery query;
  ASSERT_OK(Read(wire::FrameType::kPageHashQuery, &query));
  proto::PageHashList list;
  list.set_region_index(0);
  list.set_first_page(1);  // Not what was asked.
  for (uint64_t i = 0; i < query.count(); ++i) list.add_hashes(1);
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageHashList, list));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, ("does not answer the query")));
}

// The session timeout bounds what comes after the rounds too: a source
// that goes silent there (or drips device-state sections) is cut at it,
// not one io timeout at a time.
class ShortSession : public RawSourceTest {
  void Configure(ReceiverOptions& options) override { options.session_timeout = absl::Seconds(1); }
};

TEST_F(ShortSession, ASourceSilentAfterItsFinalRoundIsCutAtTheSessionTimeout) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kIterationMarker, EndOf(0, /*final=*/true)));
  // No device state follows: before, the read waited its whole io timeout.
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "the migration did not finish within the session timeout of 1s"));
}

// Once VERIFIED is out, the session timeout no longer applies: a source
// whose HANDOVER comes after it must still get COMMITTED (a receiver that
// gave up there left the source's handover in doubt, its guest paused).
TEST_F(ShortSession, AHandoverAfterTheSessionTimeoutIsStillCommitted) {
  ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
  absl::SleepFor(absl::Milliseconds(1200));  // Past the 1 s session.
  ASSERT_NO_FATAL_FAILURE(HandOverAndExpectCommitted());
  EXPECT_OK(Result(absl::Now()));
}

// The source decides: a receiver that never hears the handover must not
// publish anything, whatever ended the conversation.
TEST_F(RawSourceTest, SourceVanishingBeforeTheHandoverCommitsNothing) {
  ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
  const absl::Time sent = absl::Now();
  conn_.reset();  // The source is gone without a handover.
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

TEST_F(RawSourceTest, AbortInsteadOfTheHandoverEndsWithItsCodeAndCommitsNothing) {
  ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kAbort,
                 AbortFromStatus(absl::CancelledError("operator"), proto::ROLE_SOURCE)));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

TEST_F(RawSourceTest, AnotherAckInsteadOfTheHandoverIsDataLossAndCommitsNothing) {
  ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
  const absl::Time sent = absl::Now();
  proto::Ack wrong;
  wrong.set_kind(proto::ACK_ROUND);
  ASSERT_OK(Send(wire::FrameType::kAck, wrong));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

}  // namespace
}  // namespace livemig
