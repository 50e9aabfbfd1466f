#include "migration/internal/zero_page.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

constexpr size_t kPage = 4096;

TEST(IsZeroPage, APageOfZerosIsZeroOnBothPaths) {
  alignas(64) static uint8_t page[kPage] = {};
  EXPECT_TRUE(IsZeroPage(page, kPage));
  EXPECT_TRUE(IsZeroPagePortable(page, kPage));
}

// One set bit anywhere, first byte to last, in every 128-byte step and at
// its edges, makes the page non-zero on both paths.
TEST(IsZeroPage, OneNonZeroByteAnywhereIsSeenOnBothPaths) {
  alignas(64) static uint8_t page[kPage] = {};
  std::vector<size_t> offsets;
  for (size_t step = 0; step < kPage; step += 128) {
    for (size_t at : {step, step + 31, step + 32, step + 63, step + 64, step + 127}) {
      offsets.push_back(at);
    }
  }
  for (size_t at : offsets) {
    for (uint8_t bit : {uint8_t{1}, uint8_t{0x80}}) {
      page[at] = bit;
      EXPECT_FALSE(IsZeroPage(page, kPage)) << "byte " << at;
      EXPECT_FALSE(IsZeroPagePortable(page, kPage)) << "byte " << at;
      page[at] = 0;
    }
  }
  EXPECT_TRUE(IsZeroPage(page, kPage));
}

// Guest pages need not be aligned beyond 4 KiB in a mapping, but a buffer
// may be: an odd start works too.
TEST(IsZeroPage, AnUnalignedPageIsReadExactly) {
  std::vector<uint8_t> bytes(kPage + 1 + 1, 0);
  uint8_t* page = bytes.data() + 1;
  EXPECT_TRUE(IsZeroPage(page, kPage));
  bytes[kPage + 1] = 7;  // Just past the page: not part of it.
  EXPECT_TRUE(IsZeroPage(page, kPage));
  page[kPage - 1] = 7;
  EXPECT_FALSE(IsZeroPage(page, kPage));
}

}  // namespace
}  // namespace livemig::migration_internal
