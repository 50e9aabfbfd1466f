// Page-batch compression across the protocol (protocol.h): a Receiver fed
// hand-crafted ZSTD and LZ4 batches by a raw Connection (RawSourceTest,
// migration/testing/raw_source.h) — well-formed ones, and ones whose stream
// is corrupt, whose payload length lies, or that decompress to more or fewer
// bytes than their pages — and the negotiation in the Hello: a destination
// that does not accept the codec refuses it, naming it, and a Sender asking
// for it fails before any page is sent.
#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
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
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/testing/raw_source.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::kIo;
using ::livemig::testing::kRegionPages;
using ::livemig::testing::kRegionSize;
using ::livemig::testing::RawSourceTest;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Pages that compress well: text from a small vocabulary.
std::vector<uint8_t> TextPages(uint64_t pages, uint32_t seed) {
  static const char* const kWords[] = {"static ", "inline ", "return ", "const ",
                                       "{\n", "};\n", "if (", ") ", "int ", "x; "};
  std::mt19937 rng(seed);
  std::vector<uint8_t> out;
  while (out.size() < pages * kMigrationPageSize) {
    const char* w = kWords[rng() % 10];
    out.insert(out.end(), w, w + std::strlen(w));
  }
  out.resize(pages * kMigrationPageSize);
  return out;
}

std::vector<uint8_t> Packed(wire::Codec codec, const std::vector<uint8_t>& pages) {
  auto compressor = wire::BatchCompressor::Create({codec, 0}, pages.size());
  EXPECT_TRUE(compressor.ok()) << compressor.status();
  if (!compressor.ok()) return {};
  std::optional<absl::Span<const uint8_t>> packed = (*compressor)->Compress(pages);
  EXPECT_TRUE(packed.has_value());
  if (!packed.has_value()) return {};
  return std::vector<uint8_t>(packed->begin(), packed->end());
}

class CompressedSourceTest : public RawSourceTest,
                             public ::testing::WithParamInterface<wire::Codec> {
 protected:
  wire::Codec codec() const { return GetParam(); }
  proto::Encoding encoding() const { return EncodingFor(codec()); }

  // The Hello of a source asking for `codec`, and the destination's answer.
  void HandshakeAsking(wire::Codec codec) {
    proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
    OfferCompression({codec, 0}, &hello);
    ASSERT_OK(Send(wire::FrameType::kHello, hello));
    proto::Hello reply;
    ASSERT_OK(Read(wire::FrameType::kHello, &reply));
    ASSERT_OK(CheckHello(reply, proto::ROLE_DESTINATION));
    ASSERT_OK(CheckCompressionAnswer(reply, codec));
    ASSERT_OK(Send(wire::FrameType::kRegionTable, FileTable("guest.mem")));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
  }

  // A compressed PAGE_BATCH carrying the hashes of `pages`, whose header
  // announces `announced` payload bytes, followed by `payload`.
  void SendCompressed(proto::PageBatch batch, const std::vector<uint8_t>& pages,
                      uint64_t announced, const std::vector<uint8_t>& payload) {
    for (size_t off = 0; off + kMigrationPageSize <= pages.size(); off += kMigrationPageSize) {
      batch.add_page_hashes(HashPage(pages.data() + off));
    }
    // kFramePagesHashed: the checksum leaves the payload out, so a stand-in
    // of the announced size gives the header its length.
    const std::vector<uint8_t> stand_in(announced);
    const absl::Span<const uint8_t> piece(stand_in);
    ASSERT_OK_AND_ASSIGN(wire::EncodedFrame frame,
                         wire::EncodeFrame(wire::FrameType::kPageBatch, batch,
                                           absl::MakeConstSpan(&piece, 1),
                                           wire::kFramePagesHashed));
    const iovec pieces[] = {
        {frame.header.data(), frame.header.size()},
        {frame.message.data(), frame.message.size()},
        {const_cast<uint8_t*>(payload.data()), payload.size()},
    };
    (void)conn_->WriteAll(absl::MakeConstSpan(pieces), kIo);
  }

  // The batch is refused: an Abort with DataLoss naming `facts`, then EOF,
  // and ReceiveOne() fails the same way.
  void ExpectDataLoss(const std::vector<std::string>& facts) {
    const absl::Time since = absl::Now();
    proto::Abort abort;
    ASSERT_OK(Read(wire::FrameType::kAbort, &abort));
    EXPECT_EQ(abort.code(), static_cast<int>(absl::StatusCode::kDataLoss)) << abort.message();
    const absl::Status result = Result(since);
    EXPECT_THAT(result, StatusIs(absl::StatusCode::kDataLoss));
    for (const std::string& fact : facts) {
      EXPECT_THAT(abort.message(), HasSubstr(fact));
      EXPECT_THAT(std::string(result.message()), HasSubstr(fact));
    }
  }
};

INSTANTIATE_TEST_SUITE_P(Codecs, CompressedSourceTest,
                         ::testing::Values(wire::Codec::kZstd, wire::Codec::kLz4),
                         [](const ::testing::TestParamInfo<wire::Codec>& info) {
                           return std::string(wire::CodecName(info.param));
                         });

TEST_P(CompressedSourceTest, CompressedBatchesLandExactlyAndVerify) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> contents = TextPages(kRegionPages, 1);
  // Two batches: one run of 6 pages (straight into the mapping), then a
  // batch of two runs (through the scratch buffer).
  const std::vector<uint8_t> first(contents.begin(), contents.begin() + 6 * kMigrationPageSize);
  ASSERT_NO_FATAL_FAILURE(SendCompressed(Batch(0, encoding(), 0, 6), first,
                                         Packed(codec(), first).size(), Packed(codec(), first)));
  proto::PageBatch two = Batch(0, encoding(), 6, 4);
  proto::PageRun* run = two.add_runs();
  run->set_first_page(10);
  run->set_count(6);
  const std::vector<uint8_t> rest(contents.begin() + 6 * kMigrationPageSize, contents.end());
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(two, rest, Packed(codec(), rest).size(), Packed(codec(), rest)));
  ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, contents)}));
  ASSERT_NO_FATAL_FAILURE(ReadVerified());
  ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
  proto::Ack committed;
  ASSERT_OK(Read(wire::FrameType::kAck, &committed));
  EXPECT_EQ(committed.status_code(), 0);
  thread_.join();
  ASSERT_OK(result_);
  EXPECT_EQ(result_->compression, codec());
  EXPECT_EQ(result_->compressed_batches, 2u);
  EXPECT_EQ(result_->raw_pages, kRegionPages);
  ASSERT_EQ(result_->memory.num_regions(), 1u);
  EXPECT_EQ(0, std::memcmp(result_->memory.region(0).region().as_ptr(), contents.data(),
                           kRegionSize));
}

TEST_P(CompressedSourceTest, CorruptedCompressedPayloadIsDataLossNamingRegionAndRound) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> pages = TextPages(kRegionPages, 2);
  std::vector<uint8_t> packed = Packed(codec(), pages);
  // Whether the codec notices or the pages land wrong, the page hashes
  // (of the uncompressed pages) do.
  for (size_t i = packed.size() / 3; i < packed.size() / 3 + 16; ++i) packed[i] ^= 0xa5;
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(Batch(0, encoding(), 0, kRegionPages), pages, packed.size(), packed));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss({"region 0", "round 0"}));
}

TEST_P(CompressedSourceTest, PayloadNotSmallerThanItsPagesIsDataLossBeforeItIsRead) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> pages = TextPages(4, 3);
  // A "compressed" payload as long as the pages: never sent by a source.
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(Batch(0, encoding(), 0, 4), pages, pages.size(), pages));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss(
      {"region 0 round 0", "PAGE_BATCH of 4 pages carries 16384 compressed bytes",
       "a compressed batch carries 1 to 16383"}));
}

TEST_P(CompressedSourceTest, PayloadLengthShorterThanTheStreamIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> pages = TextPages(kRegionPages, 4);
  const std::vector<uint8_t> packed = Packed(codec(), pages);
  // The header announces half the stream; the rest follows as if it were
  // the next frame, which the receiver never gets to.
  ASSERT_NO_FATAL_FAILURE(SendCompressed(Batch(0, encoding(), 0, kRegionPages), pages,
                                         packed.size() / 2, packed));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss({"region 0 round 0"}));
}

TEST_P(CompressedSourceTest, StreamOfFewerPagesThanTheBatchIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> pages = TextPages(8, 5);
  const std::vector<uint8_t> packed = Packed(codec(), pages);
  // The batch names 16 pages (and carries 16 hashes); the stream holds 8.
  const std::vector<uint8_t> claimed = TextPages(kRegionPages, 5);
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(Batch(0, encoding(), 0, kRegionPages), claimed, packed.size(), packed));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss(
      {"region 0 round 0", "decompressed to 32768 bytes; the batch's pages are 65536 bytes"}));
}

TEST_P(CompressedSourceTest, StreamOfMorePagesThanTheBatchIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(HandshakeAsking(codec()));
  const std::vector<uint8_t> pages = TextPages(kRegionPages, 6);
  const std::vector<uint8_t> packed = Packed(codec(), pages);
  // The batch names 8 pages, the stream holds 16 (that nothing is written
  // past the batch's pages is compression_test's: here, the refusal).
  const std::vector<uint8_t> claimed(pages.begin(), pages.begin() + 8 * kMigrationPageSize);
  ASSERT_LT(packed.size(), claimed.size());
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(Batch(0, encoding(), 0, 8), claimed, packed.size(), packed));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss({"region 0 round 0", "holds more than the batch's"}));
}

TEST_P(CompressedSourceTest, CompressedBatchWithoutAgreeingOnItsCodecIsDataLoss) {
  ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));  // No compression asked.
  const std::vector<uint8_t> pages = TextPages(4, 7);
  const std::vector<uint8_t> packed = Packed(codec(), pages);
  ASSERT_NO_FATAL_FAILURE(
      SendCompressed(Batch(0, encoding(), 0, 4), pages, packed.size(), packed));
  ASSERT_NO_FATAL_FAILURE(ExpectDataLoss({"region 0 round 0", "agreed on compression none"}));
}

TEST_F(RawSourceTest, HelloAskingForAnUnknownCodecIsAnsweredWithFailedPreconditionAndDropped) {
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  hello.set_compression(static_cast<proto::Compression>(9));
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  ASSERT_NO_FATAL_FAILURE(ExpectAbortThenEof(absl::StatusCode::kFailedPrecondition,
                                             "peer names compression 9"));
  ASSERT_NO_FATAL_FAILURE(ExpectTheNextSourceIsReceived());
}

// Every channel of a migration asks for the same codec: channel 1 asking
// for zstd while channel 0 asked for none is refused at its Hello (before,
// the receiver took channel 0's choice and failed the first zstd batch).
TEST_F(RawSourceTest, ChannelsAskingForDifferentCodecsAreRefusedAtTheHello) {
  proto::Hello first = MakeHello(proto::ROLE_SOURCE, 0, 2, "id");
  first.set_features(first.features() | proto::FEATURE_MULTI_CHANNEL);
  ASSERT_OK(Send(wire::FrameType::kHello, first));
  proto::Hello reply;
  ASSERT_OK(Read(wire::FrameType::kHello, &reply));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Connection> second,
                       Connection::Connect(receiver_->endpoint(), kIo));
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 1, 2, "id");
  hello.set_features(hello.features() | proto::FEATURE_MULTI_CHANNEL);
  OfferCompression(wire::CompressionSpec{wire::Codec::kZstd, 1}, &hello);
  ASSERT_OK(wire::WriteFrame(*second, wire::FrameType::kHello, hello, kIo));
  ASSERT_OK_AND_ASSIGN(wire::IncomingFrame frame, wire::ReadFrameStart(*second, kIo));
  proto::Hello unused;
  EXPECT_THAT(ParseExpected(frame, wire::FrameType::kHello, &unused),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "peer aborted: channel 1 asks for compression COMPRESSION_ZSTD; "
                                  "channel 0 of the same migration asked for COMPRESSION_NONE"));
}

// A destination that accepts only `accepted`.
std::unique_ptr<Receiver> ReceiverAccepting(std::vector<wire::Codec> accepted,
                                            const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = kIo;
  options.accept_timeout = absl::Seconds(2);
  options.accept_compression = std::move(accepted);
  absl::StatusOr<std::unique_ptr<Receiver>> r =
      Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

TEST(CompressionHello, DestinationNotAcceptingTheCodecRefusesItNamingBoth) {
  std::unique_ptr<Receiver> receiver =
      ReceiverAccepting({wire::Codec::kLz4}, TempDir("refuse_raw"));
  ASSERT_NE(receiver, nullptr);
  absl::StatusOr<ReceivedMigration> result = absl::UnknownError("not run");
  std::thread thread([&] { result = receiver->ReceiveOne(); });
  ASSERT_OK_AND_ASSIGN(auto conn, Connection::Connect(receiver->endpoint(), kIo));
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  OfferCompression({wire::Codec::kZstd, 3}, &hello);
  ASSERT_OK(wire::WriteFrame(*conn, wire::FrameType::kHello, hello, kIo));
  proto::Hello reply;
  EXPECT_THAT(ReadExpected(*conn, wire::FrameType::kHello, &reply, kIo),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "the source asks for zstd compression; this destination "
                                  "accepts lz4"));
  thread.join();
  // The destination kept waiting for a source it could take, and says why
  // it took none.
  EXPECT_THAT(result, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                          "last refused: the source asks for zstd"));
}

TEST(CompressionHello, SenderAskingForARefusedCodecFailsBeforeAnyPageNamingIt) {
  const std::string root = TempDir("refuse_sender");
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(10);
  options.accept_timeout = absl::Seconds(3);
  options.accept_compression = {};  // Offers no codec.
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  ASSERT_NE(receiver, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 1 << 20, "", 0}}, Fill::kMixed, 3));
  SenderOptions send;
  send.destination = receiver->receiver->endpoint();
  send.channels = 2;
  send.io_timeout = absl::Seconds(10);
  send.compression = {wire::Codec::kZstd, 0};
  const uint64_t dirty_before = vm->memory().region(0).bitmap().CountDirty();
  Sender sender(send);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "asks for zstd compression; this destination accepts no "
                                  "compression"));
  EXPECT_EQ(sender.last_stats().normal, 0u);
  EXPECT_EQ(sender.last_stats().duplicate, 0u);
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), dirty_before);  // None taken.
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(CompressionHello, DestinationAnsweringWithoutTheCodecFailsTheSourceNamingIt) {
  proto::Hello reply = MakeHello(proto::ROLE_DESTINATION, 0, 1, "id");  // An older one.
  EXPECT_THAT(CheckCompressionAnswer(reply, wire::Codec::kLz4),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "the destination does not accept lz4 compression (its Hello "
                                  "answers none)"));
  EXPECT_OK(CheckCompressionAnswer(reply, wire::Codec::kNone));
  reply.set_compression(proto::COMPRESSION_LZ4);
  EXPECT_OK(CheckCompressionAnswer(reply, wire::Codec::kLz4));
}

}  // namespace
}  // namespace livemig
