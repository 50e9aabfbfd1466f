// File: migration/fuzz/wire_model.h
//
// An independent model of the frame layout in migration/wire/frame_format.h,
// written from that comment and not from frame_codec.cc, for two uses by the
// fuzz targets:
//
//   - the oracle: RawHeader / HeaderChecksumOf / FrameChecksumOf say what a
//     frame's bytes are according to the documented layout, so a target can
//     check that what the codec accepts (and refuses) is what the format says;
//   - repair: RepairStream rewrites the checksums (and the page hashes of
//     hashed RAW batches, and of ZSTD/LZ4 batches whose payload decompresses
//     to their pages) of the frames of a byte stream, so mutated inputs
//     get past the checksums and reach the code behind them. Without repair
//     nearly every mutation would die at the first checksum.
//
// Thread safety: pure functions.
#ifndef LIVEMIG_MIGRATION_FUZZ_WIRE_MODEL_H_
#define LIVEMIG_MIGRATION_FUZZ_WIRE_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/message_lite.h"
#include "migration/wire/frame_format.h"

namespace livemig::fuzz {

// The header's fields as they are on the wire, unchecked.
struct RawHeader {
  uint32_t magic = 0;
  uint16_t type = 0;
  uint16_t flags = 0;
  uint32_t message_len = 0;
  uint32_t header_checksum = 0;
  uint64_t payload_len = 0;
  uint64_t frame_checksum = 0;
};

// REQUIRES: bytes.size() >= wire::kFrameHeaderSize.
RawHeader ReadRawHeader(absl::string_view bytes);

// Low 32 bits of XXH3-64 over the 32 header bytes with header_checksum zeroed.
// REQUIRES: bytes.size() >= wire::kFrameHeaderSize.
uint32_t HeaderChecksumOf(absl::string_view bytes);

// XXH3-64 over the header with both checksums zeroed, then the message, then
// the payload unless `flags` has kFramePagesHashed.
// REQUIRES: frame holds the whole frame the header describes.
uint64_t FrameChecksumOf(absl::string_view frame);

// Whether the documented rules accept this header (magic, header checksum,
// type, flags, limits, payload only on PAGE_BATCH).
bool HeaderIsValid(absl::string_view bytes);

// A fresh message of the type `type` carries; nullptr for kReserved and
// unknown types.
std::unique_ptr<google::protobuf::MessageLite> MessageFor(uint16_t type);

// The frames of `stream`, back to back from its start, with correct header
// and frame checksums, and every hashed RAW PAGE_BATCH carrying the hashes of
// its payload pages (one per whole 4 KiB page). Stops at the first frame that
// cannot be delimited (bad magic, or lengths beyond the limits or the end):
// from there on the bytes are kept as they are.
std::string RepairStream(absl::string_view stream);

}  // namespace livemig::fuzz

#endif  // LIVEMIG_MIGRATION_FUZZ_WIRE_MODEL_H_
