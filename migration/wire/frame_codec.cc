// File: migration/wire/frame_codec.cc
#include "migration/wire/frame_codec.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace livemig::wire {
namespace {

// Little-endian field access, independent of the host's byte order.
template <typename T>
void StoreLittleEndian(uint8_t* dst, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    dst[i] = static_cast<uint8_t>(value >> (8 * i));
  }
}

template <typename T>
T LoadLittleEndian(const uint8_t* src) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(src[i]) << (8 * i);
  }
  return value;
}

std::string Hex(uint64_t value) { return absl::StrCat("0x", absl::Hex(value)); }

// The header bytes with both checksum fields zeroed: the prefix of the
// frame_checksum, and (once frame_checksum is filled in) the input of the
// header_checksum.
FrameHeaderBytes EncodeUnchecksummed(const FrameHeader& header) {
  FrameHeaderBytes bytes{};
  StoreLittleEndian<uint32_t>(&bytes[kFrameMagicOffset], kFrameMagic);
  StoreLittleEndian<uint16_t>(&bytes[kFrameTypeOffset],
                              static_cast<uint16_t>(header.type));
  StoreLittleEndian<uint16_t>(&bytes[kFrameFlagsOffset], header.flags);
  StoreLittleEndian<uint32_t>(&bytes[kFrameMessageLenOffset],
                              header.message_len);
  StoreLittleEndian<uint64_t>(&bytes[kFramePayloadLenOffset],
                              header.payload_len);
  return bytes;
}

// Low 32 bits of XXH3_64bits over `bytes` with the header_checksum field
// zeroed (whatever it holds).
uint32_t ComputeHeaderChecksum(FrameHeaderBytes bytes) {
  std::memset(&bytes[kFrameHeaderChecksumOffset], 0, sizeof(uint32_t));
  return static_cast<uint32_t>(XXH3_64bits(bytes.data(), bytes.size()));
}

// The fully qualified protobuf type each frame type carries.
absl::string_view MessageTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "livemig.proto.Hello";
    case FrameType::kRegionTable:
      return "livemig.proto.RegionTable";
    case FrameType::kPageBatch:
      return "livemig.proto.PageBatch";
    case FrameType::kIterationMarker:
      return "livemig.proto.IterationMarker";
    case FrameType::kDeviceState:
      return "livemig.proto.DeviceState";
    case FrameType::kCompletion:
      return "livemig.proto.Completion";
    case FrameType::kAck:
      return "livemig.proto.Ack";
    case FrameType::kAbort:
      return "livemig.proto.Abort";
    case FrameType::kPageHashQuery:
      return "livemig.proto.PageHashQuery";
    case FrameType::kPageHashList:
      return "livemig.proto.PageHashList";
    case FrameType::kReserved:
      break;
  }
  return "";
}

absl::Status CheckMessageType(FrameType type,
                              const google::protobuf::MessageLite& message) {
  if (!IsKnownFrameType(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame type ", FrameTypeName(type), " is not sendable"));
  }
  const std::string actual = message.GetTypeName();
  if (actual != MessageTypeName(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame type ", FrameTypeName(type), " carries ",
                     MessageTypeName(type), ", not ", actual));
  }
  return absl::OkStatus();
}

absl::Status CheckLimits(FrameType type, uint64_t message_len,
                         uint64_t payload_len) {
  if (message_len > kMaxMessageSize) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "frame type ", FrameTypeName(type), " message_len ", message_len,
        " exceeds kMaxMessageSize ", kMaxMessageSize));
  }
  if (payload_len > kMaxPayloadSize) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "frame type ", FrameTypeName(type), " payload_len ", payload_len,
        " exceeds kMaxPayloadSize ", kMaxPayloadSize));
  }
  return absl::OkStatus();
}

}  // namespace

std::string FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kReserved:
      return "RESERVED";
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kRegionTable:
      return "REGION_TABLE";
    case FrameType::kPageBatch:
      return "PAGE_BATCH";
    case FrameType::kIterationMarker:
      return "ITERATION_MARKER";
    case FrameType::kDeviceState:
      return "DEVICE_STATE";
    case FrameType::kCompletion:
      return "COMPLETION";
    case FrameType::kAck:
      return "ACK";
    case FrameType::kAbort:
      return "ABORT";
    case FrameType::kPageHashQuery:
      return "PAGE_HASH_QUERY";
    case FrameType::kPageHashList:
      return "PAGE_HASH_LIST";
  }
  return absl::StrCat("UNKNOWN(", static_cast<uint16_t>(type), ")");
}

bool IsKnownFrameType(FrameType type) {
  const auto raw = static_cast<uint16_t>(type);
  return raw != 0 && raw <= static_cast<uint16_t>(kMaxFrameType);
}

bool FrameTypeAllowsPayload(FrameType type) {
  return type == FrameType::kPageBatch;
}

bool PayloadIsChecksummed(const FrameHeader& header) {
  return (header.flags & kFramePagesHashed) == 0;
}

FrameHeaderBytes EncodeFrameHeader(const FrameHeader& header) {
  FrameHeaderBytes bytes = EncodeUnchecksummed(header);
  StoreLittleEndian<uint64_t>(&bytes[kFrameChecksumOffset], header.checksum);
  StoreLittleEndian<uint32_t>(&bytes[kFrameHeaderChecksumOffset],
                              ComputeHeaderChecksum(bytes));
  return bytes;
}

absl::StatusOr<FrameHeader> DecodeFrameHeader(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < kFrameHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("truncated frame header: ", bytes.size(), " of ",
                     kFrameHeaderSize, " bytes"));
  }
  FrameHeaderBytes raw;
  std::memcpy(raw.data(), bytes.data(), kFrameHeaderSize);

  const uint32_t magic = LoadLittleEndian<uint32_t>(&raw[kFrameMagicOffset]);
  if (magic != kFrameMagic) {
    return absl::DataLossError(absl::StrCat("bad frame magic ", Hex(magic),
                                            ": expected ", Hex(kFrameMagic)));
  }
  const uint32_t stored_header_checksum =
      LoadLittleEndian<uint32_t>(&raw[kFrameHeaderChecksumOffset]);
  const uint32_t header_checksum = ComputeHeaderChecksum(raw);
  if (stored_header_checksum != header_checksum) {
    return absl::DataLossError(absl::StrCat(
        "frame header checksum mismatch: expected ",
        Hex(stored_header_checksum), " got ", Hex(header_checksum)));
  }

  FrameHeader header;
  header.type = static_cast<FrameType>(
      LoadLittleEndian<uint16_t>(&raw[kFrameTypeOffset]));
  header.flags = LoadLittleEndian<uint16_t>(&raw[kFrameFlagsOffset]);
  header.message_len = LoadLittleEndian<uint32_t>(&raw[kFrameMessageLenOffset]);
  header.payload_len = LoadLittleEndian<uint64_t>(&raw[kFramePayloadLenOffset]);
  header.checksum = LoadLittleEndian<uint64_t>(&raw[kFrameChecksumOffset]);

  if (header.type == FrameType::kReserved) {
    return absl::DataLossError("frame type 0 (RESERVED) is never valid");
  }
  if (!IsKnownFrameType(header.type)) {
    return absl::DataLossError(absl::StrCat(
        "unknown frame type ", static_cast<uint16_t>(header.type),
        " (highest known is ", static_cast<uint16_t>(kMaxFrameType), ")"));
  }
  if ((header.flags & ~kKnownFrameFlags) != 0 ||
      (header.flags != 0 && header.type != FrameType::kPageBatch)) {
    return absl::DataLossError(
        absl::StrCat("frame type ", FrameTypeName(header.type),
                     " has unsupported flags ", Hex(header.flags)));
  }
  LIVEMIG_RETURN_IF_ERROR(
      CheckLimits(header.type, header.message_len, header.payload_len));
  if (header.payload_len != 0 && !FrameTypeAllowsPayload(header.type)) {
    return absl::DataLossError(absl::StrCat(
        "frame type ", FrameTypeName(header.type), " has payload_len ",
        header.payload_len, "; only PAGE_BATCH frames carry a payload"));
  }
  return header;
}

void FrameChecksum::StateDeleter::operator()(XXH3_state_t* state) const {
  XXH3_freeState(state);
}

FrameChecksum::FrameChecksum(const FrameHeader& header)
    : state_(XXH3_createState()) {
  if (state_ == nullptr) {
    // Out of memory for ~600 bytes: as fatal as a failed operator new.
    std::fputs("livemig: XXH3_createState failed: out of memory\n", stderr);
    std::abort();
  }
  Reset(header);
}

void FrameChecksum::Reset(const FrameHeader& header) {
  XXH3_64bits_reset(state_.get());
  const FrameHeaderBytes prefix = EncodeUnchecksummed(header);
  XXH3_64bits_update(state_.get(), prefix.data(), prefix.size());
}

void FrameChecksum::Update(const void* data, size_t size) {
  if (size == 0) return;
  XXH3_64bits_update(state_.get(), data, size);
}

uint64_t FrameChecksum::Finish() const {
  return XXH3_64bits_digest(state_.get());
}

absl::StatusOr<EncodedFrame> EncodeFrame(
    FrameType type, const google::protobuf::MessageLite& message,
    PayloadPieces payload, uint16_t flags) {
  LIVEMIG_RETURN_IF_ERROR(CheckMessageType(type, message));
  if ((flags & ~kKnownFrameFlags) != 0 ||
      (flags != 0 && type != FrameType::kPageBatch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame type ", FrameTypeName(type), " given flags ", Hex(flags)));
  }

  uint64_t payload_len = 0;
  for (absl::Span<const uint8_t> piece : payload) payload_len += piece.size();
  if (payload_len != 0 && !FrameTypeAllowsPayload(type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame type ", FrameTypeName(type), " given payload_len ",
                     payload_len, "; only PAGE_BATCH frames carry a payload"));
  }
  const size_t message_len = message.ByteSizeLong();
  LIVEMIG_RETURN_IF_ERROR(CheckLimits(type, message_len, payload_len));

  EncodedFrame frame;
  if (!message.SerializeToString(&frame.message) ||
      frame.message.size() != message_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("frame type ", FrameTypeName(type), ": cannot serialize ",
                     message.GetTypeName()));
  }

  FrameHeader header;
  header.type = type;
  header.message_len = static_cast<uint32_t>(message_len);
  header.payload_len = payload_len;
  header.flags = flags;
  FrameChecksum checksum(header);
  checksum.Update(frame.message);
  if (PayloadIsChecksummed(header)) {
    for (absl::Span<const uint8_t> piece : payload) checksum.Update(piece);
  }
  header.checksum = checksum.Finish();
  frame.header = EncodeFrameHeader(header);
  return frame;
}

absl::StatusOr<std::string> SerializeFrame(
    FrameType type, const google::protobuf::MessageLite& message) {
  LIVEMIG_ASSIGN_OR_RETURN(EncodedFrame frame, EncodeFrame(type, message));
  std::string out;
  out.reserve(kFrameHeaderSize + frame.message.size());
  out.append(reinterpret_cast<const char*>(frame.header.data()),
             frame.header.size());
  out.append(frame.message);
  return out;
}

absl::Status ParseMessage(const FrameHeader& header, absl::string_view bytes,
                          google::protobuf::MessageLite* out) {
  LIVEMIG_RETURN_IF_ERROR(CheckMessageType(header.type, *out));
  if (bytes.size() != header.message_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame type ", FrameTypeName(header.type), ": given ", bytes.size(),
        " message bytes but message_len is ", header.message_len));
  }
  if (!out->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(absl::StrCat(
        "frame type ", FrameTypeName(header.type), ": ", bytes.size(),
        " message bytes do not parse as ", out->GetTypeName()));
  }
  return absl::OkStatus();
}

absl::Status VerifyChecksum(const FrameHeader& header, uint64_t actual) {
  if (actual != header.checksum) {
    return absl::DataLossError(
        absl::StrCat("frame type ", FrameTypeName(header.type),
                     " checksum mismatch: expected ", Hex(header.checksum),
                     " got ", Hex(actual)));
  }
  return absl::OkStatus();
}

absl::StatusOr<FrameHeader> DecodeFrame(absl::string_view frame,
                                        google::protobuf::MessageLite* out,
                                        absl::string_view* payload) {
  LIVEMIG_ASSIGN_OR_RETURN(
      const FrameHeader header,
      DecodeFrameHeader(absl::MakeConstSpan(
          reinterpret_cast<const uint8_t*>(frame.data()), frame.size())));

  // Cannot overflow: both lengths were checked against their limits.
  const uint64_t expected_size =
      kFrameHeaderSize + uint64_t{header.message_len} + header.payload_len;
  if (frame.size() < expected_size) {
    return absl::DataLossError(
        absl::StrCat("truncated frame of type ", FrameTypeName(header.type),
                     ": ", frame.size(), " of ", expected_size, " bytes"));
  }
  if (frame.size() > expected_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of type ", FrameTypeName(header.type), " is ", expected_size,
        " bytes but ", frame.size(), " were given"));
  }

  const absl::string_view message =
      frame.substr(kFrameHeaderSize, header.message_len);
  const absl::string_view payload_bytes =
      frame.substr(kFrameHeaderSize + header.message_len);
  FrameChecksum checksum(header);
  checksum.Update(message);
  if (PayloadIsChecksummed(header)) checksum.Update(payload_bytes);
  LIVEMIG_RETURN_IF_ERROR(VerifyChecksum(header, checksum.Finish()));
  LIVEMIG_RETURN_IF_ERROR(ParseMessage(header, message, out));
  if (payload != nullptr) *payload = payload_bytes;
  return header;
}

}  // namespace livemig::wire
