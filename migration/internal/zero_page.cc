#include "migration/internal/zero_page.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace livemig::migration_internal {
namespace {

#if defined(__x86_64__)
// 128 bytes (two cache lines) per step: four loads, one test.
__attribute__((target("avx2"), no_sanitize_thread)) bool IsZeroPageAvx2(const uint8_t* page,
                                                                        size_t page_size) {
  for (size_t i = 0; i < page_size; i += 128) {
    const auto* p = reinterpret_cast<const __m256i*>(page + i);
    const __m256i any =
        _mm256_or_si256(_mm256_or_si256(_mm256_loadu_si256(p), _mm256_loadu_si256(p + 1)),
                        _mm256_or_si256(_mm256_loadu_si256(p + 2), _mm256_loadu_si256(p + 3)));
    if (!_mm256_testz_si256(any, any)) return false;
  }
  return true;
}

// Decided once: the CPU does not change under a running process.
const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

}  // namespace

// Not instrumented by TSan: it reads guest memory that writers change
// concurrently on purpose (see the header).
__attribute__((no_sanitize_thread)) bool IsZeroPagePortable(const uint8_t* page,
                                                             size_t page_size) {
  const auto* words = reinterpret_cast<const uint64_t*>(page);
  const size_t n = page_size / sizeof(uint64_t);
  for (size_t i = 0; i < n; i += 16) {
    uint64_t acc = 0;
    for (size_t j = 0; j < 16; ++j) acc |= words[i + j];
    if (acc != 0) return false;
  }
  return true;
}

bool IsZeroPage(const uint8_t* page, size_t page_size) {
#if defined(__x86_64__)
  if (kHaveAvx2) return IsZeroPageAvx2(page, page_size);
#endif
  return IsZeroPagePortable(page, page_size);
}

}  // namespace livemig::migration_internal
