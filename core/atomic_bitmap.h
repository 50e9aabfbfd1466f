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

  // Whether a mark whose bits are already set may skip its RMW.
  enum class SetBits {
    kSkipWhenSafe,  // Skip where membarrier works (the default).
    kAlwaysRmw,     // Never skip: the path taken without membarrier, which
                    // tests force with this to check it.
  };

  // Tracks ceil(byte_size / page_size) pages. REQUIRES: page_size is a
  // non-zero power of two (asserted; regions always pass the system page
  // size).
  AtomicBitmap(size_t byte_size, size_t page_size,
               SetBits set_bits = SetBits::kSkipWhenSafe);

  AtomicBitmap(const AtomicBitmap&) = delete;
  AtomicBitmap& operator=(const AtomicBitmap&) = delete;

  // --- The tracker concept (core/dirty_tracker.h). ---

  // Marks the pages intersecting [offset, offset + len). Call after writing.
  void MarkDirty(size_t offset, size_t len) const { SetAddrRange(offset, len); }
  // REQUIRES: offset < byte_size() (asserted in debug builds).
  void MarkPageOf(size_t offset) const {
    assert(offset < byte_size_);
    MarkPage(offset >> page_shift_);
  }
  bool DirtyAt(size_t offset) const { return IsPageDirty(offset >> page_shift_); }
  Slice SliceAt(size_t offset) const { return Slice(this, offset); }

  // --- Geometry. ---
  size_t byte_size() const { return byte_size_; }
  size_t page_size() const { return size_t{1} << page_shift_; }
  size_t page_shift() const { return page_shift_; }
  size_t num_pages() const { return num_pages_; }
  size_t num_words() const { return num_words_; }
  // True iff marks of already-set bits skip their RMW (see SetBits).
  bool skips_set_bits() const { return probe_ == words_.get(); }

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
  // GetAndReset that also lists, in the first *listed_words entries of
  // `taken` (when not null; grown to num_words() if shorter), the indices of
  // the words it took non-zero bits from, in increasing order.
  absl::Status Harvest(std::span<uint64_t> out, std::vector<uint32_t>* taken,
                       size_t* listed_words, size_t* dirty_pages) const;
  // Marks `mask` in word `w` (the skip-or-fetch_or step of SetAddrRange).
  void MarkWord(size_t w, uint64_t mask) const;
  // MarkWord for one page. REQUIRES: page < num_pages().
  void MarkPage(size_t page) const;
  // MarkPage's RMW (a release fetch_or of the page's bit).
  void SetPageBit(size_t page) const;
  // SetAddrRange for everything but an in-range write inside one page.
  void SetAddrRangeSlow(size_t offset, size_t len) const;

  size_t byte_size_;
  size_t page_shift_;
  size_t num_pages_;
  size_t num_words_;
  // Marked by any writer thread (fetch_or, release), harvested by the
  // migration thread (exchange, acq_rel). Release on marking pairs with the
  // harvester's acquire so the marked data is visible to the harvester; the
  // skip path's ordering comes from HeavyFence() instead.
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  // What a mark reads to decide whether its bits are already set: words_
  // itself when skipping is allowed, else `zeros_` (never written), so the
  // read never skips. Set once at construction; it spares every tracked
  // write a separate flag test.
  std::unique_ptr<std::atomic<uint64_t>[]> zeros_;
  const std::atomic<uint64_t>* probe_;
};

namespace core_internal {

// The bits of a bitmap's last word that stand for pages (all of them when
// num_pages is a multiple of 64).
constexpr uint64_t LastWordMask(size_t num_pages) {
  return (num_pages % 64) == 0 ? ~uint64_t{0}
                               : (uint64_t{1} << (num_pages % 64)) - 1;
}

// Turns non-zero bitmap words, visited in increasing order, into maximal runs
// of dirty pages: each word yields its runs from two masks, run starts
// (bits & ~(bits << 1)) and run ends (bits & ~(bits >> 1)), popped pairwise
// with count-trailing-zeros; a run reaching a word's end stays open until the
// next word shows whether it continues.
class RunEmitter {
 public:
  explicit RunEmitter(size_t num_pages)
      : bitmap_words_((num_pages + 63) / 64),
        last_mask_(LastWordMask(num_pages)) {}

  size_t bitmap_words() const { return bitmap_words_; }

  // REQUIRES: w increases from call to call; bits != 0.
  template <typename Callback>
  void Word(size_t w, uint64_t bits, Callback& callback) {
    if (w + 1 == bitmap_words_) {
      bits &= last_mask_;
      if (bits == 0) return;
    }
    const size_t page0 = w * 64;
    if (!open_ && (bits & (bits - 1)) == 0 && (bits >> 63) == 0) {
      // One isolated dirty page: the common case in sparse rounds.
      callback(page0 + static_cast<size_t>(std::countr_zero(bits)), size_t{1});
      prev_w_ = w;
      return;
    }
    uint64_t starts = bits & ~(bits << 1);
    uint64_t ends = bits & ~(bits >> 1);
    if (open_) {
      open_ = false;
      if (w == prev_w_ + 1 && (bits & 1) != 0) {
        // The open run continues into this word: its end is our first end.
        starts &= ~uint64_t{1};
        const size_t e = static_cast<size_t>(std::countr_zero(ends));
        ends &= ends - 1;
        if (e == 63) {  // The whole word is dirty: still open.
          open_ = true;
          prev_w_ = w;
          return;
        }
        callback(open_start_, page0 + e + 1 - open_start_);
      } else {
        callback(open_start_, (prev_w_ + 1) * 64 - open_start_);
      }
    }
    while (starts != 0) {
      const size_t s = static_cast<size_t>(std::countr_zero(starts));
      starts &= starts - 1;
      const size_t e = static_cast<size_t>(std::countr_zero(ends));
      ends &= ends - 1;
      if (e == 63) {  // Reaches the word's end: may continue in the next.
        open_ = true;
        open_start_ = page0 + s;
        break;
      }
      callback(page0 + s, e - s + 1);
    }
    prev_w_ = w;
  }

  template <typename Callback>
  void Finish(Callback& callback) {
    if (open_) callback(open_start_, (prev_w_ + 1) * 64 - open_start_);
    open_ = false;
  }

 private:
  const size_t bitmap_words_;
  const uint64_t last_mask_;
  bool open_ = false;      // A run reaches the end of word `prev_w_`.
  size_t open_start_ = 0;  // Its first page.
  size_t prev_w_ = 0;
};

// The calling thread's list of non-zero word indices for HarvestRuns, kept
// between calls so a harvest allocates nothing once warmed up.
std::vector<uint32_t>& HarvestIndexBuffer();

}  // namespace core_internal

// Calls `callback(first_page, page_count)` for every maximal run of set bits
// in `words` (KVM layout), in increasing page order; runs that cross word
// boundaries are emitted once, merged. Bits at or past `num_pages` are
// ignored. Words are scanned in chunks whose non-zero indices are compacted
// without branches first, so sparse bitmaps cost no mispredictions.
template <typename Callback>
void ForEachDirtyRun(std::span<const uint64_t> words, size_t num_pages,
                     Callback&& callback) {
  core_internal::RunEmitter emitter(num_pages);
  const size_t num_words = std::min(words.size(), emitter.bitmap_words());
  constexpr size_t kChunk = 1024;
  uint32_t nonzero[kChunk];
  for (size_t base = 0; base < num_words; base += kChunk) {
    const size_t chunk = std::min(kChunk, num_words - base);
    size_t n = 0;
    for (size_t i = 0; i < chunk; ++i) {
      nonzero[n] = static_cast<uint32_t>(i);
      n += words[base + i] != 0;
    }
    for (size_t k = 0; k < n; ++k) {
      emitter.Word(base + nonzero[k], words[base + nonzero[k]], callback);
    }
  }
  emitter.Finish(callback);
}

template <typename Callback>
absl::Status AtomicBitmap::HarvestRuns(std::span<uint64_t> scratch,
                                       Callback&& callback,
                                       size_t* dirty_pages) const {
  // The harvest lists the words it took, so emitting runs visits only those
  // instead of scanning the whole scratch buffer again.
  std::vector<uint32_t>& taken = core_internal::HarvestIndexBuffer();
  size_t listed = 0;
  absl::Status status = Harvest(scratch, &taken, &listed, dirty_pages);
  if (!status.ok()) return status;
  core_internal::RunEmitter emitter(num_pages_);
  for (size_t i = 0; i < listed; ++i) {
    emitter.Word(taken[i], scratch[taken[i]], callback);
  }
  emitter.Finish(callback);
  return absl::OkStatus();
}

// Offsets that would wrap around past the end of the address space are out
// of range: nothing is marked and nothing is dirty.
inline void AtomicBitmapSlice::MarkDirty(size_t offset, size_t len) const {
  if (offset > SIZE_MAX - base_) return;
  bitmap_->SetAddrRange(base_ + offset, len);
}

inline bool AtomicBitmapSlice::DirtyAt(size_t offset) const {
  if (offset > SIZE_MAX - base_) return false;
  return bitmap_->DirtyAt(base_ + offset);
}

// The hot path of every tracked write, inline and short: a write inside one
// page (every object write, most 4 KiB writes) is two shifts, one compare
// with the end of the range and at most one RMW. The instruction count
// matters more than it seems: a random guest write usually misses the TLB,
// and how many such writes overlap depends on how many fit in the CPU's
// reorder window.
inline void AtomicBitmap::SetAddrRange(size_t offset, size_t len) const {
  // `last` wraps for ranges that run past the address space and for len 0 at
  // offset 0: both fail `last < byte_size_`. Other zero lengths fail
  // `len != 0`. Everything that fails goes to the slow path, which ignores
  // it or clips it.
  const size_t last = offset + len - 1;
  const size_t first_page = offset >> page_shift_;
  if (len != 0 && last < byte_size_ && first_page == last >> page_shift_)
      [[likely]] {
    MarkPage(first_page);
    return;
  }
  SetAddrRangeSlow(offset, len);
}

inline void AtomicBitmap::MarkPage(size_t page) const {
  const size_t w = page / kBitsPerWord;
  // See MarkWord for why the compiler fence and the relaxed load suffice.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (((probe_[w].load(std::memory_order_relaxed) >> (page % kBitsPerWord)) &
       1) == 0) [[unlikely]] {
    SetPageBit(page);  // Out of line: keeps the common path short.
  }
}

inline void AtomicBitmap::MarkWord(size_t w, uint64_t mask) const {
  // Relaxed load: it only decides whether an RMW is needed. If the bits are
  // set, no harvest has taken them since they were set, and the next
  // harvest's HeavyFence() makes this thread's earlier data stores visible
  // before the harvester copies the page. (Without membarrier probe_ reads
  // zeros and every mark takes the RMW.)
  //
  // The compiler must not hoist this load above the caller's data stores
  // (they are relaxed or plain, so it otherwise could): a load that ran
  // before the write could see a bit that a harvest then clears and copies
  // without the write. The CPU-level store->load reordering is what
  // HeavyFence() covers.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if ((probe_[w].load(std::memory_order_relaxed) & mask) == mask) return;
  // Release: the data written before this mark happens-before the
  // harvester's acquire exchange that takes this bit.
  words_[w].fetch_or(mask, std::memory_order_release);
}

inline bool AtomicBitmap::IsPageDirty(size_t page) const {
  if (page >= num_pages_) return false;
  // Acquire: pairs with a marker's release fetch_or. (A writer that skipped
  // its RMW is ordered only by the harvest's HeavyFence, so this is a hint,
  // not a publication point.)
  return (words_[page / 64].load(std::memory_order_acquire) >> (page % 64)) & 1;
}

}  // namespace livemig

#endif  // LIVEMIG_CORE_ATOMIC_BITMAP_H_
