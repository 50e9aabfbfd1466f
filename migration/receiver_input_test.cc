// A Receiver fed hand-crafted frames by a raw Connection: every malformed or
// out-of-protocol input must make ReceiveOne() fail promptly with the code
// that names the problem, never crash, never write outside a region, and
// leave nothing behind in (or outside) root_dir.
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
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
#include "migration/page_hashes.h"
#include "migration/region_store.h"
#include "migration/verification.h"
#include "migration/testing/migration_harness.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::IsEmpty;

constexpr absl::Duration kIo = absl::Seconds(3);
// Every refusal below is detected on the frame that causes it: far sooner
// than the receiver's io_timeout.
constexpr absl::Duration kPrompt = absl::Seconds(2);
constexpr uint64_t kRegionPages = 16;
constexpr uint64_t kRegionSize = kRegionPages * kMigrationPageSize;

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    names.push_back(entry.path().string());
  }
  return names;
}

// A receiver running ReceiveOne() on a thread, and the raw client
// connection a test speaks to it through.
class RawSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    base_ = TempDir(absl::StrCat("input_", name));
    root_ = absl::StrCat(base_, "/root");
    std::filesystem::create_directories(root_);
    ReceiverOptions options;
    options.root_dir = root_;
    options.io_timeout = kIo;
    options.accept_timeout = absl::Seconds(10);
    // Longer than any test: a stranger is dropped for what it sends, not
    // for its silence (tests of that set their own).
    options.handshake_timeout = absl::Seconds(60);
    ASSERT_OK_AND_ASSIGN(receiver_, Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), options));
    thread_ = std::thread([this] {
      result_ = receiver_->ReceiveOne();
      finished_ = absl::Now();
    });
    ASSERT_OK_AND_ASSIGN(conn_, Connection::Connect(receiver_->endpoint(), kIo));
  }

  void TearDown() override {
    if (thread_.joinable()) {
      receiver_->Cancel();
      thread_.join();
    }
  }

  // Waits for ReceiveOne() and checks it ended within kPrompt of `since`.
  absl::Status Result(absl::Time since) {
    thread_.join();
    EXPECT_LT(finished_ - since, kPrompt) << "ReceiveOne() was not prompt";
    return result_.status();
  }

  absl::Status Send(wire::FrameType type, const google::protobuf::MessageLite& message) {
    return wire::WriteFrame(*conn_, type, message, kIo);
  }
  absl::Status SendBytes(const std::string& bytes) {
    const iovec piece{const_cast<char*>(bytes.data()), bytes.size()};
    return conn_->WriteAll(absl::MakeConstSpan(&piece, 1), kIo);
  }

  // Reads one whole payload-less frame of type `type` into `out`.
  absl::Status Read(wire::FrameType type, google::protobuf::MessageLite* out) {
    absl::StatusOr<wire::IncomingFrame> frame = wire::ReadFrameStart(*conn_, kIo);
    if (!frame.ok()) return frame.status();
    if (frame->header.type != type) {
      return absl::InternalError(absl::StrCat("got a ", wire::FrameTypeName(frame->header.type),
                                              " frame, expected ",
                                              wire::FrameTypeName(type)));
    }
    return wire::FinishFrame(*frame, out);
  }

  // The receiver answered with an Abort carrying `code` (and `message`),
  // then closed.
  void ExpectAbortThenEof(absl::StatusCode code, const std::string& message = "") {
    proto::Abort abort;
    ASSERT_OK(Read(wire::FrameType::kAbort, &abort));
    EXPECT_EQ(abort.code(), static_cast<int>(code)) << abort.message();
    EXPECT_THAT(abort.message(), ::testing::HasSubstr(message));
    EXPECT_EQ(abort.role(), proto::ROLE_DESTINATION);
    EXPECT_THAT(wire::ReadFrameStart(*conn_, kIo), StatusIs(absl::StatusCode::kUnavailable));
  }

  void SendHello() {
    ASSERT_OK(Send(wire::FrameType::kHello, MakeHello(proto::ROLE_SOURCE, 0, 1, "id")));
    proto::Hello reply;
    ASSERT_OK(Read(wire::FrameType::kHello, &reply));
    ASSERT_OK(CheckHello(reply, proto::ROLE_DESTINATION));
  }

  // Hello, then `table`, then the table's Ack: the receiver is in round 0.
  void Handshake(const proto::RegionTable& table) {
    ASSERT_NO_FATAL_FAILURE(SendHello());
    ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
    ASSERT_EQ(ack.status_code(), 0);
  }

  // One anonymous region of kRegionPages pages at guest address 0.
  static proto::RegionTable AnonymousTable() {
    proto::RegionTable table;
    proto::RegionInfo* r = table.add_regions();
    r->set_index(0);
    r->set_guest_addr(0);
    r->set_size(kRegionSize);
    r->set_page_size(kMigrationPageSize);
    r->set_backing(proto::BACKING_ANONYMOUS);
    r->set_prot(3);
    return table;
  }

  static proto::RegionTable FileTable(const std::string& path) {
    proto::RegionTable table = AnonymousTable();
    table.mutable_regions(0)->set_backing(proto::BACKING_FILE);
    table.mutable_regions(0)->set_file_path(path);
    table.mutable_regions(0)->set_flags(proto::REGION_FLAG_SHARED);
    return table;
  }

  static proto::PageBatch Batch(uint32_t region, proto::Encoding encoding, uint64_t first_page,
                                uint64_t count, uint32_t round = 0) {
    proto::PageBatch batch;
    batch.set_region_index(region);
    batch.set_encoding(encoding);
    batch.set_round(round);
    proto::PageRun* run = batch.add_runs();
    run->set_first_page(first_page);
    run->set_count(count);
    return batch;
  }

  // Sends a RAW PAGE_BATCH frame with `payload` whose message carries the
  // page hashes of `header_payload` (the same bytes unless a test corrupts
  // them after encoding), as a source does. The receiver may refuse the
  // frame before reading its payload and close: the write's outcome is not
  // the test's subject.
  void SendBatch(proto::PageBatch batch, const std::vector<uint8_t>& header_payload,
                 const std::vector<uint8_t>& payload,
                 uint16_t flags = wire::kFramePagesHashed) {
    for (size_t off = 0; off + kMigrationPageSize <= header_payload.size();
         off += kMigrationPageSize) {
      batch.add_page_hashes(HashPage(header_payload.data() + off));
    }
    const absl::Span<const uint8_t> piece(header_payload);
    ASSERT_OK_AND_ASSIGN(wire::EncodedFrame frame,
                         wire::EncodeFrame(wire::FrameType::kPageBatch, batch,
                                           absl::MakeConstSpan(&piece, 1), flags));
    const iovec pieces[] = {
        {frame.header.data(), frame.header.size()},
        {frame.message.data(), frame.message.size()},
        {const_cast<uint8_t*>(payload.data()), payload.size()},
    };
    (void)conn_->WriteAll(absl::MakeConstSpan(pieces), kIo);
  }

  // The final round's end, the device state and a completion with
  // `digests`: what a source sends after its last page.
  void Finish(const std::vector<proto::RegionDigest>& digests, uint32_t round = 0,
              uint64_t pages_sent = kRegionPages) {
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    marker.set_final(true);
    ASSERT_OK(Send(wire::FrameType::kIterationMarker, marker));
    proto::DeviceState device;
    device.set_device_id("vmm");
    device.set_format_version(1);
    device.set_state("state");
    ASSERT_OK(Send(wire::FrameType::kDeviceState, device));
    proto::Completion completion;
    for (const proto::RegionDigest& d : digests) *completion.add_digests() = d;
    completion.set_rounds(round + 1);
    completion.set_total_pages_sent(pages_sent);
    ASSERT_OK(Send(wire::FrameType::kCompletion, completion));
  }

  void ReadVerified() {
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_VERIFIED);
    ASSERT_EQ(ack.status_code(), 0);
  }

  // A broken handshake does not end ReceiveOne(): the bad connection was
  // answered and dropped, and the next source is received as usual.
  void ExpectTheNextSourceIsReceived() {
    ASSERT_OK_AND_ASSIGN(conn_, Connection::Connect(receiver_->endpoint(), kIo));
    ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
    ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
    proto::Ack committed;
    ASSERT_OK(Read(wire::FrameType::kAck, &committed));
    EXPECT_EQ(committed.status_code(), 0);
    EXPECT_OK(Result(absl::Now()));
  }

  static proto::Ack HandoverAck() {
    proto::Ack ack;
    ack.set_kind(proto::ACK_HANDOVER);
    return ack;
  }

  // Handshake, one zero batch for every page and a correct completion for
  // FileTable: the receiver has verified everything and waits for the
  // handover.
  void UpToTheHandover() {
    ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
    ASSERT_OK(Send(wire::FrameType::kPageBatch,
                   Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
    ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, std::vector<uint8_t>(kRegionSize, 0))}));
    ASSERT_NO_FATAL_FAILURE(ReadVerified());
  }

  // The page hashes of a source that sent every page of `contents`.
  static PageHashes SentHashes(const std::vector<uint8_t>& contents) {
    PageHashes hashes(contents.size() / kMigrationPageSize);
    for (uint64_t p = 0; p < hashes.pages(); ++p) {
      hashes.Set(p, HashPage(contents.data() + p * kMigrationPageSize));
    }
    return hashes;
  }

  // The completion digest of such a source, for region `region`.
  static proto::RegionDigest Digest(uint32_t region, const std::vector<uint8_t>& contents) {
    std::vector<PageHashes> sent;
    sent.push_back(SentHashes(contents));
    proto::Completion completion;
    AddDigests(sent, &completion);
    proto::RegionDigest d = completion.digests(0);
    d.set_region_index(region);
    return d;
  }

  std::string base_;  // Holds root_ and nothing else.
  std::string root_;
  std::unique_ptr<Receiver> receiver_;
  std::thread thread_;
  absl::StatusOr<ReceivedMigration> result_ = absl::UnknownError("not run");
  absl::Time finished_;
  std::unique_ptr<Connection> conn_;
};

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

TEST_F(RawSourceTest, PageBatchWithAFlippedPayloadByteIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
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

TEST_F(RawSourceTest, HelloLenAboveTheLimitIsAnsweredWithResourceExhaustedAndDropped) {
  wire::FrameHeader header;
  header.type = wire::FrameType::kHello;
  header.message_len = static_cast<uint32_t>(wire::kMaxMessageSize + 1);
  const wire::FrameHeaderBytes bytes = wire::EncodeFrameHeader(header);
  ASSERT_OK(SendBytes(std::string(bytes.begin(), bytes.end())));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kResourceExhausted));
  ExpectTheNextSourceIsReceived();
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

TEST_F(RawSourceTest, SeveralChannelsWithoutMultiChannelAreRefused) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 2, "id");
  hello.set_features(proto::FEATURE_PAGE_HASHES | proto::FEATURE_ZERO_PAGES);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(
      absl::StatusCode::kFailedPrecondition,
      "source asks for 2 channels without offering FEATURE_MULTI_CHANNEL"));
  ExpectTheNextSourceIsReceived();
}

TEST_F(RawSourceTest, BatchNamingARegionPastTheTableIsOutOfRange) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(1, proto::ENCODING_ZERO, 0, 1)));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kOutOfRange));
  EXPECT_THAT(Result(sent), StatusIs(absl::StatusCode::kOutOfRange));
}

TEST_F(RawSourceTest, RawRunPastTheRegionEndIsOutOfRangeAndRemovesTheStagingFile) {
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

TEST_F(RawSourceTest, RawBatchWhosePayloadLenDisagreesWithItsRunsIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  // Runs say 2 pages; the payload carries 1.
  const std::vector<uint8_t> page(kMigrationPageSize, 0x11);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 0, 2), page, page));
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

// A broken source sends a page twice in round 0, RAW then ZERO: the memory
// must hold what the last one says (zeros), as the recorded hash does.
TEST_F(RawSourceTest, ZeroRunOverAPageThatLandedInRound0ClearsIt) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  const std::vector<uint8_t> page(kMigrationPageSize, 0x77);
  ASSERT_NO_FATAL_FAILURE(SendBatch(Batch(0, proto::ENCODING_RAW, 3, 1), page, page));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, std::vector<uint8_t>(kRegionSize, 0))}, 0,
                                 kRegionPages + 1));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
  proto::Ack committed;
  ASSERT_OK(Read(wire::FrameType::kAck, &committed));
  ASSERT_OK(Result(absl::Now()));
  const uint8_t* data = result_->memory.region(0).region().as_ptr();
  EXPECT_EQ(std::count(data, data + kRegionSize, 0), static_cast<long>(kRegionSize));
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

TEST_F(RawSourceTest, HelloWithoutPageHashesIsAnsweredWithFailedPreconditionAndDropped) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_features(proto::FEATURE_ZERO_PAGES | proto::FEATURE_MULTI_CHANNEL);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kFailedPrecondition,
                                             "does not offer FEATURE_PAGE_HASHES"));
  ExpectTheNextSourceIsReceived();
}

// Handshakes run concurrently: a connection that never says anything does
// not hold up the source behind it (it would, for the whole handshake
// timeout, were connections served one at a time).
TEST_F(RawSourceTest, IdleConnectionDoesNotDelayTheSourceBehindIt) {
  std::unique_ptr<Connection> idle = std::move(conn_);  // Connected, silent.
  ExpectTheNextSourceIsReceived();  // Within kPrompt; the handshake timeout is 60 s.
}

TEST_F(RawSourceTest, AnswerToAnotherPageHashQueryIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  std::vector<uint8_t> contents(kRegionSize, 0);
  contents[0] = 1;
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}, 0, /*pages_sent=*/0));
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

// A page missing from the rounds is caught even when every page that did
// arrive is right.
TEST_F(RawSourceTest, PageNeverSentFailsVerification) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_OK(Send(wire::FrameType::kPageBatch,
                 Batch(0, proto::ENCODING_ZERO, 0, kRegionPages - 1)));
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, std::vector<uint8_t>(kRegionSize, 0))}, 0, kRegionPages - 1));
  proto::PageHashQuery query;
  ASSERT_OK(Read(wire::FrameType::kPageHashQuery, &query));
  std::vector<PageHashes> sent;
  sent.push_back(SentHashes(std::vector<uint8_t>(kRegionSize, 0)));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(query, sent));
  const absl::Time answered = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageHashList, list));
  EXPECT_THAT(Result(answered),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, ("page 15 (guest 0xf000) differs")));
}

TEST_F(RawSourceTest, CompletionWithoutDigestsIsReceivedUnverified) {
  ASSERT_NO_FATAL_FAILURE(Handshake(AnonymousTable()));
  ASSERT_NO_FATAL_FAILURE(Finish({}, 0, /*pages_sent=*/0));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
  proto::Ack committed;
  ASSERT_OK(Read(wire::FrameType::kAck, &committed));
  ASSERT_OK(Result(absl::Now()));
  EXPECT_FALSE(result_->verified);
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

// Two regions, two digests, but both for region 0: region 1's contents are
// never checked against the source.
TEST_F(RawSourceTest, CompletionDigestingOneRegionTwiceIsDataLoss) {
  proto::RegionTable table = AnonymousTable();
  proto::RegionInfo* second = table.add_regions();
  *second = table.regions(0);
  second->set_index(1);
  second->set_guest_addr(kRegionSize);
  ASSERT_NO_FATAL_FAILURE(Handshake(table));
  const std::vector<uint8_t> zero(kRegionSize, 0);
  const absl::Time sent = absl::Now();
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, zero), Digest(0, zero)}, 0, /*pages_sent=*/0));
  const absl::Status status = Result(sent);
  EXPECT_THAT(status, StatusIsWithMessage(absl::StatusCode::kDataLoss, ("given twice")));
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
