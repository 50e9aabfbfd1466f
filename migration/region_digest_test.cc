#include "migration/region_digest.h"

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "core/mmap_region.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

std::vector<uint8_t> Pattern(size_t len) {
  std::vector<uint8_t> bytes(len);
  for (size_t i = 0; i < len; ++i) bytes[i] = static_cast<uint8_t>(i * 31 + 7);
  return bytes;
}

TEST(RegionDigest, DigestBytesEqualsXxh3With64BitSeedZero) {
  for (size_t len : {0u, 1u, 17u, 240u, 4096u, 3u * 1024 * 1024 + 5}) {
    const std::vector<uint8_t> bytes = Pattern(len);
    EXPECT_EQ(DigestBytes(bytes.data(), bytes.size()),
              XXH3_64bits(bytes.data(), bytes.size()))
        << "len " << len;
  }
}

TEST(RegionDigest, DigestOfEmptyInputAcceptsNull) {
  EXPECT_EQ(DigestBytes(nullptr, 0), XXH3_64bits(nullptr, 0));
}

TEST(RegionDigest, OneChangedByteChangesTheDigest) {
  std::vector<uint8_t> bytes = Pattern(1 << 20);
  const uint64_t before = DigestBytes(bytes.data(), bytes.size());
  bytes[123457] ^= 1;
  EXPECT_NE(DigestBytes(bytes.data(), bytes.size()), before);
}

TEST(RegionDigest, DigestRegionCoversTheWholeRegion) {
  ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<NoBitmap>::Create(8 * 4096));
  const std::vector<uint8_t> bytes = Pattern(region.size());
  std::memcpy(region.as_ptr(), bytes.data(), bytes.size());
  EXPECT_EQ(DigestRegion(region), XXH3_64bits(bytes.data(), bytes.size()));
  region.as_ptr()[region.size() - 1] ^= 0x80;  // The very last byte counts.
  EXPECT_NE(DigestRegion(region), XXH3_64bits(bytes.data(), bytes.size()));
}

TEST(RegionDigest, LargeInputsAreDigestedAsAChunkTree) {
  const size_t len = 2 * kDigestChunk + 12345;  // Two full chunks and a tail.
  std::vector<uint8_t> bytes(len);
  for (size_t i = 0; i < len; i += 4096) bytes[i] = static_cast<uint8_t>(i >> 12);
  const uint64_t chunk_digests[3] = {
      XXH3_64bits(bytes.data(), kDigestChunk),
      XXH3_64bits(bytes.data() + kDigestChunk, kDigestChunk),
      XXH3_64bits(bytes.data() + 2 * kDigestChunk, 12345)};
  const uint64_t expected = XXH3_64bits(chunk_digests, sizeof(chunk_digests));
  EXPECT_EQ(DigestBytes(bytes.data(), len, 1), expected);
  EXPECT_EQ(DigestBytes(bytes.data(), len, 3), expected);  // Threads agree.
  EXPECT_EQ(DigestBytes(bytes.data(), len), expected);
  bytes[kDigestChunk + 7] ^= 1;
  EXPECT_NE(DigestBytes(bytes.data(), len), expected);
}

}  // namespace
}  // namespace livemig
