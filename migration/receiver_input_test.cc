// A Receiver fed hand-crafted frames by a raw Connection (RawSourceTest,
// migration/testing/raw_source.h) during the precopy rounds: page batches
// whose payload, message, page hashes or lengths are wrong; runs that
// overlap or leave the region; ZERO batches the source did not negotiate;
// batches and markers of the wrong round or phase; an Abort from the source
// mid-rounds (and how its text is escaped); and two channels that end in
// different rounds (ReceiverRounds, in a forked child). Every malformed or
// out-of-protocol input must make ReceiveOne() fail promptly with the code
// that names the problem, never crash, never write outside a region, and
// leave nothing behind in (or outside) root_dir.
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
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
using ::livemig::testing::kPrompt;
using ::livemig::testing::kRegionPages;
using ::livemig::testing::kRegionSize;
using ::livemig::testing::RawSourceTest;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// The same receiver with and without ReceiverOptions::prealloc, for the
// tests below that are TEST_P: their verdict must not depend on it.
class RawSourceModes : public RawSourceTest, public ::testing::WithParamInterface<bool> {
 protected:
  void Configure(ReceiverOptions& options) override { options.prealloc = GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(PreallocOffAndOn, RawSourceModes, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Prealloc" : "Plain";
                         });

// From a source that sends copies (no FEATURE_TORN_PAGES), a page that does
// not match its hash is refused on arrival.
TEST_P(RawSourceModes, PageBatchWithAFlippedPayloadByteIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(
      Handshake(AnonymousTable(), kSupportedFeatures & ~uint64_t{proto::FEATURE_TORN_PAGES}));
  std::vector<uint8_t> pages(2 * kMigrationPageSize, 0xab);
  std::vector<uint8_t> corrupted = pages;
  corrupted[kMigrationPageSize + 17] ^= 0x01;
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 3, 2), pages, corrupted));
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, ("region 0 page 4 (guest 0x4000) of round 0 did not "
                                            "land as sent")));
}

// The message of a hashed batch is checked before any payload byte lands.
TEST_F(RawSourceTest, PageBatchWithAFlippedMessageByteIsRefusedBeforeItsPayload) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const std::vector<uint8_t> pages(kMigrationPageSize, 0xcd);
  proto::PageBatch batch = Batch(0, proto::ENCODING_RAW, 0, 1);
  batch.add_page_hashes(HashPage(pages.data()));
  ASSERT_OK_AND_ASSIGN(
      wire::EncodedFrame frame,
      wire::EncodeFrame(wire::FrameType::kPageBatch, batch, {absl::MakeConstSpan(pages)},
                        wire::kFramePagesHashed));
  frame.message.back() ^= 0x01;  // Inside the last page hash.
  const iovec pieces[] = {{frame.header.data(), frame.header.size()},
                          {frame.message.data(), frame.message.size()}};
  const absl::Time sent = absl::Now();
  ASSERT_OK(conn_->WriteAll(absl::MakeConstSpan(pieces), kIo));  // No payload follows.
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, ("checksum mismatch")));
}

TEST_F(RawSourceTest, RawBatchWithoutThePagesHashedFlagIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const std::vector<uint8_t> page(kMigrationPageSize, 0x11);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 0, 1), page, page, 0));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, ("no PAGES_HASHED flag")));
}

TEST_F(RawSourceTest, RawBatchWithTooFewPageHashesIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  // Two pages in the runs and the payload, hashes for one.
  const std::vector<uint8_t> pages(2 * kMigrationPageSize, 0x22);
  proto::PageBatch batch = Batch(0, proto::ENCODING_RAW, 0, 2);
  batch.add_page_hashes(HashPage(pages.data()));
  ASSERT_OK_AND_ASSIGN(
      wire::EncodedFrame frame,
      wire::EncodeFrame(wire::FrameType::kPageBatch, batch,
                        {absl::MakeConstSpan(pages)}, wire::kFramePagesHashed));
  const iovec pieces[] = {{frame.header.data(), frame.header.size()},
                          {frame.message.data(), frame.message.size()},
                          {const_cast<uint8_t*>(pages.data()), pages.size()}};
  const absl::Time sent = absl::Now();
  (void)conn_->WriteAll(absl::MakeConstSpan(pieces), kIo);
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, ("carries 1 page hashes")));
}

TEST_F(RawSourceTest, PayloadLenAboveTheLimitInRoundsIsResourceExhausted) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  wire::FrameHeader header;
  header.type = wire::FrameType::kPageBatch;
  header.payload_len = wire::kMaxPayloadSize + 1;
  const wire::FrameHeaderBytes bytes = wire::EncodeFrameHeader(header);
  const absl::Time sent = absl::Now();
  ASSERT_OK(SendBytes(std::string(bytes.begin(), bytes.end())));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(RawSourceTest, RawBatchWhosePayloadLenDisagreesWithItsRunsIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  // Runs say 2 pages; the payload carries 1.
  const std::vector<uint8_t> page(kMigrationPageSize, 0x11);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 0, 2), page, page));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(RawSourceTest, OverlappingRunsAreDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  proto::PageBatch batch = Batch(0, proto::ENCODING_ZERO, 4, 4);
  proto::PageRun* second = batch.add_runs();
  second->set_first_page(6);  // Inside [4, 8).
  second->set_count(1);
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch, batch));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kDataLoss,
      "run [6, +1) overlaps or precedes the run before it (which ends at page 8)"));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(RawSourceTest, BatchNamingARegionPastTheTableIsOutOfRange) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(1, proto::ENCODING_ZERO, 0, 1)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_P(RawSourceModes, RawRunPastTheRegionEndIsOutOfRangeAndRemovesTheStagingFile) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  // The staging file exists while the migration runs.
  EXPECT_TRUE(std::filesystem::exists(absl::StrCat(root_, "/guest.mem", kStagingSuffix)));
  // Pages 12..19 of a 16-page region: the last 4 would land past its end.
  const std::vector<uint8_t> pages(8 * kMigrationPageSize, 0x5a);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(
      SendBatch(Batch(0, proto::ENCODING_RAW, kRegionPages - 4, 8), pages, pages));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kOutOfRange));
  // Neither the staging file nor a final file is left.
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

// A broken source sends a page twice in round 0, RAW then ZERO: refused
// before the second lands (internal/round_pages.h), naming the page.
TEST_P(RawSourceModes, APageSentTwiceInRound0IsDataLossNamingIt) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const std::vector<uint8_t> page(kMigrationPageSize, 0x77);
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 3, 1), page, page));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  const std::string twice = "region 0 page 3 (guest 0x3000) arrived twice in round 0";
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss, twice));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss, twice));
}

TEST_F(RawSourceTest, ZeroBatchWithoutNegotiatingZeroPagesIsDataLoss) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_features(proto::FEATURE_PAGE_HASHES);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  proto::Hello reply;
  ASSERT_OK(Read(wire::FrameType::kHello, &reply));
  EXPECT_EQ(reply.features(), static_cast<uint64_t>(proto::FEATURE_PAGE_HASHES));
  ASSERT_OK(Send(wire::FrameType::kRegionTable, AnonymousTable()));
  proto::Ack ack;
  ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, 1)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kDataLoss, "the source did not offer FEATURE_ZERO_PAGES"));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(RawSourceTest, BatchOfAnotherRoundIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, 1, /*round=*/1)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(RawSourceTest, PhaseStartMarkerIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  proto::IterationMarker marker;
  marker.set_round(0);
  marker.set_phase(proto::PHASE_START);
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kIterationMarker, marker));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kDataLoss, "phase PHASE_START; only PHASE_END markers are sent"));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(RawSourceTest, EveryPrecopyRoundIsAcknowledged) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  for (uint32_t round = 0; round < 3; ++round) {
    ASSERT_OK(Send(wire::FrameType::kPageBatch,
                   Batch(0, proto::ENCODING_ZERO, 0, kRegionPages, round)));
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    ASSERT_OK(Send(wire::FrameType::kIterationMarker, marker));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    EXPECT_EQ(ack.kind(), proto::ACK_ROUND);
    EXPECT_EQ(ack.round(), round);
    EXPECT_EQ(ack.status_code(), 0);
  }
}

TEST_F(RawSourceTest, AbortFromTheSourceAfterTheTableEndsWithItsCode) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  proto::Abort abort;
  abort.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
  abort.set_message("source ran out of something");
  abort.set_role(proto::ROLE_SOURCE);
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kAbort, abort));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

class TwoChannels : public RawSourceTest {
 protected:
  void Open() {
    ASSERT_OK_AND_ASSIGN(conn1_, Connection::Connect(receiver_->endpoint(), kIo));
    for (uint32_t i = 0; i < 2; ++i) {
      Connection& c = i == 0 ? *conn_ : *conn1_;
      proto::Hello hello = MakeHello(proto::ROLE_SOURCE, i, 2, "two");
      ASSERT_OK(wire::WriteFrame(c, wire::FrameType::kHello, hello, kIo));
    }
    for (uint32_t i = 0; i < 2; ++i) {
      Connection& c = i == 0 ? *conn_ : *conn1_;
      proto::Hello reply;
      ASSERT_OK(ReadExpected(c, wire::FrameType::kHello, &reply, kIo));
    }
    ASSERT_OK(Send(wire::FrameType::kRegionTable, AnonymousTable()));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  }
  // What sender.cc's RollBack() does: the Abort on channel 0, then every
  // channel closed; the receiver must report that reason.
  void AbortThenCloseAndExpectTheReason() {
    SendAbortBestEffort(*conn_, absl::CancelledError("migration cancelled by the source"),
                        proto::ROLE_SOURCE);
    conn_->Shutdown();
    conn1_->Shutdown();
    EXPECT_THAT(Result(absl::Now()),
                StatusIsWithMessage(absl::StatusCode::kCancelled,
                                    "peer aborted: migration cancelled by the source"));
  }
  std::unique_ptr<Connection> conn1_;
};

// A source that stops on its own writes its Abort on channel 0, then closes
// every channel (sender.cc RollBack). Here channel 0 had already ended the
// round, so its reader waits in the round barrier, not reading: channel 1's
// close must not hide the Abort (it did: "channel 1 ...: peer closed the
// connection"). The pause only lets the receiver read what came before; the
// verdict does not depend on it.
TEST_F(TwoChannels, AbortAfterChannelZeroFinishedItsRoundIsItsReason) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, 8)));
  ASSERT_OK(Send(wire::FrameType::kIterationMarker, EndOf(0)));
  ASSERT_OK(wire::WriteFrame(*conn1_, wire::FrameType::kPageBatch,
                             Batch(0, proto::ENCODING_ZERO, 8, 4), kIo));
  absl::SleepFor(absl::Milliseconds(200));  // The receiver has read all of it.
  conn_->Interrupt(absl::Milliseconds(250));
  AbortThenCloseAndExpectTheReason();
}

// Channel 1 was cut mid-frame (its grace ran out), channel 0 was at a frame
// boundary and carries the Abort (it was DataLoss "... closed mid-read").
TEST_F(TwoChannels, AbortWithATornOtherChannelIsItsReason) {
  ASSERT_NO_FATAL_FAILURE(Open());
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, 8)));
  // Half a frame on channel 1.
  ASSERT_OK_AND_ASSIGN(wire::EncodedFrame frame,
                       wire::EncodeFrame(wire::FrameType::kPageBatch,
                                         Batch(0, proto::ENCODING_ZERO, 8, 4), {}, 0));
  std::string bytes(reinterpret_cast<const char*>(frame.header.data()), frame.header.size());
  bytes.append(reinterpret_cast<const char*>(frame.message.data()), frame.message.size() / 2);
  const iovec piece{bytes.data(), bytes.size()};
  ASSERT_OK(conn1_->WriteAll(absl::MakeConstSpan(&piece, 1), kIo));
  absl::SleepFor(absl::Milliseconds(200));
  AbortThenCloseAndExpectTheReason();
}

// A source that vanishes (killed, its host gone) is named in the error:
// which channel, from where, in which round or step.
TEST_F(RawSourceTest, ASourceThatClosesMidRoundIsNamedByChannelPeerAndRound) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
  const absl::Time sent = absl::Now();
  conn_->Shutdown();
  const absl::Status got = Result(sent);
  EXPECT_THAT(got, StatusIsWithMessage(absl::StatusCode::kUnavailable, "channel 0 (127.0.0.1:"));
  EXPECT_THAT(got.message(), HasSubstr("), round 0: peer closed the connection"));
  EXPECT_THAT(DirEntries(root_), IsEmpty());
}

TEST_F(RawSourceTest, ASourceThatClosesBeforeItsTableIsNamedByTheStep) {
  ASSERT_NO_FATAL_FAILURE(SendHello());
  const absl::Time sent = absl::Now();
  conn_->Shutdown();
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                                "), the region table: peer closed the connection"));
}

// An Abort's text reaches logs and terminals: control bytes are escaped (no
// cleared screen, no forged "received ... verified" line) and it is capped.
TEST_F(RawSourceTest, AbortTextFromThePeerIsEscapedAndCapped) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  proto::Abort abort;
  abort.set_code(static_cast<int>(absl::StatusCode::kInternal));
  abort.set_message("\x1b[2J\nlivemig: received 1 GiB; verified\\" + std::string(100000, 'A'));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kAbort, abort));
  const absl::Status status = Result(sent);
  EXPECT_THAT(status, StatusIsWithMessage(
                          absl::StatusCode::kInternal,
                          "peer aborted: \\x1b[2J\\x0alivemig: received 1 GiB; verified\\x5cAAA"));
  EXPECT_THAT(std::string(status.message()), ::testing::EndsWith("... (99527 more bytes)"));
  EXPECT_EQ(std::string(status.message()).find_first_of("\n\x1b"), std::string::npos);
  EXPECT_LT(status.message().size(), kMaxPeerText + 64);
}

// A reason that is not UTF-8 (a file name, say) still arrives, escaped.
TEST_F(RawSourceTest, AbortTextThatIsNotUtf8ArrivesEscaped) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  proto::Abort abort;
  abort.set_code(static_cast<int>(absl::StatusCode::kNotFound));
  abort.set_message("open \"vm-\xff\xfe.mem\": no such file");
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kAbort, abort));
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kNotFound,
                                  "peer aborted: open \"vm-\\xff\\xfe.mem\": no such file"));
}

// Two channels that disagree on the final round: channel 0 ends the
// migration in round 0, channel 1 goes on to round 1. The receiver must
// refuse this (DataLoss) promptly, or at least return once Cancel() is
// called. Run in a forked child so a hang cannot take the suite with it.
TEST(ReceiverRounds, ChannelsEndingInDifferentRoundsDoNotHangTheReceiver) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Exit codes: 0 refused in time, 1 setup failed, 2 accepted the
    // migration, 3 returned only after Cancel(), 4 never returned.
    ReceiverOptions options;
    options.root_dir = TempDir("rounds_child");
    options.io_timeout = kIo;
    auto receiver = Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), options);
    if (!receiver.ok()) ::_exit(1);
    auto* r = receiver->release();
    auto* result = new absl::StatusOr<ReceivedMigration>(absl::UnknownError(""));
    auto* done = new std::atomic<bool>(false);
    std::thread([r, result, done] {
      *result = r->ReceiveOne();
      done->store(true);
    }).detach();
    auto c0 = Connection::Connect(r->endpoint(), kIo);
    if (!c0.ok()) ::_exit(1);
    auto hello = [](Connection& c, uint32_t index) {
      if (!wire::WriteFrame(c, wire::FrameType::kHello,
                            MakeHello(proto::ROLE_SOURCE, index, 2, "id"), kIo)
               .ok()) {
        return false;
      }
      auto frame = wire::ReadFrameStart(c, kIo);
      return frame.ok() && frame->header.type == wire::FrameType::kHello;
    };
    if (!hello(**c0, 0)) ::_exit(1);
    auto c1 = Connection::Connect(r->endpoint(), kIo);
    if (!c1.ok() || !hello(**c1, 1)) ::_exit(1);
    proto::RegionTable table;
    proto::RegionInfo* info = table.add_regions();
    info->set_size(kRegionSize);
    info->set_page_size(kMigrationPageSize);
    info->set_backing(proto::BACKING_ANONYMOUS);
    if (!wire::WriteFrame(**c0, wire::FrameType::kRegionTable, table, kIo).ok()) ::_exit(1);
    auto ack = wire::ReadFrameStart(**c0, kIo);
    if (!ack.ok() || ack->header.type != wire::FrameType::kAck) ::_exit(1);
    auto marker = [](Connection& c, uint32_t round, bool final) {
      proto::IterationMarker m;
      m.set_round(round);
      m.set_phase(proto::PHASE_END);
      m.set_final(final);
      return wire::WriteFrame(c, wire::FrameType::kIterationMarker, m, kIo).ok();
    };
    if (!marker(**c0, 0, true) || !marker(**c1, 0, false) || !marker(**c1, 1, true)) {
      ::_exit(1);
    }
    auto wait = [done](absl::Duration d) {
      const absl::Time until = absl::Now() + d;
      while (!done->load() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
      return done->load();
    };
    if (wait(kPrompt)) ::_exit(result->ok() ? 2 : 0);
    r->Cancel();
    ::_exit(wait(absl::Seconds(2)) ? 3 : 4);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus)) << "child died: " << wstatus;
  const int code = WEXITSTATUS(wstatus);
  ASSERT_NE(code, 1) << "child could not set up the migration";
  EXPECT_NE(code, 2) << "the receiver accepted channels that ended in different rounds";
  EXPECT_NE(code, 3) << "ReceiveOne() returned only after Cancel()";
  EXPECT_NE(code, 4) << "ReceiveOne() did not return even after Cancel()";
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace livemig
