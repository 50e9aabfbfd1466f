#include "migration/wire/compression.h"

#include <lz4.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace livemig::wire {
namespace {

constexpr char kAcceptedForms[] =
    "expected none, zstd, zstd:LEVEL (1..19), lz4 or lz4:ACCELERATION (1..65537)";

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// A strictly decimal number: digits only, no sign, no spaces.
bool ParseLevel(absl::string_view text, int max, int* out) {
  if (text.empty() || text.size() > 6) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  int v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < 1 || v > max) return false;
  *out = v;
  return true;
}

}  // namespace

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kNone:
      return "none";
    case Codec::kZstd:
      return "zstd";
    case Codec::kLz4:
      return "lz4";
  }
  return "unknown";
}

absl::StatusOr<CompressionSpec> ParseCompressionSpec(absl::string_view text) {
  CompressionSpec spec;
  const size_t colon = text.find(':');
  const absl::string_view name = text.substr(0, colon);
  const bool has_level = colon != absl::string_view::npos;
  const absl::string_view level = has_level ? text.substr(colon + 1) : absl::string_view();
  if (name == "none" && !has_level) return spec;
  if (name == "zstd") {
    spec.codec = Codec::kZstd;
    if (!has_level) return spec;
    if (ParseLevel(level, kMaxZstdLevel, &spec.level)) return spec;
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\": zstd levels are 1..19; ", kAcceptedForms));
  }
  if (name == "lz4") {
    spec.codec = Codec::kLz4;
    if (!has_level) return spec;
    if (ParseLevel(level, kMaxLz4Acceleration, &spec.level)) return spec;
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\": lz4 accelerations are 1..65537; ", kAcceptedForms));
  }
  return absl::InvalidArgumentError(absl::StrCat("\"", text, "\": ", kAcceptedForms));
}

int EffectiveLevel(const CompressionSpec& spec) {
  if (spec.codec == Codec::kNone) return 0;
  return spec.level != 0 ? spec.level : 1;
}

std::string CompressionSpecToString(const CompressionSpec& spec) {
  if (spec.codec == Codec::kNone) return "none";
  return absl::StrCat(CodecName(spec.codec), ":", EffectiveLevel(spec));
}

// ---- BatchCompressor ------------------------------------------------------

BatchCompressor::BatchCompressor(const CompressionSpec& spec, size_t max_input)
    : spec_(spec), out_(max_input) {}

BatchCompressor::~BatchCompressor() {
  if (zstd_ != nullptr) ZSTD_freeCCtx(static_cast<ZSTD_CCtx*>(zstd_));
}

absl::StatusOr<std::unique_ptr<BatchCompressor>> BatchCompressor::Create(
    const CompressionSpec& spec, size_t max_input) {
  const int level = EffectiveLevel(spec);
  switch (spec.codec) {
    case Codec::kNone:
      return absl::InvalidArgumentError("no codec to compress with (compression none)");
    case Codec::kZstd:
      if (level < kMinZstdLevel || level > kMaxZstdLevel) {
        return absl::InvalidArgumentError(
            absl::StrCat("zstd level ", spec.level, ": expected 1..19"));
      }
      break;
    case Codec::kLz4:
      if (level < 1 || level > kMaxLz4Acceleration) {
        return absl::InvalidArgumentError(
            absl::StrCat("lz4 acceleration ", spec.level, ": expected 1..65537"));
      }
      if (max_input > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
        return absl::InvalidArgumentError(
            absl::StrCat("lz4 batches of ", max_input, " bytes: at most ", LZ4_MAX_INPUT_SIZE));
      }
      break;
  }
  std::unique_ptr<BatchCompressor> c(new BatchCompressor(spec, max_input));
  if (spec.codec == Codec::kZstd) {
    c->zstd_ = ZSTD_createCCtx();
    if (c->zstd_ == nullptr) return absl::ResourceExhaustedError("ZSTD_createCCtx failed");
  } else {
    c->lz4_state_.resize(static_cast<size_t>(LZ4_sizeofState()));
  }
  return c;
}

size_t BatchCompressor::RunCodec(absl::Span<const uint8_t> input, size_t capacity) {
  const uint64_t start = NowNs();
  size_t n = 0;
  if (spec_.codec == Codec::kZstd) {
    const size_t r = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(zstd_), out_.data(), capacity,
                                       input.data(), input.size(), EffectiveLevel(spec_));
    n = ZSTD_isError(r) ? 0 : r;  // dstSize_tooSmall: it did not shrink enough.
  } else {
    const int r = LZ4_compress_fast_extState(
        lz4_state_.data(), reinterpret_cast<const char*>(input.data()),
        reinterpret_cast<char*>(out_.data()), static_cast<int>(input.size()),
        static_cast<int>(capacity), EffectiveLevel(spec_));
    n = r > 0 ? static_cast<size_t>(r) : 0;  // 0: the output did not fit.
  }
  counters_.busy_ns += NowNs() - start;
  return n;
}

std::optional<absl::Span<const uint8_t>> BatchCompressor::Compress(
    absl::Span<const uint8_t> input) {
  assert(input.size() <= out_.size());
  if (input.empty()) return std::nullopt;
  if (skip_next_ > 0) {
    --skip_next_;
    ++counters_.skipped_batches;
    return std::nullopt;
  }
  auto incompressible = [this]() -> std::optional<absl::Span<const uint8_t>> {
    ++counters_.incompressible_batches;
    last_skip_ = std::min<uint32_t>(last_skip_ == 0 ? 1 : last_skip_ * 2, kMaxSkip);
    skip_next_ = last_skip_;
    return std::nullopt;
  };
  // Worth it only when it saves at least 1/16: the codec gets no more room.
  auto room = [](size_t size) { return size - size / 16; };
  if (last_skip_ > 0 && input.size() > 2 * kSampleBytes) {
    // Backing off: a sample decides whether the whole batch is tried.
    if (RunCodec(input.first(kSampleBytes), room(kSampleBytes)) == 0) return incompressible();
  }
  const size_t n = RunCodec(input, room(input.size()));
  if (n == 0) return incompressible();
  last_skip_ = 0;
  ++counters_.compressed_batches;
  counters_.bytes_in += input.size();
  counters_.bytes_out += n;
  return absl::Span<const uint8_t>(out_.data(), n);
}

CompressorCounters BatchCompressor::TakeCounters() {
  CompressorCounters out = counters_;
  counters_ = CompressorCounters{};
  return out;
}

// ---- BatchDecompressor ----------------------------------------------------

BatchDecompressor::BatchDecompressor() = default;

BatchDecompressor::~BatchDecompressor() {
  if (zstd_ != nullptr) ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(zstd_));
}

absl::Span<uint8_t> BatchDecompressor::InputBuffer(size_t size) {
  if (input_.size() < size) input_.resize(size);
  return absl::Span<uint8_t>(input_.data(), size);
}

absl::Status BatchDecompressor::DecompressContiguous(Codec codec,
                                                     absl::Span<const uint8_t> input,
                                                     uint8_t* out, size_t size) {
  size_t got = 0;
  if (codec == Codec::kZstd) {
    if (zstd_ == nullptr) {
      zstd_ = ZSTD_createDCtx();
      if (zstd_ == nullptr) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
    }
    // One-shot into a contiguous buffer: zstd needs no window buffer of its
    // own and writes at most `size` bytes.
    const size_t r = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(zstd_), out, size,
                                         input.data(), input.size());
    if (ZSTD_isError(r)) {
      if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) {
        return absl::DataLossError(absl::StrCat(
            "the zstd stream of ", input.size(), " bytes holds more than the batch's ",
            size, " bytes"));
      }
      return absl::DataLossError(absl::StrCat("the zstd stream of ", input.size(),
                                              " bytes is corrupt: ", ZSTD_getErrorName(r)));
    }
    got = r;
  } else if (codec == Codec::kLz4) {
    if (input.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) {
      return absl::DataLossError(absl::StrCat("an lz4 block of ", input.size(), " bytes"));
    }
    const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(input.data()),
                                      reinterpret_cast<char*>(out),
                                      static_cast<int>(input.size()), static_cast<int>(size));
    if (r < 0) {
      // liblz4 does not say whether the block is malformed or longer than
      // the room it had: both are a stream that is not these pages.
      return absl::DataLossError(absl::StrCat(
          "the lz4 block of ", input.size(), " bytes is corrupt or holds more than the batch's ",
          size, " bytes"));
    }
    got = static_cast<size_t>(r);
  } else {
    return absl::InvalidArgumentError("decompressing with codec none");
  }
  if (got != size) {
    return absl::DataLossError(absl::StrCat("the ", CodecName(codec), " stream decompressed to ",
                                            got, " bytes; the batch's pages are ", size,
                                            " bytes"));
  }
  return absl::OkStatus();
}

absl::Status BatchDecompressor::Decompress(Codec codec, absl::Span<const uint8_t> input,
                                           absl::Span<const iovec> destination) {
  size_t total = 0;
  for (const iovec& v : destination) total += v.iov_len;
  if (total > kMaxDecompressedSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a compressed batch of ", total, " bytes; at most ", kMaxDecompressedSize));
  }
  const uint64_t start = NowNs();
  absl::Status status;
  if (destination.size() == 1) {
    // One run: straight into guest memory.
    status = DecompressContiguous(codec, input, static_cast<uint8_t*>(destination[0].iov_base),
                                  total);
  } else {
    if (scratch_.size() < total) scratch_.resize(total);
    status = DecompressContiguous(codec, input, scratch_.data(), total);
    if (status.ok()) {
      size_t at = 0;
      for (const iovec& v : destination) {
        std::memcpy(v.iov_base, scratch_.data() + at, v.iov_len);
        at += v.iov_len;
      }
    }
  }
  busy_ns_ += NowNs() - start;
  return status;
}

uint64_t BatchDecompressor::TakeBusyNs() {
  const uint64_t out = busy_ns_;
  busy_ns_ = 0;
  return out;
}

}  // namespace livemig::wire
