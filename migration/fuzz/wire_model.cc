// File: migration/fuzz/wire_model.cc — see wire_model.h. Reads the layout
// table of migration/wire/frame_format.h; uses XXH3, libzstd and liblz4
// directly, not the codec (nor migration/wire/compression.h).
#include "migration/fuzz/wire_model.h"

#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

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

// A ZSTD or LZ4 batch's pages (proto PageBatch.encoding): its payload
// decompressed with the library directly, if that gives exactly the runs'
// pages (at most kMaxPayloadSize bytes).
bool DecompressedPages(const proto::PageBatch& batch, absl::string_view payload,
                       std::string* pages) {
  uint64_t count = 0;
  for (const proto::PageRun& run : batch.runs()) {
    if (run.count() > wire::kMaxPayloadSize / kHashedPageSize) return false;
    count += run.count();
  }
  if (count == 0 || count > wire::kMaxPayloadSize / kHashedPageSize) return false;
  pages->assign(count * kHashedPageSize, '\0');
  if (batch.encoding() == proto::ENCODING_ZSTD) {
    const size_t n = ZSTD_decompress(pages->data(), pages->size(), payload.data(), payload.size());
    return !ZSTD_isError(n) && n == pages->size();
  }
  if (payload.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return false;
  const int n = LZ4_decompress_safe(payload.data(), pages->data(), static_cast<int>(payload.size()),
                                    static_cast<int>(pages->size()));
  return n >= 0 && static_cast<size_t>(n) == pages->size();
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
    const bool hashed_batch = h.type == static_cast<uint16_t>(wire::FrameType::kPageBatch) &&
                              (h.flags & wire::kFramePagesHashed) != 0 &&
                              batch.ParseFromString(message);
    // The pages a hashed batch carries: RAW's payload, or what a ZSTD/LZ4
    // payload decompresses to (none if it does not decompress to the runs'
    // pages exactly: the receiver refuses that before any hash is checked).
    std::string pages;
    bool rehash = false;
    if (hashed_batch && batch.encoding() == proto::ENCODING_RAW) {
      pages.assign(payload.data(), payload.size());
      rehash = true;
    } else if (hashed_batch && (batch.encoding() == proto::ENCODING_ZSTD ||
                                batch.encoding() == proto::ENCODING_LZ4)) {
      rehash = DecompressedPages(batch, payload, &pages);
    }
    if (rehash) {
      batch.clear_page_hashes();
      for (size_t off = 0; off + kHashedPageSize <= pages.size(); off += kHashedPageSize) {
        batch.add_page_hashes(HashPage(reinterpret_cast<const uint8_t*>(pages.data() + off)));
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
