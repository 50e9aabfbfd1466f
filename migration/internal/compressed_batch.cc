#include "migration/internal/compressed_batch.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

absl::Status LandCompressedBatch(Connection& conn, wire::IncomingFrame& frame,
                                 const proto::PageBatch& batch, uint64_t pages,
                                 absl::Span<const iovec> destination, wire::Codec agreed,
                                 wire::BatchDecompressor& decompressor,
                                 absl::Duration timeout) {
  const wire::Codec codec =
      batch.encoding() == proto::ENCODING_ZSTD ? wire::Codec::kZstd : wire::Codec::kLz4;
  const std::string what =
      absl::StrCat("region ", batch.region_index(), " round ", batch.round(), ": ",
                   codec == wire::Codec::kZstd ? "ZSTD" : "LZ4", " PAGE_BATCH of ", pages,
                   " pages");
  if (codec != agreed) {
    return absl::DataLossError(absl::StrCat(what, ", but the Hellos agreed on compression ",
                                            wire::CodecName(agreed)));
  }
  if (pages > wire::kMaxDecompressedSize / kMigrationPageSize) {
    return absl::DataLossError(absl::StrCat(what, ": more than the ",
                                            wire::kMaxDecompressedSize,
                                            " bytes a compressed batch may hold"));
  }
  const uint64_t bytes = pages * kMigrationPageSize;
  const uint64_t packed = frame.header.payload_len;
  if (packed == 0 || packed >= bytes) {
    return absl::DataLossError(absl::StrCat(what, " carries ", packed,
                                            " compressed bytes; a compressed batch carries 1 to ",
                                            bytes - 1, " (a batch that does not shrink is RAW)"));
  }
  // Into the channel's buffer first (bounded by the frame limit, checked
  // with the header); the message was verified by ReadFrameStart. The
  // buffer grows as the bytes arrive, so a header alone makes the receiver
  // hold nothing: a source has to send what it announces.
  constexpr size_t kPiece = size_t{1} << 20;
  absl::Span<uint8_t> input;
  for (size_t got = 0; got < packed;) {
    const size_t next = static_cast<size_t>(std::min<uint64_t>(packed, got + kPiece));
    input = decompressor.InputBuffer(next);
    LIVEMIG_RETURN_IF_ERROR(
        wire::ReadPayloadPiece(conn, frame, input.subspan(got, next - got), timeout));
    got = next;
  }
  LIVEMIG_RETURN_IF_ERROR(wire::FinishPayload(frame));
  absl::Status landed = decompressor.Decompress(codec, input, destination);
  if (!landed.ok()) {
    return absl::DataLossError(absl::StrCat(what, ": ", landed.message()));
  }
  return absl::OkStatus();
}

}  // namespace livemig::migration_internal
