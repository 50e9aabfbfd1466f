// File: migration/fuzz/wire_model.cc — see wire_model.h. Reads the layout
// table of migration/wire/frame_format.h; uses XXH3 directly, not the codec.
#include "migration/fuzz/wire_model.h"

#include <xxhash.h>

#include <cstring>
#include <memory>
#include <string>

#include "migration/page_hashes.h"
#include "proto/migration.pb.h"

namespace livemig::fuzz {
namespace {

using wire::kFrameHeaderSize;

template <typename T>
T Load(absl::string_view bytes, size_t offset) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    value |= static_cast<T>(static_cast<uint8_t>(bytes[offset + i])) << (8 * i);
  }
  return value;
}

template <typename T>
void Store(std::string& bytes, size_t offset, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) {
    bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
  }
}

}  // namespace

RawHeader ReadRawHeader(absl::string_view bytes) {
  RawHeader h;
  h.magic = Load<uint32_t>(bytes, 0);
  h.type = Load<uint16_t>(bytes, 4);
  h.flags = Load<uint16_t>(bytes, 6);
  h.message_len = Load<uint32_t>(bytes, 8);
  h.header_checksum = Load<uint32_t>(bytes, 12);
  h.payload_len = Load<uint64_t>(bytes, 16);
  h.frame_checksum = Load<uint64_t>(bytes, 24);
  return h;
}

uint32_t HeaderChecksumOf(absl::string_view bytes) {
  std::string header(bytes.substr(0, kFrameHeaderSize));
  Store<uint32_t>(header, 12, 0);
  return static_cast<uint32_t>(XXH3_64bits(header.data(), header.size()));
}

uint64_t FrameChecksumOf(absl::string_view frame) {
  const RawHeader h = ReadRawHeader(frame);
  std::string covered(frame.substr(0, kFrameHeaderSize));
  Store<uint32_t>(covered, 12, 0);
  Store<uint64_t>(covered, 24, 0);
  const absl::string_view message = frame.substr(kFrameHeaderSize, h.message_len);
  covered.append(message.data(), message.size());
  if ((h.flags & wire::kFramePagesHashed) == 0) {
    const absl::string_view payload = frame.substr(kFrameHeaderSize + h.message_len, h.payload_len);
    covered.append(payload.data(), payload.size());
  }
  return XXH3_64bits(covered.data(), covered.size());
}

bool HeaderIsValid(absl::string_view bytes) {
  if (bytes.size() < kFrameHeaderSize) return false;
  const RawHeader h = ReadRawHeader(bytes);
  const bool page_batch = h.type == static_cast<uint16_t>(wire::FrameType::kPageBatch);
  return h.magic == wire::kFrameMagic && h.header_checksum == HeaderChecksumOf(bytes) &&
         h.type != 0 && h.type <= static_cast<uint16_t>(wire::kMaxFrameType) &&
         (h.flags & ~wire::kKnownFrameFlags) == 0 && (h.flags == 0 || page_batch) &&
         h.message_len <= wire::kMaxMessageSize && h.payload_len <= wire::kMaxPayloadSize &&
         (h.payload_len == 0 || page_batch);
}

std::unique_ptr<google::protobuf::MessageLite> MessageFor(uint16_t type) {
  switch (static_cast<wire::FrameType>(type)) {
    case wire::FrameType::kHello: return std::make_unique<proto::Hello>();
    case wire::FrameType::kRegionTable: return std::make_unique<proto::RegionTable>();
    case wire::FrameType::kPageBatch: return std::make_unique<proto::PageBatch>();
    case wire::FrameType::kIterationMarker: return std::make_unique<proto::IterationMarker>();
    case wire::FrameType::kDeviceState: return std::make_unique<proto::DeviceState>();
    case wire::FrameType::kCompletion: return std::make_unique<proto::Completion>();
    case wire::FrameType::kAck: return std::make_unique<proto::Ack>();
    case wire::FrameType::kAbort: return std::make_unique<proto::Abort>();
    case wire::FrameType::kPageHashQuery: return std::make_unique<proto::PageHashQuery>();
    case wire::FrameType::kPageHashList: return std::make_unique<proto::PageHashList>();
    default: return nullptr;
  }
}

std::string RepairStream(absl::string_view stream) {
  std::string out;
  out.reserve(stream.size());
  while (stream.size() >= kFrameHeaderSize) {
    const RawHeader h = ReadRawHeader(stream);
    if (h.magic != wire::kFrameMagic || h.message_len > wire::kMaxMessageSize ||
        h.payload_len > wire::kMaxPayloadSize ||
        h.message_len + h.payload_len > stream.size() - kFrameHeaderSize) {
      break;
    }
    std::string header(stream.substr(0, kFrameHeaderSize));
    std::string message(stream.substr(kFrameHeaderSize, h.message_len));
    const absl::string_view payload =
        stream.substr(kFrameHeaderSize + h.message_len, h.payload_len);
    stream.remove_prefix(kFrameHeaderSize + h.message_len + h.payload_len);
    proto::PageBatch batch;
    if (h.type == static_cast<uint16_t>(wire::FrameType::kPageBatch) &&
        (h.flags & wire::kFramePagesHashed) != 0 && batch.ParseFromString(message) &&
        batch.encoding() == proto::ENCODING_RAW) {
      batch.clear_page_hashes();
      for (size_t off = 0; off + kHashedPageSize <= payload.size(); off += kHashedPageSize) {
        batch.add_page_hashes(HashPage(reinterpret_cast<const uint8_t*>(payload.data() + off)));
      }
      message = batch.SerializeAsString();
      if (message.size() > wire::kMaxMessageSize) break;
      Store<uint32_t>(header, 8, static_cast<uint32_t>(message.size()));
    }
    std::string frame = header + message + std::string(payload);
    Store<uint64_t>(frame, 24, FrameChecksumOf(frame));
    Store<uint32_t>(frame, 12, HeaderChecksumOf(frame));
    out += frame;
  }
  out.append(stream.data(), stream.size());
  return out;
}

}  // namespace livemig::fuzz
