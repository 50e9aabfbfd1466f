// File: migration/wire/frame_io_test.cc
#include "migration/wire/frame_io.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/testing/fault_proxy.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig::wire {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Seconds(5);

iovec Piece(const void* data, size_t size) {
  return iovec{const_cast<void*>(data), size};
}

struct Pair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<FaultProxy> proxy;  // Null unless connected through one.
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
};

// A client/server pair over TCP loopback, through a FaultProxy with `fault`
// when one is given.
void MakePair(Pair* pair, const FaultProxy::Fault* fault = nullptr) {
  ASSERT_OK_AND_ASSIGN(pair->listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  Endpoint connect_to = pair->listener->local_endpoint();
  if (fault != nullptr) {
    ASSERT_OK_AND_ASSIGN(pair->proxy, FaultProxy::Start(connect_to, *fault));
    connect_to = pair->proxy->endpoint();
  }
  ASSERT_OK_AND_ASSIGN(pair->client, Connection::Connect(connect_to, kTimeout));
  ASSERT_OK_AND_ASSIGN(pair->server, pair->listener->Accept(kTimeout));
}

proto::PageBatch Batch(uint64_t pages) {
  proto::PageBatch batch;
  batch.set_region_index(3);
  batch.set_round(7);
  proto::PageRun* run = batch.add_runs();
  run->set_first_page(100);
  run->set_count(pages);
  return batch;
}

std::vector<uint8_t> Pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<uint8_t>(i * 31 + seed);
  }
  return bytes;
}

TEST(FrameIo, MessageOnlyFrameRoundTrips) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  proto::Ack ack;
  ack.set_round(5);
  ack.set_message("fine");
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));

  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  EXPECT_EQ(frame.header.type, FrameType::kAck);
  EXPECT_EQ(frame.header.payload_len, 0u);
  proto::Ack got;
  ASSERT_OK(FinishFrame(frame, &got));
  EXPECT_EQ(got.round(), 5u);
  EXPECT_EQ(got.message(), "fine");
}

TEST(FrameIo, PayloadScattersIntoTwoBuffers) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  // Three gathered pieces on the sender, two scattered buffers on the
  // receiver, with boundaries in different places.
  const std::vector<uint8_t> a = Pattern(4096, 1);
  const std::vector<uint8_t> b = Pattern(8192, 2);
  const std::vector<uint8_t> c = Pattern(4096, 3);
  const iovec payload[] = {Piece(a.data(), a.size()), Piece(b.data(), b.size()),
                           Piece(c.data(), c.size())};
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(4), payload,
                       kTimeout));

  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  EXPECT_EQ(frame.header.type, FrameType::kPageBatch);
  EXPECT_EQ(frame.header.payload_len, 16384u);
  proto::PageBatch batch;
  ASSERT_OK(ParseMessage(frame.header, frame.message, &batch));
  EXPECT_EQ(batch.runs(0).count(), 4u);

  std::vector<uint8_t> first(6000);
  std::vector<uint8_t> second(16384 - 6000);
  const iovec destination[] = {Piece(first.data(), first.size()),
                               Piece(second.data(), second.size())};
  ASSERT_OK(ReadPayloadAndVerify(*pair.server, frame, destination, kTimeout));

  std::vector<uint8_t> sent(a);
  sent.insert(sent.end(), b.begin(), b.end());
  sent.insert(sent.end(), c.begin(), c.end());
  std::vector<uint8_t> got(first);
  got.insert(got.end(), second.begin(), second.end());
  EXPECT_TRUE(got == sent);
}

TEST(FrameIo, FramesFollowEachOtherOnOneConnection) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  const std::vector<uint8_t> page = Pattern(4096, 9);
  const iovec payload[] = {Piece(page.data(), page.size())};
  proto::IterationMarker marker;
  marker.set_round(1);
  ASSERT_OK(
      WriteFrame(*pair.client, FrameType::kIterationMarker, marker, kTimeout));
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(1), payload,
                       kTimeout));
  ASSERT_OK(
      WriteFrame(*pair.client, FrameType::kIterationMarker, marker, kTimeout));

  ASSERT_OK_AND_ASSIGN(IncomingFrame one,
                       ReadFrameStart(*pair.server, kTimeout));
  ASSERT_OK(FinishFrame(one, &marker));
  ASSERT_OK_AND_ASSIGN(IncomingFrame two,
                       ReadFrameStart(*pair.server, kTimeout));
  std::vector<uint8_t> got(4096);
  const iovec destination[] = {Piece(got.data(), got.size())};
  ASSERT_OK(ReadPayloadAndVerify(*pair.server, two, destination, kTimeout));
  EXPECT_TRUE(got == page);
  ASSERT_OK_AND_ASSIGN(IncomingFrame three,
                       ReadFrameStart(*pair.server, kTimeout));
  ASSERT_OK(FinishFrame(three, &marker));
}

TEST(FrameIo, EncodeErrorsPassThroughAndWriteNothing) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  proto::Ack ack;
  // Wrong message type for the frame type.
  EXPECT_THAT(WriteFrame(*pair.client, FrameType::kHello, ack, kTimeout),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Payload on a type that cannot carry one.
  const iovec payload[] = {Piece("x", 1)};
  EXPECT_THAT(WriteFrame(*pair.client, FrameType::kAck, ack, payload, kTimeout),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Payload over the limit.
  std::vector<uint8_t> huge(kMaxPayloadSize + 1);
  const iovec too_big[] = {Piece(huge.data(), huge.size())};
  EXPECT_THAT(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(1), too_big,
                         kTimeout),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(pair.client->bytes_written(), 0u);
}

TEST(FrameIo, CleanCloseAtFrameBoundaryIsUnavailable) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  proto::Ack ack;
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  pair.client.reset();
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  ASSERT_OK(FinishFrame(frame, &ack));
  EXPECT_THAT(ReadFrameStart(*pair.server, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                  "peer closed the connection"));
}

// A whole PageBatch frame with a 4 KiB payload, as bytes.
std::string WholeFrame() {
  const std::vector<uint8_t> page = Pattern(4096, 4);
  const absl::Span<const uint8_t> pieces[] = {page};
  absl::StatusOr<EncodedFrame> frame =
      EncodeFrame(FrameType::kPageBatch, Batch(1), pieces);
  EXPECT_OK(frame.status());
  if (!frame.ok()) return "";
  std::string bytes(frame->header.begin(), frame->header.end());
  bytes += frame->message;
  bytes.append(page.begin(), page.end());
  return bytes;
}

// Writes the first `keep` bytes of WholeFrame(), then closes the connection.
void WriteTruncatedFrame(std::unique_ptr<Connection>& conn, size_t keep) {
  const std::string bytes = WholeFrame();
  ASSERT_LT(keep, bytes.size());
  const iovec out[] = {Piece(bytes.data(), keep)};
  ASSERT_OK(conn->WriteAll(out, kTimeout));
  conn.reset();
}

TEST(FrameIo, CloseInsideTheHeaderIsDataLoss) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  ASSERT_NO_FATAL_FAILURE(WriteTruncatedFrame(pair.client, 10));
  EXPECT_THAT(ReadFrameStart(*pair.server, kTimeout),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, CloseBetweenHeaderAndMessageIsDataLoss) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  ASSERT_NO_FATAL_FAILURE(WriteTruncatedFrame(pair.client, kFrameHeaderSize));
  EXPECT_THAT(ReadFrameStart(*pair.server, kTimeout),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, CloseInsideThePayloadIsDataLoss) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  const size_t payload_start = WholeFrame().size() - 4096;
  ASSERT_NO_FATAL_FAILURE(
      WriteTruncatedFrame(pair.client, payload_start + 100));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  std::vector<uint8_t> page(4096);
  const iovec destination[] = {Piece(page.data(), page.size())};
  EXPECT_THAT(ReadPayloadAndVerify(*pair.server, frame, destination, kTimeout),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, PayloadDestinationOfTheWrongSizeIsInvalidArgument) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  const std::vector<uint8_t> page = Pattern(4096, 5);
  const iovec payload[] = {Piece(page.data(), page.size())};
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(1), payload,
                       kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  std::vector<uint8_t> small(4095);
  const iovec destination[] = {Piece(small.data(), small.size())};
  EXPECT_THAT(ReadPayloadAndVerify(*pair.server, frame, destination, kTimeout),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Nothing was consumed: the right destination still works.
  std::vector<uint8_t> right(4096);
  const iovec good[] = {Piece(right.data(), right.size())};
  EXPECT_OK(ReadPayloadAndVerify(*pair.server, frame, good, kTimeout));
}

TEST(FrameIo, FinishFrameRejectsAFrameOfAnotherTypeAsDataLoss) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  proto::Ack ack;
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  proto::Completion completion;
  EXPECT_THAT(FinishFrame(frame, &completion),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, FinishFrameRefusesAFrameWithPayload) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  const std::vector<uint8_t> page = Pattern(4096, 6);
  const iovec payload[] = {Piece(page.data(), page.size())};
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(1), payload,
                       kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  proto::PageBatch batch;
  EXPECT_THAT(FinishFrame(frame, &batch),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameIo, ReadTimesOutWithDeadlineExceeded) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  EXPECT_THAT(ReadFrameStart(*pair.server, absl::Milliseconds(30)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(FrameIo, ShutdownUnblocksAReaderWithCancelled) {
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair));
  absl::Status status;
  std::thread reader([&] {
    status = ReadFrameStart(*pair.server, absl::Seconds(30)).status();
  });
  absl::SleepFor(absl::Milliseconds(30));
  pair.server->Shutdown();
  reader.join();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled));
}

TEST(FrameIo, CorruptedPayloadIsDataLoss) {
  proto::PageBatch batch = Batch(16);
  const size_t message_size = batch.ByteSizeLong();
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCorruptAt;
  fault.offset = kFrameHeaderSize + message_size + 12345;  // In the payload.
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair, &fault));

  const std::vector<uint8_t> pages = Pattern(16 * 4096, 7);
  const iovec payload[] = {Piece(pages.data(), pages.size())};
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kPageBatch, batch, payload,
                       kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  std::vector<uint8_t> got(pages.size());
  const iovec destination[] = {Piece(got.data(), got.size())};
  EXPECT_THAT(ReadPayloadAndVerify(*pair.server, frame, destination, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "checksum"));
}

TEST(FrameIo, CorruptedHeaderIsDataLoss) {
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCorruptAt;
  fault.offset = kFramePayloadLenOffset;  // A flipped length bit.
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair, &fault));
  proto::Ack ack;
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  EXPECT_THAT(ReadFrameStart(*pair.server, kTimeout),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, CorruptedMessageIsDataLoss) {
  proto::Ack ack;
  ack.set_message("a message long enough to hit");
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCorruptAt;
  fault.offset = kFrameHeaderSize + 5;
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair, &fault));
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  proto::Ack got;
  EXPECT_THAT(FinishFrame(frame, &got), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameIo, CutConnectionFailsWriterUnavailableAndReaderDataLoss) {
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.offset = 1 << 20;  // Inside the payload of the first frame.
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair, &fault));

  // 32 MiB: far more than the socket buffers of both hops hold, so the
  // writer is still writing when the proxy cuts, and gets the reset.
  const size_t kPayload = size_t{32} << 20;
  absl::Status read_status;
  std::thread reader([&] {
    absl::StatusOr<IncomingFrame> frame =
        ReadFrameStart(*pair.server, kTimeout);
    if (!frame.ok()) {
      read_status = frame.status();
      return;
    }
    std::vector<uint8_t> sink(kPayload);
    const iovec destination[] = {Piece(sink.data(), sink.size())};
    read_status =
        ReadPayloadAndVerify(*pair.server, *frame, destination, kTimeout);
  });
  std::vector<uint8_t> pages(kPayload, 0xAB);
  const iovec payload[] = {Piece(pages.data(), pages.size())};
  EXPECT_THAT(WriteFrame(*pair.client, FrameType::kPageBatch, Batch(8192),
                         payload, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
  reader.join();
  EXPECT_THAT(read_status, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(pair.server->bytes_read(), fault.offset);
}

TEST(FrameIo, CutExactlyAtAFrameBoundaryIsUnavailableForTheReader) {
  proto::Ack ack;
  ASSERT_OK_AND_ASSIGN(std::string one_frame,
                       SerializeFrame(FrameType::kAck, ack));
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.offset = one_frame.size();
  Pair pair;
  ASSERT_NO_FATAL_FAILURE(MakePair(&pair, &fault));
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  ASSERT_OK(WriteFrame(*pair.client, FrameType::kAck, ack, kTimeout));
  ASSERT_OK_AND_ASSIGN(IncomingFrame frame,
                       ReadFrameStart(*pair.server, kTimeout));
  ASSERT_OK(FinishFrame(frame, &ack));
  EXPECT_THAT(ReadFrameStart(*pair.server, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace livemig::wire
