// File: migration/fuzz/frame_decoder_fuzzer.cc
//
// libFuzzer target for the frame codec (migration/wire/frame_codec.h) and
// the frame walk of protocol.h's FindAbort. Input: one control byte, then
// the bytes of one frame (or of several back to back, or junk).
//
//   control bit 0  repair the checksums and page hashes first
//                  (wire_model.h RepairStream), so mutations of types,
//                  flags, lengths and messages are judged by the rules behind
//                  the checksums rather than refused at them
//   control >> 1   where the streaming checksum is split (its result must not
//                  depend on the split)
//
// Invariants, each from the codec's documented contract:
//   - DecodeFrameHeader accepts exactly the headers the layout accepts
//     (wire_model.h HeaderIsValid), with DataLoss or ResourceExhausted (the
//     latter only for lengths above the limits) otherwise, and re-encoding an
//     accepted header gives back its 32 bytes;
//   - DecodeFrame accepts a frame only if its length is exactly what the
//     header says and its frame_checksum is the one the layout defines; a
//     longer input is InvalidArgument;
//   - an accepted frame re-encodes (EncodeFrame) to a frame that decodes to
//     the same type, flags, message and payload, byte for byte when the
//     message bytes were canonical protobuf;
//   - ParseMessage refuses a message object of the wrong type
//     (InvalidArgument);
//   - FindAbort only returns an Abort that a whole frame carried, and what
//     StatusFromAbort/PeerText make of it is non-OK and printable.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "migration/fuzz/fuzz_check.h"
#include "migration/fuzz/quiet_protobuf.h"
#include "migration/fuzz/wire_model.h"
#include "migration/protocol.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig::fuzz {
namespace {

absl::Span<const uint8_t> Bytes(absl::string_view s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

bool Printable(absl::string_view text) {
  for (const char c : text) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void CheckHeader(absl::string_view bytes) {
  const absl::StatusOr<wire::FrameHeader> header = wire::DecodeFrameHeader(Bytes(bytes));
  const bool valid = HeaderIsValid(bytes);
  LIVEMIG_FUZZ_CHECK(header.ok() == valid, "DecodeFrameHeader says ", header.status().ToString(),
                     " but the documented layout says ", valid ? "valid" : "invalid");
  if (!header.ok()) {
    const absl::StatusCode code = header.status().code();
    LIVEMIG_FUZZ_CHECK(code == absl::StatusCode::kDataLoss ||
                           code == absl::StatusCode::kResourceExhausted,
                       "a bad header must be DataLoss or ResourceExhausted: ",
                       header.status().ToString());
    if (code == absl::StatusCode::kResourceExhausted) {
      const RawHeader raw = ReadRawHeader(bytes);
      LIVEMIG_FUZZ_CHECK(raw.message_len > wire::kMaxMessageSize ||
                             raw.payload_len > wire::kMaxPayloadSize,
                         "ResourceExhausted for lengths within the limits: ",
                         header.status().ToString());
    }
    return;
  }
  const wire::FrameHeaderBytes again = wire::EncodeFrameHeader(*header);
  LIVEMIG_FUZZ_CHECK(absl::string_view(reinterpret_cast<const char*>(again.data()),
                                       again.size()) == bytes.substr(0, wire::kFrameHeaderSize),
                     "an accepted header does not re-encode to its own bytes");
}

void CheckFrame(absl::string_view bytes, size_t split) {
  if (!HeaderIsValid(bytes)) return;
  const RawHeader raw = ReadRawHeader(bytes);
  std::unique_ptr<google::protobuf::MessageLite> message = MessageFor(raw.type);
  LIVEMIG_FUZZ_CHECK(message != nullptr, "a valid header of unknown type ", raw.type);
  const uint64_t size = wire::kFrameHeaderSize + uint64_t{raw.message_len} + raw.payload_len;
  absl::string_view payload;
  const absl::StatusOr<wire::FrameHeader> header =
      wire::DecodeFrame(bytes, message.get(), &payload);
  if (bytes.size() > size) {
    LIVEMIG_FUZZ_CHECK(absl::IsInvalidArgument(header.status()),
                       "a frame followed by more bytes: ", header.status().ToString());
    return CheckFrame(bytes.substr(0, size), split);  // The frame alone.
  }
  if (bytes.size() < size) {
    LIVEMIG_FUZZ_CHECK(absl::IsDataLoss(header.status()),
                       "a truncated frame: ", header.status().ToString());
    return;
  }
  const bool checksum_ok = FrameChecksumOf(bytes) == raw.frame_checksum;
  if (!checksum_ok) {
    LIVEMIG_FUZZ_CHECK(absl::IsDataLoss(header.status()),
                       "a frame whose checksum is wrong: ", header.status().ToString());
    return;
  }
  if (!header.ok()) {
    // Only the message itself can still be wrong.
    LIVEMIG_FUZZ_CHECK(absl::IsDataLoss(header.status()), header.status().ToString());
    std::unique_ptr<google::protobuf::MessageLite> probe = MessageFor(raw.type);
    LIVEMIG_FUZZ_CHECK(!probe->ParseFromString(std::string(
                           bytes.substr(wire::kFrameHeaderSize, raw.message_len))),
                       "a whole frame with a good checksum and a parsable message was refused: ",
                       header.status().ToString());
    return;
  }
  LIVEMIG_FUZZ_CHECK(payload == bytes.substr(wire::kFrameHeaderSize + raw.message_len),
                     "DecodeFrame's payload view is not the frame's tail");

  // The streaming checksum does not depend on how its input is split.
  wire::FrameChecksum streamed(*header);
  const absl::string_view covered =
      wire::PayloadIsChecksummed(*header) ? bytes.substr(wire::kFrameHeaderSize)
                                          : bytes.substr(wire::kFrameHeaderSize, raw.message_len);
  const size_t cut = covered.empty() ? 0 : split % (covered.size() + 1);
  streamed.Update(covered.substr(0, cut));
  streamed.Update(covered.substr(cut));
  LIVEMIG_FUZZ_CHECK(wire::VerifyChecksum(*header, streamed.Finish()).ok(),
                     "the streaming checksum split at ", cut, " differs");

  // Round trip.
  const absl::Span<const uint8_t> piece = Bytes(payload);
  const absl::StatusOr<wire::EncodedFrame> encoded = wire::EncodeFrame(
      header->type, *message,
      payload.empty() ? wire::PayloadPieces{} : absl::MakeConstSpan(&piece, 1), header->flags);
  LIVEMIG_FUZZ_CHECK(encoded.ok(), "an accepted frame does not re-encode: ",
                     encoded.status().ToString());
  std::string again(encoded->header.begin(), encoded->header.end());
  again += encoded->message;
  again.append(payload.data(), payload.size());
  std::unique_ptr<google::protobuf::MessageLite> reparsed = MessageFor(raw.type);
  absl::string_view payload_again;
  const absl::StatusOr<wire::FrameHeader> header_again =
      wire::DecodeFrame(again, reparsed.get(), &payload_again);
  LIVEMIG_FUZZ_CHECK(header_again.ok(), "a re-encoded frame does not decode: ",
                     header_again.status().ToString());
  LIVEMIG_FUZZ_CHECK(header_again->type == header->type && header_again->flags == header->flags &&
                         header_again->payload_len == header->payload_len &&
                         payload_again == payload,
                     "the re-encoded frame's header or payload differs");
  LIVEMIG_FUZZ_CHECK(reparsed->SerializeAsString() == message->SerializeAsString(),
                     "the re-encoded frame's message differs");
  if (message->SerializeAsString() == bytes.substr(wire::kFrameHeaderSize, raw.message_len)) {
    LIVEMIG_FUZZ_CHECK(again == bytes, "a canonical frame does not re-encode byte for byte");
  }

  // A message object of another type is the caller's mistake.
  proto::Hello hello;
  proto::Ack ack;
  google::protobuf::MessageLite* wrong =
      header->type == wire::FrameType::kHello ? static_cast<google::protobuf::MessageLite*>(&ack)
                                              : &hello;
  const absl::Status mismatch = wire::ParseMessage(
      *header, bytes.substr(wire::kFrameHeaderSize, raw.message_len), wrong);
  LIVEMIG_FUZZ_CHECK(absl::IsInvalidArgument(mismatch),
                     "ParseMessage into the wrong type: ", mismatch.ToString());
}

void CheckFindAbort(absl::string_view bytes) {
  const std::optional<proto::Abort> abort = FindAbort(bytes);
  if (!abort.has_value()) return;
  // It came from a whole ABORT frame at a frame boundary: walk to it.
  bool found = false;
  absl::string_view rest = bytes;
  while (!found && HeaderIsValid(rest)) {
    const RawHeader raw = ReadRawHeader(rest);
    const uint64_t size = wire::kFrameHeaderSize + uint64_t{raw.message_len} + raw.payload_len;
    if (size > rest.size()) break;
    found = raw.type == static_cast<uint16_t>(wire::FrameType::kAbort) &&
            FrameChecksumOf(rest.substr(0, size)) == raw.frame_checksum;
    rest.remove_prefix(size);
  }
  LIVEMIG_FUZZ_CHECK(found, "FindAbort returned an Abort no whole frame carried");
  const absl::Status status = StatusFromAbort(*abort);
  LIVEMIG_FUZZ_CHECK(!status.ok(), "an Abort became OK");
  const std::string text = PeerText(abort->message());
  LIVEMIG_FUZZ_CHECK(Printable(text), "PeerText left unprintable bytes");
  LIVEMIG_FUZZ_CHECK(text.size() <= 4 * kMaxPeerText + 64,
                     "PeerText kept ", text.size(), " bytes");
}

}  // namespace
}  // namespace livemig::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  livemig::fuzz::QuietProtobuf();
  if (size == 0) return 0;
  const uint8_t control = data[0];
  absl::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string repaired;
  if (control & 1) {
    repaired = livemig::fuzz::RepairStream(input);
    input = repaired;
  }
  livemig::fuzz::CheckHeader(input);
  livemig::fuzz::CheckFrame(input, control >> 1);
  livemig::fuzz::CheckFindAbort(input);
  return 0;
}
