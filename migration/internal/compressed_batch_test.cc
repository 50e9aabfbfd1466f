// File: migration/internal/compressed_batch_test.cc
//
// LandCompressedBatch reads a compressed payload as it arrives: what a
// header announces is not held before the bytes come.
#include "migration/internal/compressed_batch.h"

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Seconds(10);

TEST(LandCompressedBatch, HoldsOnlyThePayloadBytesThatArrived) {
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  ASSERT_OK(listener.status());
  auto source = Connection::Connect((*listener)->local_endpoint(), kTimeout);
  ASSERT_OK(source.status());
  auto destination = (*listener)->Accept(kTimeout);
  ASSERT_OK(destination.status());

  // A batch of the most pages a compressed batch may hold, announcing a
  // payload one byte short of them, of which only 1 MiB ever comes.
  const uint64_t pages = wire::kMaxDecompressedSize / kMigrationPageSize;
  proto::PageBatch batch;
  batch.set_region_index(0);
  batch.set_encoding(proto::ENCODING_ZSTD);
  proto::PageRun* run = batch.add_runs();
  run->set_first_page(0);
  run->set_count(pages);
  const std::vector<uint8_t> payload(pages * kMigrationPageSize - 1, 0x5a);
  const absl::Span<const uint8_t> pieces[] = {payload};
  ASSERT_OK_AND_ASSIGN(wire::EncodedFrame frame,
                       wire::EncodeFrame(wire::FrameType::kPageBatch, batch, pieces));
  const iovec sent[] = {{frame.header.data(), frame.header.size()},
                        {frame.message.data(), frame.message.size()},
                        {const_cast<uint8_t*>(payload.data()), size_t{1} << 20}};
  ASSERT_OK((*source)->WriteAll(sent, kTimeout));
  (*source)->Shutdown();

  ASSERT_OK_AND_ASSIGN(wire::IncomingFrame incoming, wire::ReadFrameStart(**destination, kTimeout));
  proto::PageBatch got;
  ASSERT_TRUE(got.ParseFromString(incoming.message));
  std::vector<uint8_t> memory(pages * kMigrationPageSize);
  const iovec into[] = {{memory.data(), memory.size()}};
  wire::BatchDecompressor decompressor;
  EXPECT_THAT(LandCompressedBatch(**destination, incoming, got, pages, into, wire::Codec::kZstd,
                                  decompressor, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "truncated in its payload"));
  // It held at most the megabyte that came and the piece it was reading
  // (before: the whole 64 MiB the header announced, at once).
  EXPECT_LE(decompressor.input_bytes(), size_t{2} << 20);
}

}  // namespace
}  // namespace livemig::migration_internal
