// File: migration/wire/compression.h
//
// Page-batch compression (opt-in, negotiated in the Hello: protocol.h): the
// codecs a PageBatch payload may use (ENCODING_ZSTD, ENCODING_LZ4 in
// proto/migration.proto), the sender's per-channel compressor and the
// receiver's per-channel decompressor. The codecs are Debian's libzstd and
// liblz4; nothing here is hand-written compression.
//
// Sender. A BatchCompressor compresses one batch's page bytes (the copy the
// channel made of guest memory, already hashed) into its own buffer and
// answers "send this" or "send the batch raw": a batch that does not shrink
// to at most 15/16 of its size is not worth the receiver's decompression, so
// the codec is given only that much room and gives up as soon as its output
// would not fit (early exit on incompressible data). After such a batch the
// compressor backs off: it skips the next 1, 2, 4 ... 64 batches (sent raw
// without trying) and then probes again, first on a 64 KiB sample of the
// batch, compressing the whole batch only when the sample shrinks. Random
// memory thus costs about one 64 KiB sample per 65 batches; a batch that
// shrinks resets the back-off.
//
// Receiver. A BatchDecompressor reads a compressed payload into its input
// buffer (bounded by the frame's payload limit, frame_format.h) and
// decompresses it into the batch's destination (guest memory; a batch of
// several runs goes through a scratch buffer and is copied run by run: on
// 64 MiB of this machine's shared libraries, one run straight in
// decompressed at 1.6 GB/s of pages with zstd and 4.5 GB/s with lz4,
// through the scratch buffer 1.5 and 3.7-3.9 GB/s). It
// never writes or allocates more than the destination's size, whatever the
// stream claims (a hostile peer): the codecs are called with that capacity
// and an output that would exceed it, or that falls short of it by one
// byte, is DataLoss.
//
// Thread safety: none. Each channel thread owns its compressor or
// decompressor.
#ifndef LIVEMIG_MIGRATION_WIRE_COMPRESSION_H_
#define LIVEMIG_MIGRATION_WIRE_COMPRESSION_H_

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "migration/wire/frame_format.h"

namespace livemig::wire {

enum class Codec : uint8_t { kNone = 0, kZstd = 1, kLz4 = 2 };

// The most bytes one compressed batch may decompress to: what a RAW batch
// may carry.
inline constexpr size_t kMaxDecompressedSize = kMaxPayloadSize;

// "none", "zstd", "lz4".
const char* CodecName(Codec codec);

// The zstd levels accepted (1 fast .. 19 small); lz4's acceleration is >= 1
// (1 is LZ4_compress_default, larger is faster and compresses less).
inline constexpr int kMinZstdLevel = 1;
inline constexpr int kMaxZstdLevel = 19;
inline constexpr int kMaxLz4Acceleration = 65537;  // liblz4's own cap.

struct CompressionSpec {
  Codec codec = Codec::kNone;
  // zstd: the level (kMinZstdLevel..kMaxZstdLevel). lz4: the acceleration
  // (>= 1). 0: the codec's default (zstd 1, lz4 1).
  int level = 0;
};

// Parses "none", "zstd", "zstd:LEVEL" (1..19), "lz4" or "lz4:ACCELERATION"
// (1..65537), strictly (no spaces, no sign, nothing after the number).
// InvalidArgument naming the accepted forms otherwise.
[[nodiscard]] absl::StatusOr<CompressionSpec> ParseCompressionSpec(absl::string_view text);
// The inverse: "none", "zstd:1", "lz4:1" (the level made explicit).
std::string CompressionSpecToString(const CompressionSpec& spec);
// The level in effect: `spec.level`, or the codec's default when 0.
int EffectiveLevel(const CompressionSpec& spec);

// What a BatchCompressor did, for the migration's stats. Plain counters: the
// channel thread adds them to its shared ones.
struct CompressorCounters {
  uint64_t compressed_batches = 0;      // Sent compressed.
  uint64_t incompressible_batches = 0;  // Tried (or sampled), sent raw.
  uint64_t skipped_batches = 0;         // Sent raw without trying (back-off).
  uint64_t bytes_in = 0;                // Page bytes of the compressed batches.
  uint64_t bytes_out = 0;               // Their compressed size.
  uint64_t busy_ns = 0;                 // Time spent in the codec, all batches.
};

class BatchCompressor {
 public:
  // Back-off: the most batches skipped after an incompressible one, and the
  // sample probed after a back-off.
  static constexpr uint32_t kMaxSkip = 64;
  static constexpr size_t kSampleBytes = 64 * 1024;

  // `max_input`: the largest batch Compress() will see. InvalidArgument for
  // kNone or a level out of range; ResourceExhausted if the codec's context
  // cannot be made.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BatchCompressor>> Create(
      const CompressionSpec& spec, size_t max_input);
  ~BatchCompressor();
  BatchCompressor(const BatchCompressor&) = delete;
  BatchCompressor& operator=(const BatchCompressor&) = delete;

  Codec codec() const { return spec_.codec; }

  // The compressed bytes of `input` (valid until the next call), or nullopt:
  // send `input` raw (it did not shrink, or the back-off skipped it).
  // REQUIRES: input.size() <= max_input.
  std::optional<absl::Span<const uint8_t>> Compress(absl::Span<const uint8_t> input);

  // The counters since the last TakeCounters(), which resets them.
  CompressorCounters TakeCounters();

 private:
  BatchCompressor(const CompressionSpec& spec, size_t max_input);
  // The codec on `input` with at most `capacity` output bytes; 0: it did
  // not fit.
  size_t RunCodec(absl::Span<const uint8_t> input, size_t capacity);

  const CompressionSpec spec_;
  std::vector<uint8_t> out_;
  void* zstd_ = nullptr;  // ZSTD_CCtx*, kZstd only.
  std::vector<uint8_t> lz4_state_;  // LZ4_compress_fast_extState's, kLz4 only.
  uint32_t skip_next_ = 0;   // Batches left to send raw untried.
  uint32_t last_skip_ = 0;   // The back-off's current length (0: none).
  CompressorCounters counters_;
};

class BatchDecompressor {
 public:
  BatchDecompressor();
  ~BatchDecompressor();
  BatchDecompressor(const BatchDecompressor&) = delete;
  BatchDecompressor& operator=(const BatchDecompressor&) = delete;

  // A buffer of `size` bytes to read a compressed payload into (reused).
  // Growing it keeps the bytes it held, so a payload can be read into it a
  // piece at a time.
  absl::Span<uint8_t> InputBuffer(size_t size);
  // How many bytes that buffer holds now.
  size_t input_bytes() const { return input_.size(); }

  // Decompresses `input` (`codec`'s format) into `destination`, in order.
  // OK only if it decompresses to exactly the destination's total size.
  // DataLoss (a corrupt stream, one that holds more, or fewer, bytes; the
  // destination is then garbage) or InvalidArgument (kNone, or a
  // destination larger than kMaxDecompressedSize). Never writes outside
  // `destination`, never allocates more than its size.
  [[nodiscard]] absl::Status Decompress(Codec codec, absl::Span<const uint8_t> input,
                                        absl::Span<const iovec> destination);

  // Nanoseconds spent in Decompress() since the last TakeBusyNs().
  uint64_t TakeBusyNs();

 private:
  [[nodiscard]] absl::Status DecompressContiguous(Codec codec,
                                                  absl::Span<const uint8_t> input,
                                                  uint8_t* out, size_t size);
  void* zstd_ = nullptr;  // ZSTD_DCtx*, made on first use.
  std::vector<uint8_t> input_;
  std::vector<uint8_t> scratch_;  // Several runs: decompressed here, then copied.
  uint64_t busy_ns_ = 0;
};

}  // namespace livemig::wire

#endif  // LIVEMIG_MIGRATION_WIRE_COMPRESSION_H_
