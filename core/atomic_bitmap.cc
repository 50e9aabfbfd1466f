#include "core/atomic_bitmap.h"

#include <algorithm>
#include <bit>

#include "absl/strings/str_cat.h"
#include "core/internal/membarrier.h"

namespace livemig {

AtomicBitmap::AtomicBitmap(size_t byte_size, size_t page_size, SetBits set_bits)
    : byte_size_(byte_size),
      page_shift_(static_cast<size_t>(std::countr_zero(page_size))),
      num_pages_(page_size == 0 ? 0
                            : (byte_size >> page_shift_) +
                                  ((byte_size & (page_size - 1)) != 0)),
      num_words_((num_pages_ + kBitsPerWord - 1) / kBitsPerWord),
      // make_unique<T[]> value-initializes: every word starts at 0.
      words_(std::make_unique<std::atomic<uint64_t>[]>(
          std::max<size_t>(num_words_, 1))),
      probe_(words_.get()) {
  assert(std::has_single_bit(page_size) && "page_size must be a power of two");
  if (set_bits == SetBits::kAlwaysRmw ||
      !core_internal::AsymmetricFenceAvailable()) {
    zeros_ = std::make_unique<std::atomic<uint64_t>[]>(
        std::max<size_t>(num_words_, 1));
    probe_ = zeros_.get();
  }
}

namespace {

// Calls fn(word_index, mask) for each 64-page word covering the pages of
// `bitmap` that intersect [offset, offset + len), clipped to its byte size,
// with the mask of those pages within the word. Nothing for len 0 or an
// offset past the end.
template <typename Fn>
void ForEachWordMask(const AtomicBitmap& bitmap, size_t offset, size_t len,
                     Fn&& fn) {
  if (len == 0 || offset >= bitmap.byte_size()) return;
  const size_t end =
      len > bitmap.byte_size() - offset ? bitmap.byte_size() : offset + len;
  const size_t first_page = offset >> bitmap.page_shift();
  const size_t last_page = (end - 1) >> bitmap.page_shift();
  const size_t first_w = first_page / AtomicBitmap::kBitsPerWord;
  const size_t last_w = last_page / AtomicBitmap::kBitsPerWord;
  for (size_t w = first_w; w <= last_w; ++w) {
    uint64_t mask = ~uint64_t{0};
    if (w == first_w) mask &= ~uint64_t{0} << (first_page % 64);
    if (w == last_w) mask &= ~uint64_t{0} >> (63 - last_page % 64);
    fn(w, mask);
  }
}

}  // namespace

void AtomicBitmap::SetPageBit(size_t page) const {
  // Release: see MarkWord.
  words_[page / kBitsPerWord].fetch_or(uint64_t{1} << (page % kBitsPerWord),
                                       std::memory_order_release);
}

void AtomicBitmap::SetAddrRangeSlow(size_t offset, size_t len) const {
  ForEachWordMask(*this, offset, len,
                  [this](size_t w, uint64_t mask) { MarkWord(w, mask); });
}

void AtomicBitmap::ResetAddrRange(size_t offset, size_t len) const {
  ForEachWordMask(*this, offset, len, [this](size_t w, uint64_t mask) {
    // Relaxed: resetting publishes no data; a concurrent mark
    // either lands before (and is cleared, as the caller
    // asked) or after (and stays).
    words_[w].fetch_and(~mask, std::memory_order_relaxed);
  });
}

namespace core_internal {

std::vector<uint32_t>& HarvestIndexBuffer() {
  thread_local std::vector<uint32_t> buffer;
  return buffer;
}

}  // namespace core_internal

absl::Status AtomicBitmap::GetAndReset(std::span<uint64_t> out,
                                       size_t* dirty_pages) const {
  return Harvest(out, nullptr, nullptr, dirty_pages);
}

// Built twice, with and without the POPCNT instruction (chosen once at load
// time): Debian's x86-64 baseline predates POPCNT, and std::popcount would
// otherwise be a libgcc call for each of the tens of thousands of words a
// harvest takes. (Not under TSan: the load-time resolver would run before the
// TSan runtime is up.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__POPCNT__) && \
    !defined(__SANITIZE_THREAD__)
__attribute__((target_clones("popcnt", "default")))
#endif
absl::Status AtomicBitmap::Harvest(std::span<uint64_t> out,
                                   std::vector<uint32_t>* taken,
                                   size_t* listed_words,
                                   size_t* dirty_pages) const {
  if (taken != nullptr && taken->size() < num_words_) {
    // Room for every word, so the compaction below never reallocates. Only
    // grown, never shrunk: a harvest reuses it without clearing it.
    taken->resize(num_words_);
  }
  size_t listed = 0;
  if (out.size() < num_words_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "harvest buffer holds ", out.size(), " words; the bitmap needs ",
        num_words_));
  }
  size_t count = 0;
  constexpr size_t kChunk = 1024;
  uint32_t nonzero[kChunk];
  for (size_t base = 0; base < num_words_; base += kChunk) {
    const size_t chunk = std::min(kChunk, num_words_ - base);
    // Pass 1: a relaxed peek at every word, compacting the indices of the
    // non-zero ones without branches. Clean words (most of them in a
    // converging migration) cost no locked RMW. Seeing 0 while a writer sets
    // the word is fine: the bit stays set for the next harvest.
    size_t n = 0;
    for (size_t i = 0; i < chunk; ++i) {
      const uint64_t peek = words_[base + i].load(std::memory_order_relaxed);
      out[base + i] = 0;
      nonzero[n] = static_cast<uint32_t>(i);
      n += peek != 0;
    }
    // Pass 2: take the non-zero words. Acquire pairs with the markers'
    // release fetch_or: the data they wrote is visible to this thread once it
    // holds their bits.
    for (size_t k = 0; k < n; ++k) {
      const size_t w = base + nonzero[k];
      const uint64_t bits = words_[w].exchange(0, std::memory_order_acq_rel);
      out[w] = bits;
      count += static_cast<size_t>(std::popcount(bits));
      if (taken != nullptr) {
        (*taken)[listed] = static_cast<uint32_t>(w);
        listed += bits != 0;
      }
    }
  }
  if (listed_words != nullptr) *listed_words = listed;
  // Writers that skipped the RMW because their bits were already set may
  // still hold their data stores in a store buffer: drain them all before
  // the caller copies the harvested pages.
  if (count != 0 && skips_set_bits()) core_internal::HeavyFence();
  if (dirty_pages != nullptr) *dirty_pages = count;
  return absl::OkStatus();
}

absl::Status AtomicBitmap::Merge(const uint64_t* words, size_t n) const {
  if (n > num_words_) {
    return absl::OutOfRangeError(absl::StrCat(
        "merging ", n, " bitmap words into a bitmap of ", num_words_,
        " words (", num_pages_, " pages)"));
  }
  for (size_t w = 0; w < n; ++w) {
    uint64_t bits = words[w];
    if (w + 1 == num_words_) bits &= core_internal::LastWordMask(num_pages_);
    // Release, like any mark: the merged log stands for writes made before.
    if (bits != 0) words_[w].fetch_or(bits, std::memory_order_release);
  }
  return absl::OkStatus();
}

std::vector<uint64_t> AtomicBitmap::Snapshot() const {
  std::vector<uint64_t> copy(num_words_);
  for (size_t w = 0; w < num_words_; ++w) {
    // Relaxed: a snapshot is an estimate and publishes nothing.
    copy[w] = words_[w].load(std::memory_order_relaxed);
  }
  return copy;
}

size_t AtomicBitmap::CountDirty() const {
  size_t count = 0;
  for (size_t w = 0; w < num_words_; ++w) {
    // Relaxed: a count is an estimate and publishes nothing.
    count += static_cast<size_t>(
        std::popcount(words_[w].load(std::memory_order_relaxed)));
  }
  return count;
}

}  // namespace livemig
