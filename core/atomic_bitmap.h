// File: core/atomic_bitmap.h
//
// AtomicBitmap: a lock-free dirty-page bitmap, one bit per page, the tracker a
// migration loop harvests. Its word layout is KVM's (KVM_GET_DIRTY_LOG): an
// array of 64-bit words, bit i of word w is page 64*w + i, so a hypervisor
// dirty log can be OR-ed in with Merge().
//
// Semantics (the contract the migration engine builds on):
//
//   * Marking (MarkDirty / SetAddrRange) happens AFTER the data is written.
//     It is one atomic RMW per 64-page word touched, never one per page. A
//     mark whose bits are already all set does no RMW at all: that skip is
//     safe because every harvest ends with an asymmetric fence (membarrier,
//     core/internal/membarrier.h) that drains every writer's pending stores
//     before the harvested pages are copied. Where membarrier is unavailable
//     the skip is disabled and every mark is a fetch_or.
//   * Harvesting (GetAndReset / HarvestRuns) is a per-word exchange(0). It is
//     atomic per word, NOT a global snapshot: words are taken one after the
//     other while writers keep running. A page written during a harvest is
//     never lost: its mark lands either before its word is exchanged (this
//     harvest returns it) or after (it stays set for the next harvest). When
//     a harvest returns, every write that preceded a returned mark is visible
//     to the harvesting thread, so copying returned pages afterwards copies
//     at least the data that the marks stand for.
//   * Out-of-range pages are ignored by marking and reset calls; zero-length
//     ranges do nothing; DirtyAt past the end is false.
//
// Thread safety: every method is safe to call concurrently from any number of
// threads (marking, harvesting, Snapshot, CountDirty). The object is neither
// copyable nor movable (it holds atomics); regions keep it behind a pointer.
#ifndef LIVEMIG_CORE_ATOMIC_BITMAP_H_
#define LIVEMIG_CORE_ATOMIC_BITMAP_H_

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace livemig {

class AtomicBitmap;

// A view of an AtomicBitmap starting at a byte offset, carried by
// VolatileSlice so that a sub-slice marks the right pages. Copyable; the
// bitmap it points to must outlive it.
class AtomicBitmapSlice {
 public:
  AtomicBitmapSlice(const AtomicBitmap* bitmap, size_t base)
      : bitmap_(bitmap), base_(base) {}

  void MarkDirty(size_t offset, size_t len) const;
  bool DirtyAt(size_t offset) const;
  AtomicBitmapSlice SliceAt(size_t offset) const {
    return AtomicBitmapSlice(bitmap_, base_ + offset);
  }

  const AtomicBitmap* bitmap() const { return bitmap_; }
  size_t base() const { return base_; }

 private:
  const AtomicBitmap* bitmap_;  // Not owned.
  size_t base_;                 // Byte offset into the bitmap's range.
};

class AtomicBitmap {
 public:
  using Slice = AtomicBitmapSlice;

  static constexpr size_t kBitsPerWord = 64;

  // Tracks ceil(byte_size / page_size) pages. REQUIRES: page_size is a power
  // of two (asserted; regions always pass the system page size).
  AtomicBitmap(size_t byte_size, size_t page_size);

  AtomicBitmap(const AtomicBitmap&) = delete;
  AtomicBitmap& operator=(const AtomicBitmap&) = delete;

  // --- The tracker concept (core/dirty_tracker.h). ---

  // Marks the pages intersecting [offset, offset + len). Call after writing.
  void MarkDirty(size_t offset, size_t len) const { SetAddrRange(offset, len); }
  bool DirtyAt(size_t offset) const { return IsPageDirty(offset >> page_shift_); }
  Slice SliceAt(size_t offset) const { return Slice(this, offset); }

  // --- Geometry. ---
  size_t byte_size() const { return byte_size_; }
  size_t page_size() const { return size_t{1} << page_shift_; }
  size_t page_shift() const { return page_shift_; }
  size_t num_pages() const { return num_pages_; }
  size_t num_words() const { return num_words_; }

  // --- Marking and resetting by byte range. ---

  // Same as MarkDirty: one atomic RMW per 64-page word (none for a word whose
  // bits are all set already, see the file comment).
  void SetAddrRange(size_t offset, size_t len) const;
  // Clears the pages intersecting [offset, offset + len). One RMW per word.
  void ResetAddrRange(size_t offset, size_t len) const;

  bool IsPageDirty(size_t page) const;

  // --- Harvest API (for the migration loop). ---

  // Moves the dirty bits into `out` and clears them, word by word
  // (exchange(0)). Returns the number of dirty pages taken.
  // REQUIRES: out.size() >= num_words(); InvalidArgument otherwise.
  // Words of `out` past num_words() are left untouched.
  [[nodiscard]] absl::Status GetAndReset(std::span<uint64_t> out,
                                         size_t* dirty_pages = nullptr) const;

  // ORs `n` words in KVM's layout (bit i of word w = page 64w+i) into this
  // bitmap, one RMW per non-zero word; bits past num_pages() are dropped.
  // REQUIRES: n <= num_words(); OutOfRange otherwise (nothing is merged).
  [[nodiscard]] absl::Status Merge(const uint64_t* words, size_t n) const;

  // A copy of the bits without clearing them (for dirty-rate estimates).
  // Per-word atomic, like a harvest.
  std::vector<uint64_t> Snapshot() const;

  // Number of pages currently marked (per-word atomic, not a global snapshot).
  size_t CountDirty() const;

  // Harvests into `scratch` (GetAndReset) and then calls
  // `callback(first_page, page_count)` for every maximal run of dirty pages,
  // in increasing page order. Returns the number of pages harvested.
  // REQUIRES: scratch.size() >= num_words().
  template <typename Callback>
  [[nodiscard]] absl::Status HarvestRuns(std::span<uint64_t> scratch,
                                         Callback&& callback,
                                         size_t* dirty_pages = nullptr) const;

 private:
  std::atomic<uint64_t>& word(size_t w) const { return words_[w]; }

  size_t byte_size_;
  size_t page_shift_;
  size_t num_pages_;
  size_t num_words_;
  // Set once at construction: true iff marks may skip the RMW when their bits
  // are already set (membarrier is registered; see the file comment).
  bool skip_set_bits_;
  // Marked by any writer thread (fetch_or, release), harvested by the
  // migration thread (exchange, acq_rel). Release on marking pairs with the
  // harvester's acquire so the marked data is visible to the harvester; the
  // skip path's ordering comes from HeavyFence() instead.
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

// Calls `callback(first_page, page_count)` for every maximal run of set bits
// in `words` (KVM layout), scanning a word at a time with count-trailing-zeros;
// runs that cross word boundaries are emitted once, merged. Bits at or past
// `num_pages` are ignored.
template <typename Callback>
void ForEachDirtyRun(std::span<const uint64_t> words, size_t num_pages,
                     Callback&& callback) {
  const size_t num_words = std::min(words.size(), (num_pages + 63) / 64);
  size_t run_start = 0;
  size_t run_len = 0;
  for (size_t w = 0; w < num_words; ++w) {
    uint64_t bits = words[w];
    if (w + 1 == num_words && (num_pages & 63) != 0) {
      bits &= (uint64_t{1} << (num_pages & 63)) - 1;
    }
    const size_t base = w * 64;
    if (bits == ~uint64_t{0}) {  // Whole word dirty: extend or start a run.
      if (run_len != 0 && run_start + run_len == base) {
        run_len += 64;
      } else {
        if (run_len != 0) callback(run_start, run_len);
        run_start = base;
        run_len = 64;
      }
      continue;
    }
    while (bits != 0) {
      const size_t first = static_cast<size_t>(std::countr_zero(bits));
      // Bits below `first` are clear, so this counts the run at `first`.
      const size_t len = static_cast<size_t>(std::countr_one(bits >> first));
      const size_t page = base + first;
      if (run_len != 0 && run_start + run_len == page) {
        run_len += len;
      } else {
        if (run_len != 0) callback(run_start, run_len);
        run_start = page;
        run_len = len;
      }
      if (first + len >= 64) break;
      bits &= ~uint64_t{0} << (first + len);
    }
  }
  if (run_len != 0) callback(run_start, run_len);
}

template <typename Callback>
absl::Status AtomicBitmap::HarvestRuns(std::span<uint64_t> scratch,
                                       Callback&& callback,
                                       size_t* dirty_pages) const {
  absl::Status status = GetAndReset(scratch, dirty_pages);
  if (!status.ok()) return status;
  ForEachDirtyRun(std::span<const uint64_t>(scratch.data(), num_words_),
                  num_pages_, callback);
  return absl::OkStatus();
}

inline void AtomicBitmapSlice::MarkDirty(size_t offset, size_t len) const {
  bitmap_->SetAddrRange(base_ + offset, len);
}

inline bool AtomicBitmapSlice::DirtyAt(size_t offset) const {
  return bitmap_->DirtyAt(base_ + offset);
}

// The hot path of every tracked write, inline.
inline void AtomicBitmap::SetAddrRange(size_t offset, size_t len) const {
  if (len == 0 || offset >= byte_size_) return;
  const size_t last_byte = std::min(offset + len, byte_size_) - 1;
  const size_t first_page = offset >> page_shift_;
  const size_t last_page = last_byte >> page_shift_;
  size_t w = first_page / kBitsPerWord;
  const size_t last_w = last_page / kBitsPerWord;
  for (; w <= last_w; ++w) {
    const size_t lo = w == first_page / kBitsPerWord ? first_page % 64 : 0;
    const size_t hi = w == last_w ? last_page % 64 : 63;
    const uint64_t mask = (hi - lo == 63)
                              ? ~uint64_t{0}
                              : (((uint64_t{1} << (hi - lo + 1)) - 1) << lo);
    std::atomic<uint64_t>& word = words_[w];
    // Relaxed load: only decides whether an RMW is needed. If the bits are
    // set, a harvest has not taken them since they were set, and that
    // harvest's HeavyFence() makes this thread's earlier data stores visible
    // before it copies the page.
    if (skip_set_bits_ && (word.load(std::memory_order_relaxed) & mask) == mask) {
      continue;
    }
    // Release: the data written before this mark happens-before the
    // harvester's acquire exchange that takes this bit.
    word.fetch_or(mask, std::memory_order_release);
  }
}

inline bool AtomicBitmap::IsPageDirty(size_t page) const {
  if (page >= num_pages_) return false;
  // Acquire: a caller that sees the bit also sees the data written before it.
  return (words_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
}

}  // namespace livemig

#endif  // LIVEMIG_CORE_ATOMIC_BITMAP_H_
