// File: migration/wire/frame_io.cc
#include "migration/wire/frame_io.h"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"

namespace livemig::wire {
namespace {

iovec Piece(const void* data, size_t size) {
  return iovec{const_cast<void*>(data), size};
}

// Inside a frame, the connection's "peer closed before any byte" is a
// truncated frame: DataLoss. Other codes pass through.
absl::Status MidFrame(absl::Status status, const FrameHeader& header,
                      const char* part) {
  if (absl::IsUnavailable(status) || absl::IsDataLoss(status)) {
    return absl::DataLossError(
        absl::StrCat("frame ", FrameTypeName(header.type), " truncated in its ",
                     part, ": ", status.message()));
  }
  return status;
}

absl::Status WriteFrameAs(Connection& conn, FrameType type,
                          const google::protobuf::MessageLite& message,
                          absl::Span<const iovec> payload, absl::Duration timeout,
                          uint16_t flags, bool last) {
  std::vector<absl::Span<const uint8_t>> spans;
  spans.reserve(payload.size());
  for (const iovec& piece : payload) {
    spans.emplace_back(static_cast<const uint8_t*>(piece.iov_base),
                       piece.iov_len);
  }
  LIVEMIG_ASSIGN_OR_RETURN(EncodedFrame frame,
                           EncodeFrame(type, message, spans, flags));
  std::vector<iovec> pieces;
  pieces.reserve(payload.size() + 2);
  pieces.push_back(Piece(frame.header.data(), frame.header.size()));
  pieces.push_back(Piece(frame.message.data(), frame.message.size()));
  pieces.insert(pieces.end(), payload.begin(), payload.end());
  return last ? conn.WriteLast(pieces, timeout) : conn.WriteAll(pieces, timeout);
}

}  // namespace

absl::Status WriteFrame(Connection& conn, FrameType type,
                        const google::protobuf::MessageLite& message,
                        absl::Span<const iovec> payload,
                        absl::Duration timeout, uint16_t flags) {
  return WriteFrameAs(conn, type, message, payload, timeout, flags, /*last=*/false);
}

absl::Status WriteLastFrame(Connection& conn, FrameType type,
                            const google::protobuf::MessageLite& message,
                            absl::Duration timeout) {
  return WriteFrameAs(conn, type, message, {}, timeout, 0, /*last=*/true);
}

absl::Status WriteFrame(Connection& conn, FrameType type,
                        const google::protobuf::MessageLite& message,
                        absl::Duration timeout) {
  return WriteFrame(conn, type, message, absl::Span<const iovec>(), timeout);
}

absl::StatusOr<IncomingFrame> ReadFrameStart(Connection& conn,
                                             absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  FrameHeaderBytes raw;
  const iovec header_piece[] = {Piece(raw.data(), raw.size())};
  // Unavailable here is the clean end of stream at a frame boundary.
  LIVEMIG_RETURN_IF_ERROR(conn.ReadExact(header_piece, timeout));
  LIVEMIG_ASSIGN_OR_RETURN(const FrameHeader header, DecodeFrameHeader(raw));

  IncomingFrame frame{header, std::string(header.message_len, '\0'),
                      FrameChecksum(header)};
  if (header.message_len > 0) {
    const iovec message_piece[] = {
        Piece(frame.message.data(), frame.message.size())};
    absl::Status read = conn.ReadExact(
        message_piece,
        timeout == absl::InfiniteDuration()
            ? timeout
            : std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (!read.ok()) return MidFrame(std::move(read), header, "message");
  }
  frame.checksum.Update(frame.message);
  if (!PayloadIsChecksummed(header)) {
    LIVEMIG_RETURN_IF_ERROR(VerifyChecksum(header, frame.checksum.Finish()));
  }
  return frame;
}

absl::Status ReadPayloadAndVerify(Connection& conn, IncomingFrame& frame,
                                  absl::Span<const iovec> destination,
                                  absl::Duration timeout) {
  uint64_t total = 0;
  for (const iovec& piece : destination) total += piece.iov_len;
  if (total != frame.header.payload_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame ", FrameTypeName(frame.header.type), " has ",
                     frame.header.payload_len,
                     " payload bytes but the destination holds ", total));
  }
  if (total > 0) {
    absl::Status read = conn.ReadExact(destination, timeout);
    if (!read.ok()) return MidFrame(std::move(read), frame.header, "payload");
    if (!PayloadIsChecksummed(frame.header)) return absl::OkStatus();
    for (const iovec& piece : destination) {
      frame.checksum.Update(piece.iov_base, piece.iov_len);
    }
  }
  return VerifyChecksum(frame.header, frame.checksum.Finish());
}

absl::Status ReadPayloadPiece(Connection& conn, IncomingFrame& frame,
                              absl::Span<uint8_t> piece, absl::Duration timeout) {
  if (piece.size() > frame.header.payload_len - frame.payload_read) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame ", FrameTypeName(frame.header.type), " has ",
        frame.header.payload_len - frame.payload_read,
        " payload bytes left, not ", piece.size()));
  }
  if (piece.empty()) return absl::OkStatus();
  const iovec to{piece.data(), piece.size()};
  absl::Status read = conn.ReadExact(absl::MakeConstSpan(&to, 1), timeout);
  if (!read.ok()) return MidFrame(std::move(read), frame.header, "payload");
  frame.payload_read += piece.size();
  if (PayloadIsChecksummed(frame.header)) frame.checksum.Update(piece);
  return absl::OkStatus();
}

absl::Status FinishPayload(const IncomingFrame& frame) {
  if (frame.payload_read != frame.header.payload_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame ", FrameTypeName(frame.header.type), ": ", frame.payload_read, " of ",
        frame.header.payload_len, " payload bytes read"));
  }
  return VerifyChecksum(frame.header, frame.checksum.Finish());
}

absl::Status FinishFrame(const IncomingFrame& frame,
                         google::protobuf::MessageLite* out) {
  if (frame.header.payload_len != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame ", FrameTypeName(frame.header.type), " carries ",
                     frame.header.payload_len,
                     " payload bytes: read them with ReadPayloadAndVerify"));
  }
  LIVEMIG_RETURN_IF_ERROR(
      VerifyChecksum(frame.header, frame.checksum.Finish()));
  absl::Status parsed = ParseMessage(frame.header, frame.message, out);
  if (absl::IsInvalidArgument(parsed)) {
    // The local `out` is what the protocol expects at this point: a frame of
    // another type is the peer's error.
    return absl::DataLossError(
        absl::StrCat("unexpected frame ", FrameTypeName(frame.header.type),
                     " (wanted ", out->GetTypeName(), "): ", parsed.message()));
  }
  return parsed;
}

}  // namespace livemig::wire
