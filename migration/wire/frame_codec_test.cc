// File: migration/wire/frame_codec_test.cc
#include "migration/wire/frame_codec.h"

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/testing/status_matchers.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig::wire {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

absl::Span<const uint8_t> AsBytes(absl::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()),
                             s.size());
}

// Concatenates what a sender would writev for `frame` and `payload`.
std::string Assemble(const EncodedFrame& frame, PayloadPieces payload = {}) {
  std::string out(reinterpret_cast<const char*>(frame.header.data()),
                  frame.header.size());
  out += frame.message;
  for (absl::Span<const uint8_t> piece : payload) {
    out.append(reinterpret_cast<const char*>(piece.data()), piece.size());
  }
  return out;
}

// Serializes `in` as a `type` frame, decodes it into a fresh M and checks the
// two messages are equal.
template <typename M>
void ExpectRoundTrip(FrameType type, const M& in) {
  ASSERT_OK_AND_ASSIGN(std::string bytes, SerializeFrame(type, in));
  M out;
  ASSERT_OK_AND_ASSIGN(FrameHeader header, DecodeFrame(bytes, &out));
  EXPECT_EQ(header.type, type);
  EXPECT_EQ(header.message_len, bytes.size() - kFrameHeaderSize);
  EXPECT_EQ(header.payload_len, 0u);
  EXPECT_TRUE(MessageDifferencer::Equals(in, out))
      << "in: " << in.ShortDebugString() << "\nout: " << out.ShortDebugString();
}

proto::PageBatch TwoRunBatch() {
  proto::PageBatch batch;
  batch.set_region_index(1);
  batch.set_encoding(proto::ENCODING_RAW);
  batch.set_round(3);
  proto::PageRun* run = batch.add_runs();
  run->set_first_page(10);
  run->set_count(2);
  run = batch.add_runs();
  run->set_first_page(40);
  run->set_count(1);
  return batch;
}

// Three 4 KiB pages with distinct contents, as two payload pieces.
struct Pages {
  Pages() : first(2 * 4096), second(4096) {
    for (size_t i = 0; i < first.size(); ++i) first[i] = uint8_t(i * 7 + 1);
    for (size_t i = 0; i < second.size(); ++i) second[i] = uint8_t(i * 13);
    pieces = {absl::MakeConstSpan(first), absl::MakeConstSpan(second)};
  }
  std::vector<uint8_t> first;
  std::vector<uint8_t> second;
  std::vector<absl::Span<const uint8_t>> pieces;
};

// A page batch frame with payload, fully assembled.
std::string PageBatchFrame(const Pages& pages) {
  absl::StatusOr<EncodedFrame> frame =
      EncodeFrame(FrameType::kPageBatch, TwoRunBatch(), pages.pieces);
  EXPECT_THAT(frame, IsOk());
  return Assemble(*frame, pages.pieces);
}

// --- Round trips -----------------------------------------------------------

TEST(FrameCodec, HelloRoundTrips) {
  proto::Hello hello;
  hello.set_magic(kHelloMagic);
  hello.set_protocol_version(kProtocolVersion);
  hello.set_min_version(1);
  hello.set_max_version(1);
  hello.set_page_size(4096);
  hello.set_features(proto::FEATURE_ZERO_PAGES | proto::FEATURE_XXH3_DIGEST);
  hello.set_migration_id(std::string("\x01\x02\x00\xff", 4));
  hello.set_channel_index(2);
  hello.set_channel_count(4);
  hello.set_role(proto::ROLE_SOURCE);
  hello.set_software("livemig test");
  ExpectRoundTrip(FrameType::kHello, hello);
}

TEST(FrameCodec, EmptyMessageRoundTrips) {
  ExpectRoundTrip(FrameType::kHello, proto::Hello());
}

TEST(FrameCodec, RegionTableRoundTrips) {
  proto::RegionTable table;
  proto::RegionInfo* anon = table.add_regions();
  anon->set_index(0);
  anon->set_guest_addr(0);
  anon->set_size(uint64_t{1} << 30);
  anon->set_page_size(4096);
  anon->set_backing(proto::BACKING_ANONYMOUS);
  anon->set_prot(3);
  proto::RegionInfo* file = table.add_regions();
  file->set_index(1);
  file->set_guest_addr(uint64_t{4} << 30);
  file->set_size(uint64_t{2} << 20);
  file->set_page_size(2 << 20);
  file->set_backing(proto::BACKING_FILE);
  file->set_file_path("guest/ram1");
  file->set_file_offset(uint64_t{2} << 20);
  file->set_prot(1);
  file->set_flags(proto::REGION_FLAG_SHARED | proto::REGION_FLAG_LOCKED);
  file->set_hugetlbfs(true);
  ExpectRoundTrip(FrameType::kRegionTable, table);
}

TEST(FrameCodec, ZeroPageBatchRoundTripsWithoutPayload) {
  proto::PageBatch batch = TwoRunBatch();
  batch.set_encoding(proto::ENCODING_ZERO);
  ExpectRoundTrip(FrameType::kPageBatch, batch);
}

TEST(FrameCodec, RawPageBatchRoundTripsWithPayloadAfterMessage) {
  Pages pages;
  const std::string bytes = PageBatchFrame(pages);

  proto::PageBatch out;
  absl::string_view payload;
  ASSERT_OK_AND_ASSIGN(FrameHeader header, DecodeFrame(bytes, &out, &payload));
  EXPECT_EQ(header.type, FrameType::kPageBatch);
  EXPECT_EQ(header.payload_len, 3u * 4096);
  EXPECT_TRUE(MessageDifferencer::Equals(out, TwoRunBatch()));
  ASSERT_EQ(payload.size(), 3u * 4096);
  EXPECT_EQ(0, std::memcmp(payload.data(), pages.first.data(), 2 * 4096));
  EXPECT_EQ(0,
            std::memcmp(payload.data() + 2 * 4096, pages.second.data(), 4096));
  // The payload is the frame's tail, raw: not a protobuf field.
  EXPECT_EQ(bytes.size(),
            kFrameHeaderSize + header.message_len + header.payload_len);
}

TEST(FrameCodec, IterationMarkerRoundTrips) {
  proto::IterationMarker marker;
  marker.set_round(7);
  marker.set_phase(proto::PHASE_END);
  marker.set_dirty_pages(12345);
  marker.set_final(true);
  ExpectRoundTrip(FrameType::kIterationMarker, marker);
}

TEST(FrameCodec, DeviceStateRoundTrips) {
  proto::DeviceState state;
  state.set_device_id("vcpu0");
  state.set_format_version(2);
  state.set_state(std::string(1000, '\0') + "regs");
  ExpectRoundTrip(FrameType::kDeviceState, state);
}

TEST(FrameCodec, CompletionRoundTrips) {
  proto::Completion completion;
  for (uint32_t i = 0; i < 3; ++i) {
    proto::RegionDigest* digest = completion.add_digests();
    digest->set_region_index(i);
    digest->set_root(0xfedcba9876543210ull + i);
    digest->set_page_count(262144);
  }
  completion.set_total_pages_sent(1000000);
  completion.set_rounds(5);
  ExpectRoundTrip(FrameType::kCompletion, completion);
}

TEST(FrameCodec, AckRoundTrips) {
  proto::Ack ack;
  ack.set_kind(proto::ACK_ROUND);
  ack.set_round(4);
  ack.set_status_code(static_cast<int32_t>(absl::StatusCode::kDataLoss));
  ack.set_message("region 1 digest mismatch");
  ExpectRoundTrip(FrameType::kAck, ack);
}

TEST(FrameCodec, AbortRoundTrips) {
  proto::Abort abort;
  abort.set_code(static_cast<int32_t>(absl::StatusCode::kFailedPrecondition));
  abort.set_message("no common protocol version");
  abort.set_role(proto::ROLE_DESTINATION);
  ExpectRoundTrip(FrameType::kAbort, abort);
}

// --- Header layout and checksums -------------------------------------------

TEST(FrameHeaderCodec, EncodeThenDecodeGivesTheSameHeader) {
  FrameHeader header;
  header.type = FrameType::kPageBatch;
  header.message_len = 1234;
  header.payload_len = 5 * 4096;
  header.checksum = 0x0123456789abcdefull;
  const FrameHeaderBytes bytes = EncodeFrameHeader(header);
  ASSERT_OK_AND_ASSIGN(FrameHeader decoded, DecodeFrameHeader(bytes));
  EXPECT_EQ(decoded, header);
}

TEST(FrameHeaderCodec, FieldsAreLittleEndianAtDocumentedOffsets) {
  FrameHeader header;
  header.type = FrameType::kPageBatch;
  header.message_len = 0x01020304;
  header.payload_len = 0x1122334455667788ull;
  header.checksum = 0xa1a2a3a4a5a6a7a8ull;
  const FrameHeaderBytes b = EncodeFrameHeader(header);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[0]), 4), "LMIG");
  EXPECT_EQ(b[kFrameTypeOffset], 3);
  EXPECT_EQ(b[kFrameTypeOffset + 1], 0);
  EXPECT_EQ(b[kFrameFlagsOffset], 0);
  EXPECT_EQ(b[kFrameMessageLenOffset], 0x04);
  EXPECT_EQ(b[kFrameMessageLenOffset + 3], 0x01);
  EXPECT_EQ(b[kFramePayloadLenOffset], 0x88);
  EXPECT_EQ(b[kFramePayloadLenOffset + 7], 0x11);
  EXPECT_EQ(b[kFrameChecksumOffset], 0xa8);
  EXPECT_EQ(b[kFrameChecksumOffset + 7], 0xa1);

  FrameHeaderBytes zeroed = b;
  std::memset(&zeroed[kFrameHeaderChecksumOffset], 0, 4);
  const auto expected =
      static_cast<uint32_t>(XXH3_64bits(zeroed.data(), zeroed.size()));
  uint32_t stored;
  std::memcpy(&stored, &b[kFrameHeaderChecksumOffset], 4);  // x86: LE host.
  EXPECT_EQ(stored, expected);
}

TEST(FrameChecksum, IsXxh3OfZeroedHeaderThenMessageThenPayload) {
  Pages pages;
  const std::string bytes = PageBatchFrame(pages);
  ASSERT_OK_AND_ASSIGN(FrameHeader header, DecodeFrameHeader(AsBytes(bytes)));

  std::string covered = bytes;
  std::memset(&covered[kFrameHeaderChecksumOffset], 0, 4);
  std::memset(&covered[kFrameChecksumOffset], 0, 8);
  EXPECT_EQ(header.checksum, XXH3_64bits(covered.data(), covered.size()));
}

TEST(FrameChecksum, DoesNotDependOnHowBytesAreSplit) {
  FrameHeader header;
  header.type = FrameType::kPageBatch;
  header.message_len = 10;
  header.payload_len = 4096;
  std::string data(4106, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 31);

  FrameChecksum whole(header);
  whole.Update(absl::string_view(data));
  FrameChecksum pieces(header);
  for (size_t i = 0; i < data.size(); i += 333) {
    pieces.Update(absl::string_view(data).substr(i, 333));
  }
  pieces.Update(nullptr, 0);
  EXPECT_EQ(whole.Finish(), pieces.Finish());

  pieces.Reset(header);
  pieces.Update(absl::string_view(data));
  EXPECT_EQ(whole.Finish(), pieces.Finish());
}

TEST(FrameChecksum, CoversHeaderFields) {
  FrameHeader a;
  a.type = FrameType::kPageBatch;
  a.payload_len = 4096;
  FrameHeader b = a;
  b.payload_len = 8192;
  EXPECT_NE(FrameChecksum(a).Finish(), FrameChecksum(b).Finish());
  FrameHeader c = a;
  c.checksum = 42;  // Ignored: the checksum cannot cover itself.
  EXPECT_EQ(FrameChecksum(a).Finish(), FrameChecksum(c).Finish());
}

// The receiver's path: header, then message, then payload read in pieces
// straight into its destination, then the checksum.
TEST(FrameCodec, StreamingReceiverVerifiesPayloadReadInPieces) {
  Pages pages;
  const std::string bytes = PageBatchFrame(pages);
  const absl::string_view wire(bytes);

  ASSERT_OK_AND_ASSIGN(
      FrameHeader header,
      DecodeFrameHeader(AsBytes(wire.substr(0, kFrameHeaderSize))));
  const absl::string_view message =
      wire.substr(kFrameHeaderSize, header.message_len);
  FrameChecksum checksum(header);
  checksum.Update(message);
  proto::PageBatch batch;
  ASSERT_OK(ParseMessage(header, message, &batch));
  EXPECT_EQ(batch.runs_size(), 2);

  std::vector<uint8_t> guest(header.payload_len);
  const absl::string_view payload =
      wire.substr(kFrameHeaderSize + header.message_len);
  for (size_t off = 0; off < payload.size(); off += 4096) {
    std::memcpy(&guest[off], payload.data() + off, 4096);
    checksum.Update(&guest[off], 4096);
  }
  EXPECT_OK(VerifyChecksum(header, checksum.Finish()));
}

// --- Corruption --------------------------------------------------------------

TEST(FrameCodec, EveryCorruptedHeaderByteIsDataLoss) {
  Pages pages;
  const std::string good = PageBatchFrame(pages);
  for (size_t i = 0; i < kFrameHeaderSize; ++i) {
    for (uint8_t bit : {0x01, 0x80}) {
      std::string bad = good;
      bad[i] = char(bad[i] ^ bit);
      EXPECT_THAT(DecodeFrameHeader(AsBytes(bad)),
                  StatusIs(absl::StatusCode::kDataLoss))
          << "byte " << i << " bit " << int(bit);
    }
  }
}

TEST(FrameCodec, CorruptedMessageByteIsDataLoss) {
  Pages pages;
  const std::string good = PageBatchFrame(pages);
  ASSERT_OK_AND_ASSIGN(FrameHeader header, DecodeFrameHeader(AsBytes(good)));
  for (size_t i = 0; i < header.message_len; ++i) {
    std::string bad = good;
    bad[kFrameHeaderSize + i] ^= 0x20;
    proto::PageBatch out;
    EXPECT_THAT(DecodeFrame(bad, &out),
                StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                    "frame type PAGE_BATCH checksum mismatch"))
        << "message byte " << i;
  }
}

TEST(FrameCodec, CorruptedPayloadByteIsDataLoss) {
  Pages pages;
  const std::string good = PageBatchFrame(pages);
  for (size_t i :
       {size_t{0}, size_t{4095}, size_t{4096}, size_t{3 * 4096 - 1}}) {
    std::string bad = good;
    bad[bad.size() - 3 * 4096 + i] ^= 0x01;
    proto::PageBatch out;
    EXPECT_THAT(DecodeFrame(bad, &out), StatusIs(absl::StatusCode::kDataLoss))
        << "payload byte " << i;
  }
}

TEST(FrameCodec, VerifyChecksumMismatchNamesTypeAndBothValues) {
  FrameHeader header;
  header.type = FrameType::kAck;
  header.checksum = 0xabc;
  EXPECT_OK(VerifyChecksum(header, 0xabc));
  const absl::Status status = VerifyChecksum(header, 0xdef);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(status.message(),
            "frame type ACK checksum mismatch: expected 0xabc got 0xdef");
}

TEST(FrameCodec, UnparsableMessageWithValidChecksumsIsDataLoss) {
  const std::string garbage("\xff\xff\xff", 3);  // A truncated varint tag.
  FrameHeader header;
  header.type = FrameType::kHello;
  header.message_len = garbage.size();
  FrameChecksum checksum(header);
  checksum.Update(garbage);
  header.checksum = checksum.Finish();
  const FrameHeaderBytes h = EncodeFrameHeader(header);
  const std::string bytes =
      std::string(reinterpret_cast<const char*>(h.data()), h.size()) + garbage;
  proto::Hello out;
  EXPECT_THAT(DecodeFrame(bytes, &out),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "do not parse as livemig.proto.Hello"));
}

// --- Malformed headers -------------------------------------------------------

FrameHeader ValidHeader() {
  FrameHeader header;
  header.type = FrameType::kHello;
  header.message_len = 16;
  return header;
}

TEST(FrameHeaderCodec, BadMagicIsDataLoss) {
  FrameHeaderBytes bytes = EncodeFrameHeader(ValidHeader());
  std::memcpy(&bytes[kFrameMagicOffset], "HTTP", 4);
  EXPECT_THAT(DecodeFrameHeader(bytes),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "bad frame magic 0x50545448"));
}

TEST(FrameHeaderCodec, UnknownTypeIsDataLoss) {
  FrameHeader header = ValidHeader();
  header.type =
      static_cast<FrameType>(static_cast<uint16_t>(kMaxFrameType) + 1);
  EXPECT_THAT(
      DecodeFrameHeader(EncodeFrameHeader(header)),
      StatusIsWithMessage(absl::StatusCode::kDataLoss, "unknown frame type 11"));
  header.type = static_cast<FrameType>(0xffff);
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameHeaderCodec, ZeroTypeIsDataLoss) {
  FrameHeader header = ValidHeader();
  header.type = FrameType::kReserved;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "RESERVED"));
  // An all-zero block of bytes is not a frame either.
  const FrameHeaderBytes zeros{};
  EXPECT_THAT(DecodeFrameHeader(zeros), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameHeaderCodec, UnknownFlagsAreDataLoss) {
  FrameHeader header = ValidHeader();
  header.flags = 0x8000;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "unsupported flags 0x8000"));
  header.type = FrameType::kPageBatch;
  header.flags = kFramePagesHashed | 0x2;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "unsupported flags 0x3"));
}

TEST(FrameHeaderCodec, PagesHashedFlagIsOnlyValidOnPageBatches) {
  FrameHeader header = ValidHeader();
  header.flags = kFramePagesHashed;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "frame type HELLO has unsupported flags 0x1"));
  header.type = FrameType::kPageBatch;
  EXPECT_OK(DecodeFrameHeader(EncodeFrameHeader(header)));
  EXPECT_THAT(EncodeFrame(FrameType::kAck, proto::Ack(), {}, kFramePagesHashed),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "frame type ACK given flags 0x1"));
}

// With kFramePagesHashed the message vouches for the payload: the frame
// checksum covers header and message only.
TEST(FrameCodec, PagesHashedChecksumLeavesThePayloadOut) {
  proto::PageBatch batch;
  batch.set_region_index(0);
  batch.set_encoding(proto::ENCODING_RAW);
  batch.add_runs()->set_count(1);
  batch.add_page_hashes(7);
  const std::string page(4096, 'p');
  const absl::Span<const uint8_t> piece(reinterpret_cast<const uint8_t*>(page.data()),
                                        page.size());
  ASSERT_OK_AND_ASSIGN(EncodedFrame hashed,
                       EncodeFrame(FrameType::kPageBatch, batch,
                                   absl::MakeConstSpan(&piece, 1), kFramePagesHashed));
  std::string frame(hashed.header.begin(), hashed.header.end());
  frame += hashed.message;
  frame += std::string(4096, 'q');  // Other bytes: still a valid frame.
  proto::PageBatch decoded;
  absl::string_view payload;
  ASSERT_OK_AND_ASSIGN(FrameHeader header, DecodeFrame(frame, &decoded, &payload));
  EXPECT_EQ(header.flags, kFramePagesHashed);
  EXPECT_FALSE(PayloadIsChecksummed(header));
  EXPECT_EQ(payload, std::string(4096, 'q'));
  // Without the flag the same substitution fails the checksum.
  ASSERT_OK_AND_ASSIGN(EncodedFrame plain,
                       EncodeFrame(FrameType::kPageBatch, batch, absl::MakeConstSpan(&piece, 1)));
  std::string plain_frame(plain.header.begin(), plain.header.end());
  plain_frame += plain.message;
  plain_frame += std::string(4096, 'q');
  EXPECT_THAT(DecodeFrame(plain_frame, &decoded),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "checksum mismatch"));
}

TEST(FrameCodec, PageHashQueryAndListRoundTrip) {
  proto::PageHashQuery query;
  query.set_region_index(2);
  query.set_first_page(4096);
  query.set_count(4096);
  ExpectRoundTrip(FrameType::kPageHashQuery, query);
  proto::PageHashList list;
  list.set_region_index(2);
  list.set_first_page(4096);
  list.add_hashes(0x1234);
  list.add_hashes(0x5678);
  ExpectRoundTrip(FrameType::kPageHashList, list);
  EXPECT_EQ(FrameTypeName(FrameType::kPageHashQuery), "PAGE_HASH_QUERY");
  EXPECT_EQ(FrameTypeName(FrameType::kPageHashList), "PAGE_HASH_LIST");
}

TEST(FrameHeaderCodec, OversizedMessageLenIsRefused) {
  FrameHeader header = ValidHeader();
  header.message_len = kMaxMessageSize;
  EXPECT_OK(DecodeFrameHeader(EncodeFrameHeader(header)));
  header.message_len = kMaxMessageSize + 1;
  EXPECT_THAT(
      DecodeFrameHeader(EncodeFrameHeader(header)),
      StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                          "message_len 1048577 exceeds kMaxMessageSize"));
  header.message_len = UINT32_MAX;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(FrameHeaderCodec, OversizedPayloadLenIsRefused) {
  FrameHeader header = ValidHeader();
  header.type = FrameType::kPageBatch;
  header.payload_len = kMaxPayloadSize;
  EXPECT_OK(DecodeFrameHeader(EncodeFrameHeader(header)));
  header.payload_len = kMaxPayloadSize + 1;
  EXPECT_THAT(
      DecodeFrameHeader(EncodeFrameHeader(header)),
      StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                          "payload_len 67108865 exceeds kMaxPayloadSize"));
  header.payload_len = UINT64_MAX;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(FrameHeaderCodec, PayloadOnTypeOtherThanPageBatchIsDataLoss) {
  FrameHeader header = ValidHeader();
  header.payload_len = 4096;
  EXPECT_THAT(DecodeFrameHeader(EncodeFrameHeader(header)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "frame type HELLO has payload_len 4096"));
}

TEST(FrameHeaderCodec, TruncatedHeaderIsDataLoss) {
  const FrameHeaderBytes bytes = EncodeFrameHeader(ValidHeader());
  for (size_t n = 0; n < kFrameHeaderSize; ++n) {
    EXPECT_THAT(DecodeFrameHeader(absl::MakeConstSpan(bytes.data(), n)),
                StatusIs(absl::StatusCode::kDataLoss))
        << n << " bytes";
  }
  EXPECT_THAT(DecodeFrameHeader(absl::MakeConstSpan(bytes.data(), 5)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "truncated frame header: 5 of 32 bytes"));
}

TEST(FrameCodec, TruncatedFrameIsDataLoss) {
  Pages pages;
  const std::string good = PageBatchFrame(pages);
  proto::PageBatch out;
  EXPECT_THAT(
      DecodeFrame(absl::string_view(good).substr(0, good.size() - 1), &out),
      StatusIsWithMessage(absl::StatusCode::kDataLoss,
                          "truncated frame of type PAGE_BATCH"));
}

TEST(FrameCodec, TrailingBytesAfterFrameAreInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(std::string bytes,
                       SerializeFrame(FrameType::kAck, proto::Ack()));
  proto::Ack out;
  EXPECT_THAT(DecodeFrame(bytes + "x", &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- Caller mistakes ---------------------------------------------------------

TEST(FrameCodec, ParseMessageRejectsMessageOfAnotherType) {
  ASSERT_OK_AND_ASSIGN(std::string bytes,
                       SerializeFrame(FrameType::kAck, proto::Ack()));
  proto::Abort wrong;
  EXPECT_THAT(DecodeFrame(bytes, &wrong),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "frame type ACK carries livemig.proto.Ack, "
                                  "not livemig.proto.Abort"));
}

TEST(FrameCodec, ParseMessageRejectsByteCountOtherThanMessageLen) {
  FrameHeader header = ValidHeader();
  proto::Hello out;
  EXPECT_THAT(ParseMessage(header, std::string(15, '\0'), &out),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameCodec, EncodeFrameRejectsMessageOfAnotherType) {
  EXPECT_THAT(EncodeFrame(FrameType::kHello, proto::Abort()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameCodec, EncodeFrameRejectsReservedAndUnknownTypes) {
  EXPECT_THAT(EncodeFrame(FrameType::kReserved, proto::Hello()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EncodeFrame(static_cast<FrameType>(99), proto::Hello()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameCodec, EncodeFrameRejectsPayloadOnTypeOtherThanPageBatch) {
  Pages pages;
  EXPECT_THAT(
      EncodeFrame(FrameType::kDeviceState, proto::DeviceState(), pages.pieces),
      StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FrameCodec, EncodeFrameRefusesOversizedMessage) {
  proto::DeviceState state;
  state.set_state(std::string(kMaxMessageSize, 's'));
  EXPECT_THAT(SerializeFrame(FrameType::kDeviceState, state),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(FrameCodec, EncodeFrameRefusesOversizedPayload) {
  // 65 views of the same 1 MiB: over the limit without 65 MiB of memory.
  const std::vector<uint8_t> mib(size_t{1} << 20);
  const std::vector<absl::Span<const uint8_t>> pieces(
      kMaxPayloadSize / mib.size() + 1, absl::MakeConstSpan(mib));
  EXPECT_THAT(EncodeFrame(FrameType::kPageBatch, TwoRunBatch(), pieces),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "exceeds kMaxPayloadSize"));
}

TEST(FrameTypeNames, NameKnownReservedAndUnknownTypes) {
  EXPECT_EQ(FrameTypeName(FrameType::kPageBatch), "PAGE_BATCH");
  EXPECT_EQ(FrameTypeName(FrameType::kReserved), "RESERVED");
  EXPECT_EQ(FrameTypeName(static_cast<FrameType>(42)), "UNKNOWN(42)");
  EXPECT_FALSE(IsKnownFrameType(FrameType::kReserved));
  EXPECT_TRUE(IsKnownFrameType(kMaxFrameType));
  EXPECT_FALSE(IsKnownFrameType(static_cast<FrameType>(42)));
  EXPECT_TRUE(FrameTypeAllowsPayload(FrameType::kPageBatch));
  EXPECT_FALSE(FrameTypeAllowsPayload(FrameType::kDeviceState));
}

}  // namespace
}  // namespace livemig::wire
