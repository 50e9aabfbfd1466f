// File: migration/testing/fault_proxy_test.cc
#include "migration/testing/fault_proxy.h"

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/wire/frame_codec.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using Fault = FaultProxy::Fault;

constexpr absl::Duration kTimeout = absl::Seconds(5);

iovec Piece(const void* data, size_t size) {
  return iovec{const_cast<void*>(data), size};
}

// A server listener, a proxy in front of it, and one client/server pair
// connected through the proxy.
struct Rig {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<FaultProxy> proxy;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
};

void MakeRig(Fault fault, Rig* rig) {
  ASSERT_OK_AND_ASSIGN(rig->listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  ASSERT_OK_AND_ASSIGN(
      rig->proxy, FaultProxy::Start(rig->listener->local_endpoint(), fault));
  ASSERT_OK_AND_ASSIGN(rig->client,
                       Connection::Connect(rig->proxy->endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(rig->server, rig->listener->Accept(kTimeout));
}

std::vector<uint8_t> Pattern(size_t size) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  return bytes;
}

TEST(FaultProxy, ForwardsBothWaysUnchangedWithoutFault) {
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(Fault{}, &rig));
  const std::vector<uint8_t> sent = Pattern(1 << 20);
  std::vector<uint8_t> got(sent.size());
  std::thread reader([&] {
    const iovec in[] = {Piece(got.data(), got.size())};
    EXPECT_OK(rig.server->ReadExact(in, kTimeout));
  });
  const iovec out[] = {Piece(sent.data(), sent.size())};
  ASSERT_OK(rig.client->WriteAll(out, kTimeout));
  reader.join();
  EXPECT_TRUE(got == sent);

  const iovec reply[] = {Piece("pong", 4)};
  ASSERT_OK(rig.server->WriteAll(reply, kTimeout));
  char buffer[4] = {};
  const iovec reply_in[] = {Piece(buffer, 4)};
  ASSERT_OK(rig.client->ReadExact(reply_in, kTimeout));
  EXPECT_EQ(std::string(buffer, 4), "pong");
  // The pump counts a chunk after its write returns, which may be after the
  // reader has it: wait briefly for the counter.
  for (int i = 0; i < 200 && rig.proxy->bytes_forwarded() < sent.size() + 4;
       ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(rig.proxy->bytes_forwarded(), sent.size() + 4);
}

TEST(FaultProxy, PassesEndOfStreamOn) {
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(Fault{}, &rig));
  const iovec out[] = {Piece("abc", 3)};
  ASSERT_OK(rig.client->WriteAll(out, kTimeout));
  rig.client.reset();
  char buffer[3] = {};
  const iovec in[] = {Piece(buffer, 3)};
  ASSERT_OK(rig.server->ReadExact(in, kTimeout));
  EXPECT_THAT(rig.server->ReadExact(in, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FaultProxy, CorruptAtFlipsExactlyOneBit) {
  Fault fault;
  fault.kind = Fault::Kind::kCorruptAt;
  fault.offset = 100000;
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(fault, &rig));
  const std::vector<uint8_t> sent = Pattern(200000);
  std::vector<uint8_t> got(sent.size());
  std::thread reader([&] {
    const iovec in[] = {Piece(got.data(), got.size())};
    EXPECT_OK(rig.server->ReadExact(in, kTimeout));
  });
  const iovec out[] = {Piece(sent.data(), sent.size())};
  ASSERT_OK(rig.client->WriteAll(out, kTimeout));
  reader.join();
  for (size_t i = 0; i < sent.size(); ++i) {
    if (i == fault.offset) {
      EXPECT_EQ(got[i], sent[i] ^ 0x01);
    } else if (got[i] != sent[i]) {
      ADD_FAILURE() << "byte " << i << " changed";
      break;
    }
  }
}

TEST(FaultProxy, CorruptAtLeavesTheOtherDirectionAlone) {
  Fault fault;
  fault.kind = Fault::Kind::kCorruptAt;
  fault.offset = 0;
  fault.client_to_server = false;
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(fault, &rig));
  const iovec up[] = {Piece("A", 1)};
  ASSERT_OK(rig.client->WriteAll(up, kTimeout));
  char byte = 0;
  const iovec in[] = {Piece(&byte, 1)};
  ASSERT_OK(rig.server->ReadExact(in, kTimeout));
  EXPECT_EQ(byte, 'A');
  ASSERT_OK(rig.server->WriteAll(up, kTimeout));
  ASSERT_OK(rig.client->ReadExact(in, kTimeout));
  EXPECT_EQ(byte, 'A' ^ 0x01);
}

TEST(FaultProxy, CutAfterDeliversExactlyOffsetBytesThenEof) {
  Fault fault;
  fault.kind = Fault::Kind::kCutAfter;
  fault.offset = 1000;
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(fault, &rig));
  const std::vector<uint8_t> sent = Pattern(5000);
  const iovec out[] = {Piece(sent.data(), sent.size())};
  // Small enough to fit in the socket buffers: the write itself succeeds.
  ASSERT_OK(rig.client->WriteAll(out, kTimeout));
  std::vector<uint8_t> got(sent.size());
  const iovec in[] = {Piece(got.data(), got.size())};
  EXPECT_THAT(rig.server->ReadExact(in, kTimeout),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(rig.server->bytes_read(), 1000u);
  EXPECT_TRUE(std::equal(sent.begin(), sent.begin() + 1000, got.begin()));
  // The client side was shut down as well.
  EXPECT_THAT(rig.client->ReadExact(in, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FaultProxy, CutAfterMakesALargeWriterFailWithUnavailable) {
  Fault fault;
  fault.kind = Fault::Kind::kCutAfter;
  fault.offset = 1 << 20;
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(fault, &rig));
  std::thread reader([&] {
    std::vector<uint8_t> sink(size_t{32} << 20);
    const iovec in[] = {Piece(sink.data(), sink.size())};
    EXPECT_THAT(rig.server->ReadExact(in, kTimeout),
                StatusIs(absl::StatusCode::kDataLoss));
  });
  // Far more than the socket buffers on both hops can absorb.
  std::vector<uint8_t> big(size_t{32} << 20);
  const iovec out[] = {Piece(big.data(), big.size())};
  EXPECT_THAT(rig.client->WriteAll(out, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
  reader.join();
}

TEST(FaultProxy, FaultOnlyHitsTheChosenConnection) {
  Fault fault;
  fault.kind = Fault::Kind::kCutAfter;
  fault.offset = 0;
  fault.connection_index = 1;
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  ASSERT_OK_AND_ASSIGN(auto proxy,
                       FaultProxy::Start(listener->local_endpoint(), fault));
  ASSERT_OK_AND_ASSIGN(auto first_client,
                       Connection::Connect(proxy->endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto first_server, listener->Accept(kTimeout));
  ASSERT_OK_AND_ASSIGN(auto second_client,
                       Connection::Connect(proxy->endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto second_server, listener->Accept(kTimeout));

  char byte = 'x';
  const iovec piece[] = {Piece(&byte, 1)};
  ASSERT_OK(first_client->WriteAll(piece, kTimeout));
  EXPECT_OK(first_server->ReadExact(piece, kTimeout));
  EXPECT_THAT(second_server->ReadExact(piece, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(FaultProxy, DestructorStopsWithConnectionsOpen) {
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(Fault{}, &rig));
  rig.proxy.reset();
  char byte = 0;
  const iovec in[] = {Piece(&byte, 1)};
  EXPECT_THAT(rig.server->ReadExact(in, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

// A cut placed at a protocol event: bytes into the second PAGE_BATCH of
// round 1, wherever the frames before it end.
TEST(FaultProxy, CutsInsideTheChosenPageBatchOfTheChosenRound) {
  Fault fault;
  fault.kind = Fault::Kind::kCutAfter;
  fault.in_round = 1;
  fault.batch = 1;
  fault.offset = 100;
  Rig rig;
  ASSERT_NO_FATAL_FAILURE(MakeRig(fault, &rig));
  auto frame = [](wire::FrameType type, const google::protobuf::MessageLite& m,
                  size_t payload) {
    const std::vector<uint8_t> bytes(payload, 0xab);
    const absl::Span<const uint8_t> piece(bytes);
    absl::StatusOr<wire::EncodedFrame> f = wire::EncodeFrame(
        type, m, payload ? wire::PayloadPieces(&piece, 1) : wire::PayloadPieces());
    EXPECT_OK(f.status());
    std::string all(f->header.begin(), f->header.end());
    all += f->message;
    all.append(bytes.begin(), bytes.end());
    return all;
  };
  proto::PageBatch batch;
  batch.set_encoding(proto::ENCODING_RAW);
  batch.add_runs()->set_count(1);
  proto::IterationMarker marker;
  // Round 0: two batches and its marker; round 1: a batch, then the one cut.
  std::string stream;
  for (int i = 0; i < 2; ++i) stream += frame(wire::FrameType::kPageBatch, batch, 4096);
  stream += frame(wire::FrameType::kIterationMarker, marker, 0);
  stream += frame(wire::FrameType::kPageBatch, batch, 4096);
  const size_t cut = stream.size() + 100;
  stream += frame(wire::FrameType::kPageBatch, batch, 4096);
  stream += frame(wire::FrameType::kPageBatch, batch, 4096);
  std::string got(stream.size(), '\0');
  absl::StatusOr<size_t> read_total = size_t{0};
  std::thread reader([&] {
    size_t total = 0;
    while (total < got.size()) {
      absl::StatusOr<size_t> n = rig.server->ReadSome(&got[total], got.size() - total, kTimeout);
      if (!n.ok()) break;
      total += *n;
    }
    read_total = total;
  });
  const iovec out[] = {Piece(stream.data(), stream.size())};
  (void)rig.client->WriteAll(out, kTimeout);  // May fail once the cut resets it.
  reader.join();
  ASSERT_OK(read_total.status());
  EXPECT_EQ(*read_total, cut);
  EXPECT_EQ(got.substr(0, cut), stream.substr(0, cut));
}

}  // namespace
}  // namespace livemig
