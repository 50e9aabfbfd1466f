// File: migration/wire/frame_io.h
//
// Frames over a Connection: the glue between frame_codec.h (what the bytes
// mean) and migration/transport/connection.h (moving them with deadlines).
//
// Sender:
//   LIVEMIG_RETURN_IF_ERROR(WriteFrame(conn, FrameType::kPageBatch, batch,
//                                      page_iovecs, timeout));
// Receiver:
//   LIVEMIG_ASSIGN_OR_RETURN(IncomingFrame frame,
//                            ReadFrameStart(conn, timeout));
//   switch (frame.header.type) {
//     case FrameType::kPageBatch:
//       LIVEMIG_RETURN_IF_ERROR(
//           ParseMessage(frame.header, frame.message, &batch));
//       ... validate batch, compute where its pages land ...
//       LIVEMIG_RETURN_IF_ERROR(
//           ReadPayloadAndVerify(conn, frame, guest_iovecs, timeout));
//       break;
//     default:
//       LIVEMIG_RETURN_IF_ERROR(FinishFrame(frame, &message));
//   }
//
// Error codes: those of Connection (Cancelled, DeadlineExceeded, Unavailable)
// and frame_codec.h, plus: a clean EOF exactly at a frame boundary is
// Unavailable("peer closed the connection"); an EOF anywhere inside a frame
// is DataLoss.
//
// Ownership: nothing is retained: iovecs and messages are borrowed for the
// call. Thread safety: the functions are stateless; the Connection's rules
// apply (one writer, one reader at a time). An IncomingFrame is a value owned
// by its reader.
#ifndef LIVEMIG_MIGRATION_WIRE_FRAME_IO_H_
#define LIVEMIG_MIGRATION_WIRE_FRAME_IO_H_

#include <sys/uio.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"
#include "migration/transport/connection.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"

namespace livemig::wire {

// Sends one frame with a single Connection::WriteAll over the iovecs
// [header, message, payload pieces...]: no payload byte is copied. The frame
// checksum is computed over `payload` before anything is written, so the
// payload must not change until WriteFrame returns (or the receiver reports
// DataLoss). With `flags` kFramePagesHashed the checksum leaves the payload
// out (the message must carry its page hashes; frame_format.h).
// InvalidArgument/ResourceExhausted from EncodeFrame pass through (nothing is
// written then).
[[nodiscard]] absl::Status WriteFrame(
    Connection& conn, FrameType type,
    const google::protobuf::MessageLite& message,
    absl::Span<const iovec> payload, absl::Duration timeout,
    uint16_t flags = 0);

// WriteFrame without payload.
[[nodiscard]] absl::Status WriteFrame(
    Connection& conn, FrameType type,
    const google::protobuf::MessageLite& message, absl::Duration timeout);

// WriteFrame without payload through Connection::WriteLast: the last frame,
// which the connection's Interrupt() does not stop (an Abort saying why).
[[nodiscard]] absl::Status WriteLastFrame(
    Connection& conn, FrameType type,
    const google::protobuf::MessageLite& message, absl::Duration timeout);

// A frame whose header and message have been read; its payload (if any) is
// still on the connection.
struct IncomingFrame {
  FrameHeader header;   // Validated by DecodeFrameHeader.
  std::string message;  // Raw protobuf bytes: ParseMessage them.
  // Has consumed header + message; ReadPayloadAndVerify feeds the payload and
  // checks it (or FinishFrame checks it for payload-less frames).
  FrameChecksum checksum{FrameHeader{}};
  uint64_t payload_read = 0;  // Payload bytes ReadPayloadPiece has read.
};

// For a payload that passes through a bounce buffer (e.g. on its way to a
// file): reads the next piece.size() payload bytes into `piece`, feeding the
// frame checksum when it covers the payload, so the buffer stays small
// whatever payload_len the frame announces. InvalidArgument if the piece
// would go past payload_len; an EOF is DataLoss (mid-frame). Call
// FinishPayload once every byte was read.
[[nodiscard]] absl::Status ReadPayloadPiece(Connection& conn, IncomingFrame& frame,
                                            absl::Span<uint8_t> piece,
                                            absl::Duration timeout);

// After ReadPayloadPiece: InvalidArgument unless all payload_len bytes were
// read; then the frame checksum is verified (DataLoss on a mismatch).
[[nodiscard]] absl::Status FinishPayload(const IncomingFrame& frame);

// Reads one header (validated by DecodeFrameHeader: DataLoss or
// ResourceExhausted for a bad one) and its message bytes. A clean EOF before
// the header's first byte is Unavailable("peer closed the connection"); an
// EOF after it is DataLoss. `timeout` covers the header and message together.
// A kFramePagesHashed frame's checksum covers only the header and message, so
// it is verified here (DataLoss on a mismatch): its message can be trusted
// before the payload is read.
[[nodiscard]] absl::StatusOr<IncomingFrame> ReadFrameStart(
    Connection& conn, absl::Duration timeout);

// Reads the frame's payload straight into `destination` (scatter; the sizes
// must add up to header.payload_len, else InvalidArgument and nothing is
// read), feeds it to the checksum and verifies the whole frame: DataLoss on a
// mismatch (the bytes in `destination` are then garbage) or an EOF. With
// payload_len 0 and no destination it only verifies. A kFramePagesHashed
// frame was verified by ReadFrameStart: the payload is only read, and the
// CALLER must check every page against the message's page hashes.
[[nodiscard]] absl::Status ReadPayloadAndVerify(
    Connection& conn, IncomingFrame& frame, absl::Span<const iovec> destination,
    absl::Duration timeout);

// For frames without payload: verifies the frame checksum and parses the
// message into `out`. DataLoss when the checksum does not match, the message
// does not parse, or the frame's type does not carry `out`'s message type
// (the peer sent something other than what the protocol expects here).
// InvalidArgument when the frame has a payload (use ReadPayloadAndVerify).
[[nodiscard]] absl::Status FinishFrame(const IncomingFrame& frame,
                                       google::protobuf::MessageLite* out);

}  // namespace livemig::wire

#endif  // LIVEMIG_MIGRATION_WIRE_FRAME_IO_H_
