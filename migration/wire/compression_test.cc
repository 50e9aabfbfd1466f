#include "migration/wire/compression.h"

#include <lz4.h>
#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::wire {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr size_t kPage = 4096;

// Text-like pages: words from a small vocabulary, as headers and code are.
std::vector<uint8_t> CompressiblePages(size_t pages, uint32_t seed) {
  static const char* const kWords[] = {"static ", "inline ", "uint64_t ", "return ",
                                       "const ", "struct ", "{\n", "};\n", "if (", ") "};
  std::mt19937 rng(seed);
  std::vector<uint8_t> out;
  out.reserve(pages * kPage);
  while (out.size() < pages * kPage) {
    const char* w = kWords[rng() % 10];
    out.insert(out.end(), w, w + std::strlen(w));
  }
  out.resize(pages * kPage);
  return out;
}

std::vector<uint8_t> RandomPages(size_t pages, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(pages * kPage);
  for (size_t i = 0; i < out.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

TEST(ParseCompressionSpec, AcceptsEveryDocumentedForm) {
  struct Case {
    const char* text;
    Codec codec;
    int level;
  } cases[] = {{"none", Codec::kNone, 0}, {"zstd", Codec::kZstd, 0},
               {"zstd:1", Codec::kZstd, 1}, {"zstd:19", Codec::kZstd, 19},
               {"lz4", Codec::kLz4, 0},    {"lz4:8", Codec::kLz4, 8}};
  for (const Case& c : cases) {
    absl::StatusOr<CompressionSpec> spec = ParseCompressionSpec(c.text);
    ASSERT_OK(spec) << c.text;
    EXPECT_EQ(spec->codec, c.codec) << c.text;
    EXPECT_EQ(spec->level, c.level) << c.text;
  }
  EXPECT_EQ(CompressionSpecToString(*ParseCompressionSpec("zstd")), "zstd:1");
  EXPECT_EQ(CompressionSpecToString(*ParseCompressionSpec("lz4:3")), "lz4:3");
}

TEST(ParseCompressionSpec, RefusesAnythingElseNamingTheAcceptedForms) {
  for (const char* bad : {"", "gzip", "ZSTD", "zstd:", "zstd:0", "zstd:20", "zstd:+3",
                          "zstd: 3", "zstd:3x", "lz4:0", "lz4:-1", "none:1", "zstd:1:2"}) {
    EXPECT_THAT(ParseCompressionSpec(bad),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "expected none, zstd"))
        << bad;
  }
  EXPECT_THAT(ParseCompressionSpec("zstd:20"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "zstd levels are 1..19"));
}

TEST(BatchCompressor, RefusesCodecNoneAndLevelsOutOfRange) {
  EXPECT_THAT(BatchCompressor::Create({Codec::kNone, 0}, kPage),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BatchCompressor::Create({Codec::kZstd, 20}, kPage),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "zstd level 20"));
  EXPECT_THAT(BatchCompressor::Create({Codec::kLz4, -1}, kPage),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "lz4 acceleration -1"));
}

class CodecTest : public ::testing::TestWithParam<Codec> {};

INSTANTIATE_TEST_SUITE_P(Codecs, CodecTest, ::testing::Values(Codec::kZstd, Codec::kLz4),
                         [](const ::testing::TestParamInfo<Codec>& info) {
                           return std::string(CodecName(info.param));
                         });

TEST_P(CodecTest, CompressibleBatchRoundTripsIntoOneRun) {
  const std::vector<uint8_t> pages = CompressiblePages(64, 1);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  EXPECT_LT(packed->size(), pages.size() / 2);
  std::vector<uint8_t> out(pages.size());
  BatchDecompressor decompressor;
  const iovec dest{out.data(), out.size()};
  ASSERT_OK(decompressor.Decompress(GetParam(), *packed, absl::MakeConstSpan(&dest, 1)));
  EXPECT_EQ(out, pages);
  const CompressorCounters counters = compressor->TakeCounters();
  EXPECT_EQ(counters.compressed_batches, 1u);
  EXPECT_EQ(counters.bytes_in, pages.size());
  EXPECT_EQ(counters.bytes_out, packed->size());
  EXPECT_EQ(compressor->TakeCounters().compressed_batches, 0u);  // Taken: reset.
}

TEST_P(CodecTest, BatchOfSeveralRunsLandsRunByRun) {
  const std::vector<uint8_t> pages = CompressiblePages(8, 2);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  // Three runs scattered in a "region" of 16 pages: 2 + 5 + 1 pages.
  std::vector<uint8_t> region(16 * kPage, 0xee);
  const iovec dest[] = {{region.data() + 1 * kPage, 2 * kPage},
                        {region.data() + 6 * kPage, 5 * kPage},
                        {region.data() + 15 * kPage, 1 * kPage}};
  BatchDecompressor decompressor;
  ASSERT_OK(decompressor.Decompress(GetParam(), *packed, dest));
  EXPECT_EQ(0, std::memcmp(region.data() + 1 * kPage, pages.data(), 2 * kPage));
  EXPECT_EQ(0, std::memcmp(region.data() + 6 * kPage, pages.data() + 2 * kPage, 5 * kPage));
  EXPECT_EQ(0, std::memcmp(region.data() + 15 * kPage, pages.data() + 7 * kPage, kPage));
  EXPECT_EQ(region[0], 0xee);  // Between the runs: untouched.
  EXPECT_EQ(region[3 * kPage], 0xee);
  EXPECT_EQ(region[14 * kPage], 0xee);
}

TEST_P(CodecTest, IncompressibleBatchIsSentRawAndBacksOffDoubling) {
  const std::vector<uint8_t> random = RandomPages(64, 3);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, random.size()));
  // Tried: raw. Then 1 skipped, tried, 2 skipped, tried, 4 skipped, tried.
  std::vector<bool> tried;
  for (int i = 0; i < 11; ++i) {
    EXPECT_FALSE(compressor->Compress(random).has_value()) << i;
    tried.push_back(compressor->TakeCounters().incompressible_batches == 1);
  }
  const std::vector<bool> expected = {true, false, true,  false, false, true,
                                      false, false, false, false, true};
  EXPECT_EQ(tried, expected);
}

TEST_P(CodecTest, BackOffNeverSkipsMoreThanItsMaximum) {
  const std::vector<uint8_t> random = RandomPages(40, 4);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, random.size()));
  for (int i = 0; i < 1000; ++i) (void)compressor->Compress(random);
  const CompressorCounters counters = compressor->TakeCounters();
  // Seven tries with 1+2+...+64 skips between and after them (134
  // batches), then one try every kMaxSkip + 1 = 65: 866 = 13 * 65 + 21.
  EXPECT_EQ(counters.incompressible_batches + counters.skipped_batches, 1000u);
  EXPECT_EQ(counters.incompressible_batches, 7u + 14u);
}

TEST_P(CodecTest, CompressibleBatchAfterBackOffIsCompressedAgain) {
  const std::vector<uint8_t> random = RandomPages(64, 5);
  const std::vector<uint8_t> text = CompressiblePages(64, 6);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, text.size()));
  EXPECT_FALSE(compressor->Compress(random).has_value());  // Tried; skip 1 next.
  EXPECT_FALSE(compressor->Compress(text).has_value());    // Skipped.
  EXPECT_TRUE(compressor->Compress(text).has_value());     // Sample shrinks: compressed.
  EXPECT_FALSE(compressor->Compress(random).has_value());  // Back-off was reset: tried.
  const CompressorCounters counters = compressor->TakeCounters();
  EXPECT_EQ(counters.compressed_batches, 1u);
  EXPECT_EQ(counters.skipped_batches, 1u);
  EXPECT_EQ(counters.incompressible_batches, 2u);
}

TEST_P(CodecTest, CorruptStreamIsDataLoss) {
  const std::vector<uint8_t> pages = CompressiblePages(16, 7);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  std::vector<uint8_t> bad(packed->begin(), packed->end());
  // A spread of flipped bytes. A flip may go unnoticed by the codec (a
  // literal byte, an unused bit: the page hashes catch those, receiver.cc);
  // the others are DataLoss, and none writes outside the destination.
  int refused = 0;
  for (size_t at = 0; at < bad.size(); at += std::max<size_t>(1, bad.size() / 40)) {
    std::vector<uint8_t> copy = bad;
    copy[at] ^= 0x5a;
    std::vector<uint8_t> out(pages.size() + 64, 0xcd);
    const iovec dest{out.data(), pages.size()};
    BatchDecompressor decompressor;
    absl::Status s = decompressor.Decompress(GetParam(), copy, absl::MakeConstSpan(&dest, 1));
    if (!s.ok()) {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss)) << at;
      ++refused;
    }
    for (size_t i = pages.size(); i < out.size(); ++i) ASSERT_EQ(out[i], 0xcd) << at;
  }
  EXPECT_GT(refused, 0);
  // Junk that is no stream at all.
  std::vector<uint8_t> junk(100, 0xff);
  std::vector<uint8_t> out(pages.size());
  const iovec dest{out.data(), out.size()};
  BatchDecompressor decompressor;
  EXPECT_THAT(decompressor.Decompress(GetParam(), junk, absl::MakeConstSpan(&dest, 1)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_P(CodecTest, StreamHoldingMoreThanTheBatchIsDataLossAndWritesNothingBeyond) {
  const std::vector<uint8_t> pages = CompressiblePages(16, 8);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  // The batch claims 4 pages; the stream holds 16.
  std::vector<uint8_t> out(16 * kPage, 0xcd);
  const iovec dest{out.data(), 4 * kPage};
  BatchDecompressor decompressor;
  EXPECT_THAT(decompressor.Decompress(GetParam(), *packed, absl::MakeConstSpan(&dest, 1)),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, "holds more than"));
  for (size_t i = 4 * kPage; i < out.size(); ++i) ASSERT_EQ(out[i], 0xcd) << i;
}

TEST_P(CodecTest, StreamHoldingLessThanTheBatchIsDataLoss) {
  const std::vector<uint8_t> pages = CompressiblePages(4, 9);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  std::vector<uint8_t> out(8 * kPage);
  const iovec dest{out.data(), out.size()};  // The batch claims 8 pages.
  BatchDecompressor decompressor;
  absl::Status s = decompressor.Decompress(GetParam(), *packed, absl::MakeConstSpan(&dest, 1));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  if (GetParam() == Codec::kZstd) {
    EXPECT_THAT(s, StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                       absl::StrCat("decompressed to ", 4 * kPage, " bytes")));
  }
}

TEST_P(CodecTest, TruncatedStreamIsDataLoss) {
  const std::vector<uint8_t> pages = CompressiblePages(16, 10);
  ASSERT_OK_AND_ASSIGN(auto compressor, BatchCompressor::Create({GetParam(), 0}, pages.size()));
  std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  std::vector<uint8_t> out(pages.size());
  const iovec dest{out.data(), out.size()};
  BatchDecompressor decompressor;
  EXPECT_THAT(decompressor.Decompress(GetParam(), packed->first(packed->size() / 2),
                                      absl::MakeConstSpan(&dest, 1)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(BatchDecompressor, ZstdStreamClaimingAHugeContentSizeAllocatesNothingForIt) {
  // A stream whose header claims 1 TiB: refused by the batch's capacity.
  const std::vector<uint8_t> pages = CompressiblePages(1, 11);
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ASSERT_NE(cctx, nullptr);
  ASSERT_EQ(0u, ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(cctx, uint64_t{1} << 40)));
  std::vector<uint8_t> packed(ZSTD_compressBound(pages.size()));
  ZSTD_outBuffer out_buf{packed.data(), packed.size(), 0};
  ZSTD_inBuffer in_buf{pages.data(), pages.size(), 0};
  // Ending early with a wrong pledge is an error; flush what exists.
  (void)ZSTD_compressStream2(cctx, &out_buf, &in_buf, ZSTD_e_flush);
  ZSTD_freeCCtx(cctx);
  packed.resize(out_buf.pos);
  ASSERT_EQ(ZSTD_getFrameContentSize(packed.data(), packed.size()), uint64_t{1} << 40);
  std::vector<uint8_t> out(pages.size());
  const iovec dest{out.data(), out.size()};
  BatchDecompressor decompressor;
  EXPECT_THAT(decompressor.Decompress(Codec::kZstd, packed, absl::MakeConstSpan(&dest, 1)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(BatchDecompressor, RefusesADestinationOverTheLimitAndCodecNone) {
  std::vector<uint8_t> input(16);
  const iovec huge{input.data(), kMaxDecompressedSize + 1};  // Never touched.
  BatchDecompressor decompressor;
  EXPECT_THAT(decompressor.Decompress(Codec::kZstd, input, absl::MakeConstSpan(&huge, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const iovec small{input.data(), input.size()};
  EXPECT_THAT(decompressor.Decompress(Codec::kNone, input, absl::MakeConstSpan(&small, 1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace livemig::wire
