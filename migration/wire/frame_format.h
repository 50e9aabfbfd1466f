// File: migration/wire/frame_format.h
//
// The byte layout of a livemig frame and the limits every receiver enforces.
// Constants only: migration/wire/frame_codec.h reads and writes this layout.
// Thread safety: nothing here has state.
//
// A migration channel is a byte stream of frames, back to back:
//
//   +-------------------+------------------------+------------------------+
//   | header (32 bytes) | message (message_len)  | payload (payload_len)  |
//   +-------------------+------------------------+------------------------+
//
// Header, every integer little-endian:
//
//   offset size  field            meaning
//    0      4    magic            kFrameMagic, the bytes "LMIG"
//    4      2    type             FrameType; 0 (kReserved) is never valid
//    6      2    flags            kFramePagesHashed or 0 (any other bit is
//                                 refused)
//    8      4    message_len      size of the serialized protobuf message
//                                 named by `type` (proto/migration.proto);
//                                 at most kMaxMessageSize
//   12      4    header_checksum  low 32 bits of XXH3_64bits over the 32
//                                 header bytes with this field zeroed
//   16      8    payload_len      raw bytes after the message; at most
//                                 kMaxPayloadSize, and 0 for every type but
//                                 kPageBatch
//   24      8    frame_checksum   XXH3_64bits over: the 32 header bytes with
//                                 header_checksum AND frame_checksum zeroed,
//                                 then the message, then the payload (not
//                                 the payload with kFramePagesHashed)
//
// Why two checksums. header_checksum lets the receiver trust the two lengths
// before it reads anything else, so a flipped bit in payload_len cannot make it
// swallow megabytes of the following frames into guest memory.
// frame_checksum covers the whole frame and is computed streaming
// (XXH3_64bits_update), so the sender hashes page payload while gathering it
// from guest memory and the receiver while reading it straight into its
// mapping: no page is copied just to be checked. The receiver can only verify
// it after the payload has landed, so pages written by a frame whose
// frame_checksum fails are garbage and the migration must be aborted.
//
// The payload of a kPageBatch frame with ENCODING_RAW is the pages' bytes, run
// after run: payload_len == sum(run.count) * Hello.page_size.
//
// With ENCODING_ZSTD or ENCODING_LZ4 (only when the Hellos agreed on that
// codec: migration/protocol.h) the payload is those same bytes compressed
// (zstd frames; one LZ4 block), and
//   0 < payload_len < sum(run.count) * Hello.page_size <= kMaxPayloadSize,
// and it decompresses to exactly sum(run.count) * Hello.page_size bytes
// (migration/wire/compression.h; a receiver never writes more, whatever the
// stream says). A batch that would not shrink is sent ENCODING_RAW instead.
// Such a frame always has kFramePagesHashed, and its page hashes are those
// of the uncompressed pages.
//
// kFramePagesHashed (kPageBatch only, and every RAW, ZSTD and LZ4 batch
// since protocol version 2): the message carries one hash per payload page
// (PageBatch.page_hashes) and frame_checksum covers the header and the
// message only. The receiver verifies that checksum before it trusts the
// message (so before any payload byte lands, or is decompressed), then
// hashes every page as it lands in its mapping and compares it with the
// message's hash. Each side
// hashes each page once: the same hash vouches for the frame and is kept for
// the end-to-end verification (migration/page_hashes.h).
//
// A clean end of stream is only legal at a frame boundary; an end of stream
// inside a frame is DataLoss.
#ifndef LIVEMIG_MIGRATION_WIRE_FRAME_FORMAT_H_
#define LIVEMIG_MIGRATION_WIRE_FRAME_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace livemig::wire {

// Which protobuf message (package livemig.proto) a frame carries. Values are
// the on-wire `type` field; never renumber, only append.
enum class FrameType : uint16_t {
  kReserved = 0,  // Never valid: a zeroed header is not a frame.
  kHello = 1,
  kRegionTable = 2,
  kPageBatch = 3,  // The only type that may carry a payload.
  kIterationMarker = 4,
  kDeviceState = 5,
  kCompletion = 6,
  kAck = 7,
  kAbort = 8,
  kPageHashQuery = 9,  // Since protocol version 2.
  kPageHashList = 10,  // Since protocol version 2.
};

// Highest FrameType a receiver of this protocol version understands.
inline constexpr FrameType kMaxFrameType = FrameType::kPageHashList;

// Frame header flags (bits of `flags`).
inline constexpr uint16_t kFramePagesHashed = 1;
inline constexpr uint16_t kKnownFrameFlags = kFramePagesHashed;

// "LMIG" as a little-endian uint32: the first four bytes of every frame.
inline constexpr uint32_t kFrameMagic = 0x47494D4Cu;

// Hello.magic: "LIVEMIG!" as a little-endian uint64.
inline constexpr uint64_t kHelloMagic = 0x2147494D4556494Cull;

// The protocol version this code speaks (Hello.min_version..max_version).
// Version 2 (per-page hashes, kFramePagesHashed, the page-hash query frames,
// round acknowledgements) is not compatible with version 1.
inline constexpr uint32_t kProtocolVersion = 2;

// Header field offsets and sizes (see the table above).
inline constexpr size_t kFrameMagicOffset = 0;
inline constexpr size_t kFrameTypeOffset = 4;
inline constexpr size_t kFrameFlagsOffset = 6;
inline constexpr size_t kFrameMessageLenOffset = 8;
inline constexpr size_t kFrameHeaderChecksumOffset = 12;
inline constexpr size_t kFramePayloadLenOffset = 16;
inline constexpr size_t kFrameChecksumOffset = 24;
inline constexpr size_t kFrameHeaderSize = 32;

// Limits. A header announcing more is refused before anything is read.
// One protobuf message: generous for a RegionTable or a device's state.
inline constexpr size_t kMaxMessageSize = size_t{1} << 20;  // 1 MiB
// One payload: 16384 pages of 4 KiB, or 32 huge pages of 2 MiB.
inline constexpr size_t kMaxPayloadSize = size_t{64} << 20;  // 64 MiB

static_assert(kFrameMagicOffset + 4 == kFrameTypeOffset);
static_assert(kFrameTypeOffset + 2 == kFrameFlagsOffset);
static_assert(kFrameFlagsOffset + 2 == kFrameMessageLenOffset);
static_assert(kFrameMessageLenOffset + 4 == kFrameHeaderChecksumOffset);
static_assert(kFrameHeaderChecksumOffset + 4 == kFramePayloadLenOffset);
static_assert(kFramePayloadLenOffset + 8 == kFrameChecksumOffset);
static_assert(kFrameChecksumOffset + 8 == kFrameHeaderSize);
static_assert(kFramePayloadLenOffset % 8 == 0 && kFrameChecksumOffset % 8 == 0,
              "64-bit fields are naturally aligned within the header");
static_assert(kMaxMessageSize <= UINT32_MAX, "message_len is 32 bits");
static_assert(kMaxPayloadSize % (size_t{2} << 20) == 0,
              "a maximal payload holds whole 4 KiB and 2 MiB pages");
static_assert(kFrameHeaderSize + kMaxMessageSize + kMaxPayloadSize <=
                  SIZE_MAX / 2,
              "a whole frame's size fits in size_t with room to spare");

}  // namespace livemig::wire

#endif  // LIVEMIG_MIGRATION_WIRE_FRAME_FORMAT_H_
