// File: migration/wire/frame_codec.h
//
// Encoding and decoding of livemig frames (layout: frame_format.h). Pure
// functions over bytes: no sockets, no clocks, no allocation beyond the
// returned values. The transport reads and writes; this file says what the
// bytes mean and whether they can be trusted.
//
// Sender, a frame with payload gathered from guest memory:
//
//   LIVEMIG_ASSIGN_OR_RETURN(EncodedFrame frame,
//                            EncodeFrame(FrameType::kPageBatch, batch, pages));
//   // writev: frame.header, frame.message, then each piece of `pages`.
//
// Receiver:
//
//   read kFrameHeaderSize bytes into `raw`
//   LIVEMIG_ASSIGN_OR_RETURN(FrameHeader header, DecodeFrameHeader(raw));
//   read header.message_len bytes into `message`
//   FrameChecksum checksum(header);
//   checksum.Update(message);
//   LIVEMIG_RETURN_IF_ERROR(ParseMessage(header, message, &batch));
//   validate `batch` against the region table, then read header.payload_len
//   bytes straight into guest memory, calling checksum.Update on each piece
//   LIVEMIG_RETURN_IF_ERROR(VerifyChecksum(header, checksum.Finish()));
//
// Error codes (the message always names the field, its value and the limit):
//   DataLoss          the bytes are not a valid frame: truncated header, bad
//                     magic, header or frame checksum mismatch, reserved or
//                     unknown type, unknown flags (or any flag on a type
//                     other than kPageBatch), payload on a type other
//                     than kPageBatch, or a message protobuf cannot parse.
//   ResourceExhausted a well-formed header announces message_len above
//                     kMaxMessageSize or payload_len above kMaxPayloadSize;
//                     the frame is refused before any of it is read.
//   InvalidArgument   the local caller's mistake: a message whose protobuf
//                     type does not match the frame type, a byte count that
//                     disagrees with the header it is passed with.
//
// Thread safety: every free function is thread-safe (no shared state).
// A FrameChecksum is not: one thread at a time per object.
#ifndef LIVEMIG_MIGRATION_WIRE_FRAME_CODEC_H_
#define LIVEMIG_MIGRATION_WIRE_FRAME_CODEC_H_

#include <xxhash.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "migration/wire/frame_format.h"

namespace livemig::wire {

// A frame header's fields, as the receiver trusts them after
// DecodeFrameHeader: magic and header_checksum have been verified and are not
// kept.
struct FrameHeader {
  FrameType type = FrameType::kReserved;
  uint16_t flags = 0;        // 0 or kFramePagesHashed (frame_format.h).
  uint32_t message_len = 0;  // Bytes of protobuf after the header.
  uint64_t payload_len = 0;  // Raw bytes after the message.
  uint64_t checksum = 0;     // frame_checksum: see FrameChecksum.

  friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

// The header's wire bytes.
using FrameHeaderBytes = std::array<uint8_t, kFrameHeaderSize>;

// The pieces of a frame's raw payload, in wire order (e.g. one per page run).
// Each span views memory the caller owns.
using PayloadPieces = absl::Span<const absl::Span<const uint8_t>>;

// "HELLO", "PAGE_BATCH", ...; "RESERVED" for 0 and "UNKNOWN(<n>)" for values
// above kMaxFrameType.
std::string FrameTypeName(FrameType type);

// True for kHello..kMaxFrameType; false for kReserved and anything above.
bool IsKnownFrameType(FrameType type);

// True only for kPageBatch.
bool FrameTypeAllowsPayload(FrameType type);

// Whether frame_checksum covers the payload: false with kFramePagesHashed,
// whose message vouches for each payload page instead (frame_format.h).
bool PayloadIsChecksummed(const FrameHeader& header);

// Writes `header` in the wire layout and fills in header_checksum. Writes
// exactly what it is given, valid or not (tests build malformed frames with
// it); senders normally use EncodeFrame, which enforces the rules.
FrameHeaderBytes EncodeFrameHeader(const FrameHeader& header);

// Decodes and checks the first kFrameHeaderSize bytes of `bytes` (any further
// bytes are ignored). Verifies magic, header_checksum, type, flags and the
// size limits, in that order. Fewer than kFrameHeaderSize bytes is DataLoss.
// The frame_checksum is only returned: it can be checked once the message and
// payload have been read (FrameChecksum, VerifyChecksum).
[[nodiscard]] absl::StatusOr<FrameHeader> DecodeFrameHeader(
    absl::Span<const uint8_t> bytes);

// The streaming frame_checksum: XXH3_64bits over the header with both checksum
// fields zeroed, then the message bytes, then the payload bytes. Feed the
// bytes in wire order, split however is convenient; the result does not
// depend on how they are split.
class FrameChecksum {
 public:
  // Starts the checksum of a frame described by `header` (whose `checksum`
  // field is ignored).
  explicit FrameChecksum(const FrameHeader& header);

  // A moved-from FrameChecksum may only be destroyed or assigned to.
  FrameChecksum(FrameChecksum&&) noexcept = default;
  FrameChecksum& operator=(FrameChecksum&&) noexcept = default;
  FrameChecksum(const FrameChecksum&) = delete;
  FrameChecksum& operator=(const FrameChecksum&) = delete;
  ~FrameChecksum() = default;

  // Starts over for another frame, reusing the hash state.
  void Reset(const FrameHeader& header);

  // Adds the next `size` bytes of the frame. A zero `size` is a no-op (and
  // `data` may then be null).
  void Update(const void* data, size_t size);
  void Update(absl::Span<const uint8_t> bytes) {
    Update(bytes.data(), bytes.size());
  }
  void Update(absl::string_view bytes) { Update(bytes.data(), bytes.size()); }

  // The checksum of everything fed so far. Does not end the stream: more
  // Update calls may follow.
  uint64_t Finish() const;

 private:
  struct StateDeleter {
    void operator()(XXH3_state_t* state) const;
  };
  std::unique_ptr<XXH3_state_t, StateDeleter> state_;
};

// Everything a sender writes for one frame except the payload, which it writes
// from its own memory right after `message`.
struct EncodedFrame {
  FrameHeaderBytes header;  // With both checksums filled in.
  std::string message;      // The serialized protobuf.
};

// Serializes `message` as a frame of type `type` with the given payload and
// header `flags`, and computes both checksums (reading every payload byte
// once, copying none; with kFramePagesHashed the payload is not read at all).
// InvalidArgument: `type` is not a known type, or `message` is not the
// protobuf type `type` carries, or a payload or a flag is given for a type
// other than kPageBatch, or an unknown flag. ResourceExhausted: the message
// or payload exceeds its limit.
[[nodiscard]] absl::StatusOr<EncodedFrame> EncodeFrame(
    FrameType type, const google::protobuf::MessageLite& message,
    PayloadPieces payload = {}, uint16_t flags = 0);

// EncodeFrame without payload, header and message in one string: the whole
// frame, ready to write.
[[nodiscard]] absl::StatusOr<std::string> SerializeFrame(
    FrameType type, const google::protobuf::MessageLite& message);

// Parses the `header.message_len` bytes that followed `header` into `out`.
// Does not verify the frame checksum (the receiver usually needs the message
// before it can place the payload): call VerifyChecksum once the payload has
// been read. InvalidArgument: `out` is not the protobuf type header.type
// carries, or bytes.size() != header.message_len. DataLoss: the bytes do not
// parse.
[[nodiscard]] absl::Status ParseMessage(const FrameHeader& header,
                                        absl::string_view bytes,
                                        google::protobuf::MessageLite* out);

// OK when `actual` (FrameChecksum::Finish over the frame as received) equals
// header.checksum; otherwise DataLoss "frame type X checksum mismatch:
// expected 0x... got 0x...".
[[nodiscard]] absl::Status VerifyChecksum(const FrameHeader& header,
                                          uint64_t actual);

// Decodes one complete frame held in memory (header, message and payload,
// nothing else): checks the header, verifies frame_checksum and parses the
// message into `out`. If `payload` is not null it is set to view the payload
// inside `frame`. DataLoss when `frame` is shorter than the header says;
// InvalidArgument when it is longer; otherwise the codes listed above.
[[nodiscard]] absl::StatusOr<FrameHeader> DecodeFrame(
    absl::string_view frame, google::protobuf::MessageLite* out,
    absl::string_view* payload = nullptr);

}  // namespace livemig::wire

#endif  // LIVEMIG_MIGRATION_WIRE_FRAME_CODEC_H_
