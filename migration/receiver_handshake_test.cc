// A Receiver fed hand-crafted frames by a raw Connection (RawSourceTest,
// migration/testing/raw_source.h), from the first byte up to round 0: the
// hello (magic, versions, framing, checksum, size limits), the features a
// source must offer, connections that never speak, the limits the region
// table is held to (overlaps, paths escaping or too deep for the root, more
// regions or memory than allowed) and an Abort in place of the table. A
// stranger that breaks the hello is answered and dropped while ReceiveOne()
// goes on to the next source; a broken table ends ReceiveOne() promptly with
// the code that names the problem and leaves nothing in root_dir. Also: a
// Cancel() that comes before ReceiveOne().
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/testing/migration_harness.h"
#include "migration/testing/raw_source.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::DirEntries;
using ::livemig::testing::kIo;
using ::livemig::testing::kRegionSize;
using ::livemig::testing::RawSourceTest;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::IsEmpty;

TEST_F(RawSourceTest, WrongHelloMagicIsAnsweredWithDataLossAndDropped) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_magic(0x4854535048545450ull);  // "PTTHPSTH": not livemig.
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, DisjointVersionRangeIsAnsweredWithFailedPreconditionAndDropped) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_protocol_version(wire::kProtocolVersion + 1);
  hello.set_min_version(wire::kProtocolVersion + 1);
  hello.set_max_version(wire::kProtocolVersion + 3);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kFailedPrecondition));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, FirstFrameOtherThanHelloIsAnsweredWithDataLossAndDropped) {
  ASSERT_OK(Send(wire::FrameType::kRegionTable, AnonymousTable()));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, HalfAHeaderThenEofIsAnsweredWithDataLossAndDropped) {
  ASSERT_OK_AND_ASSIGN(std::string frame,
                       wire::SerializeFrame(wire::FrameType::kHello,
                                            MakeHello(proto::ROLE_SOURCE, 0, 1, "id")));
  ASSERT_OK(SendBytes(frame.substr(0, wire::kFrameHeaderSize / 2)));
  ASSERT_OK(conn_->ShutdownWrite());
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, HelloWithAFlippedMessageByteFailsTheFrameChecksumAndIsDropped) {
  ASSERT_OK_AND_ASSIGN(std::string frame,
                       wire::SerializeFrame(wire::FrameType::kHello,
                                            MakeHello(proto::ROLE_SOURCE, 0, 1, "id")));
  // The last message byte is inside the "livemig" software string: the
  // message still parses, only the frame checksum can tell.
  frame.back() ^= 0x01;
  ASSERT_OK(SendBytes(frame));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, HelloLenAboveTheLimitIsAnsweredWithResourceExhaustedAndDropped) {
  wire::FrameHeader header;
  header.type = wire::FrameType::kHello;
  header.message_len = static_cast<uint32_t>(wire::kMaxMessageSize + 1);
  const wire::FrameHeaderBytes bytes = wire::EncodeFrameHeader(header);
  ASSERT_OK(SendBytes(std::string(bytes.begin(), bytes.end())));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kResourceExhausted));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, HelloWithoutPageHashesIsAnsweredWithFailedPreconditionAndDropped) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_features(proto::FEATURE_ZERO_PAGES | proto::FEATURE_MULTI_CHANNEL);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kFailedPrecondition,
                                             "does not offer FEATURE_PAGE_HASHES"));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, SeveralChannelsWithoutMultiChannelAreRefused) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 2, "id");
  hello.set_features(proto::FEATURE_PAGE_HASHES | proto::FEATURE_ZERO_PAGES);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kFailedPrecondition,
      "source asks for 2 channels without offering FEATURE_MULTI_CHANNEL"));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, AMigrationIdLongerThanTheLimitIsRefused) {
  ASSERT_OK(Send(wire::FrameType::kHello,
                 MakeHello(proto::ROLE_SOURCE, 0, 2, std::string(kMaxMigrationIdLength + 1, 'x'))));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kInvalidArgument,
                                             "migration id of 129 bytes; at most 128"));
  ExpectTheNextSourceIsReceived();
}

// Connections whose Hello was answered wait for their migration's other
// channels; strangers cannot park more than max_pending + max_channels of
// them (each holds a descriptor): one more drops the group that began
// longest ago, so a real source is not locked out.
class FewWaitingChannels : public RawSourceTest {
  void Configure(ReceiverOptions& options) override {
    options.max_pending_handshakes = 2;
    options.max_channels = 2;
  }
};

TEST_F(FewWaitingChannels, OneMoreWaitingConnectionDropsTheOldestIncompleteMigration) {
  std::vector<std::unique_ptr<Connection>> parked;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Connection> c,
                         Connection::Connect(receiver_->endpoint(), kIo));
    proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 2, absl::StrCat("stranger", i));
    ASSERT_OK(wire::WriteFrame(*c, wire::FrameType::kHello, hello, kIo));
    ASSERT_OK_AND_ASSIGN(wire::IncomingFrame reply, wire::ReadFrameStart(*c, kIo));
    ASSERT_EQ(reply.header.type, wire::FrameType::kHello);  // Answered: it waits now.
    parked.push_back(std::move(c));
  }
  // The real source's two channels: the first drops stranger0's group, the
  // second stranger1's.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Connection> second,
                       Connection::Connect(receiver_->endpoint(), kIo));
  for (uint32_t i = 0; i < 2; ++i) {
    ASSERT_OK(wire::WriteFrame(i == 0 ? *conn_ : *second, wire::FrameType::kHello,
                               MakeHello(proto::ROLE_SOURCE, i, 2, "real"), kIo));
    proto::Hello reply;
    ASSERT_OK(ReadExpected(i == 0 ? *conn_ : *second, wire::FrameType::kHello, &reply, kIo));
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(wire::ReadFrameStart(*parked[i], kIo), StatusIs(absl::StatusCode::kUnavailable))
        << "stranger" << i << " should have been dropped";
  }
  // The real migration began: its channel 0 takes the region table.
  ASSERT_OK(Send(wire::FrameType::kRegionTable, AnonymousTable()));
  proto::Ack ack;
  ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  EXPECT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
}

// An incomplete migration is dropped when no channel of it came for an io
// timeout (kIo, 3 s), not an io timeout after its first: a source whose
// channels come 2 s apart (many channels over a long round trip) is taken.
// Before, the group was dropped 3 s after channel 0 and its channels were
// closed while channel 2 was still on its way.
TEST_F(RawSourceTest, ChannelsComingFurtherApartInAllThanAnIoTimeoutStillFormTheirMigration) {
  std::vector<std::unique_ptr<Connection>> channels;
  for (uint32_t i = 0; i < 3; ++i) {
    if (i > 0) {
      absl::SleepFor(absl::Seconds(2));
      ASSERT_OK_AND_ASSIGN(std::unique_ptr<Connection> c,
                           Connection::Connect(receiver_->endpoint(), kIo));
      channels.push_back(std::move(c));
    }
    Connection& on = i == 0 ? *conn_ : *channels.back();
    ASSERT_OK(wire::WriteFrame(on, wire::FrameType::kHello,
                               MakeHello(proto::ROLE_SOURCE, i, 3, "spaced"), kIo));
    proto::Hello reply;
    ASSERT_OK(ReadExpected(on, wire::FrameType::kHello, &reply, kIo)) << "channel " << i;
  }
  // All three arrived 4 s after the first: the migration began.
  ASSERT_OK(Send(wire::FrameType::kRegionTable, AnonymousTable()));
  proto::Ack ack;
  ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  EXPECT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
}

// Handshakes run concurrently: a connection that never says anything does
// not hold up the source behind it (it would, for the whole handshake
// timeout, were connections served one at a time).
TEST_F(RawSourceTest, IdleConnectionDoesNotDelayTheSourceBehindIt) {
  std::unique_ptr<Connection> idle = std::move(conn_);  // Connected, silent.
  ExpectTheNextSourceIsReceived();  // Within kPrompt; the handshake timeout is 60 s.
}

TEST_F(RawSourceTest, OverlappingGuestRangesAreInvalidArgument) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  proto::RegionTable table = AnonymousTable();
  proto::RegionInfo* second = table.add_regions();
  *second = table.regions(0);
  second->set_index(1);
  second->set_guest_addr(kRegionSize / 2);  // Inside region 0.
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

TEST_F(RawSourceTest, FilePathEscapingTheRootIsInvalidArgumentAndCreatesNothing) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, FileTable("../escape")));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
  // base_ holds root_ only: no "escape" (or its staging file) beside it.
  EXPECT_THAT(DirEntries(base_), ::testing::ElementsAre(root_));
}

// A 20-byte table may not ask for what the machine does not have: refused
// at the table, before any mapping or page-hash array exists.
TEST_F(RawSourceTest, TableLargerThanThisMachinesMemoryIsResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  proto::RegionTable table = AnonymousTable();
  table.mutable_regions(0)->set_size(uint64_t{1} << 40);  // 1 TiB.
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
  ASSERT_NO_FATAL_FAILURE(
      ExpectAbortThenEof(absl::StatusCode::kResourceExhausted, "(this machine's memory)"));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                                "region table needs 1099511627776 bytes"));
}

TEST_F(RawSourceTest, TooManyRegionsAndTooDeepPathsAreResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  proto::RegionTable table;
  for (uint32_t i = 0; i < 1025; ++i) {
    proto::RegionInfo* r = table.add_regions();
    *r = AnonymousTable().regions(0);
    r->set_index(i);
    r->set_guest_addr(uint64_t{i} * kRegionSize);
  }
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kResourceExhausted,
                                             "region table has 1025 regions; the limit is 1024"));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(RawSourceTest, FilePathDeeperThanTheLimitIsResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  std::string deep;
  for (int i = 0; i < 40; ++i) absl::StrAppend(&deep, i == 0 ? "" : "/", "d");
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, FileTable(deep)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kResourceExhausted, "file_path has 40 components; the limit is 32"));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// protocol.h: either side may send Abort at any time. Between the hello and
// the region table the receiver must end with the source's code too.
TEST_F(RawSourceTest, AbortFromTheSourceInsteadOfTheTableEndsWithItsCode) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  proto::Abort abort;
  abort.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  abort.set_message("source ran out of something");
  abort.set_role(proto::ROLE_SOURCE);
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kAbort, abort));
  const absl::Status status = Result(sent);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kResourceExhausted));
}

// A Cancel() that comes before ReceiveOne() (a signal while the embedder
// was still setting up) is not lost, and is used up by that call.
TEST(ReceiverCancel, CancelBeforeReceiveOneEndsItAtOnceAndOnlyIt) {
  ReceiverOptions options;
  options.root_dir = TempDir("cancel_before");
  options.accept_timeout = absl::Milliseconds(300);
  ASSERT_OK_AND_ASSIGN(auto receiver, Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), options));
  receiver->Cancel();
  EXPECT_THAT(receiver->ReceiveOne(),
              StatusIsWithMessage(absl::StatusCode::kCancelled, "while waiting for a source"));
  // The next call waits again (and here times out: nobody connects).
  EXPECT_THAT(receiver->ReceiveOne(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

}  // namespace
}  // namespace livemig
