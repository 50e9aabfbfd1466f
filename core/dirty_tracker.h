// File: core/dirty_tracker.h
//
// The dirty-tracking concept every region and slice is parameterized on, and
// `NoBitmap`, the tracker that tracks nothing at zero cost.
//
// A tracker records which pages of a region were written. Offsets and lengths
// are in bytes relative to the start of whatever the tracker covers; the
// tracker turns them into pages. The contract every tracker follows (checked
// by core/dirty_tracker_contract_test.cc against every implementation):
//
//   * MarkDirty(offset, len) marks every page that intersects
//     [offset, offset + len). len == 0 marks nothing. Pages at or past the end
//     of the tracked range are ignored (never an error, never out-of-bounds).
//   * DirtyAt(offset) is true iff the page holding byte `offset` is marked.
//     Out-of-range offsets are never dirty.
//   * SliceAt(offset) returns a tracker of type `Slice` for the bytes starting
//     at `offset`: marking byte 0 of the slice marks byte `offset` of the
//     parent. Slices of slices add their offsets.
//   * (Region trackers only.) MarkPageOf(offset) marks the page holding byte
//     `offset`, the same as MarkDirty(offset, 1) but without its range checks:
//     the fast path for a write the caller has bounds-checked and knows stays
//     inside one page. REQUIRES: offset is inside the tracked range.
//
// Writers call MarkDirty *after* the bytes are written (the order the
// harvester relies on: see core/atomic_bitmap.h).
//
// Thread safety: trackers are safe to use from any number of threads; the
// methods above are const and may run concurrently.
#ifndef LIVEMIG_CORE_DIRTY_TRACKER_H_
#define LIVEMIG_CORE_DIRTY_TRACKER_H_

#include <concepts>
#include <cstddef>

namespace livemig {

// A tracker slice: what a VolatileSlice carries to mark the pages it writes.
template <typename S>
concept DirtySlice = std::copyable<S> &&
    requires(const S& s, size_t offset, size_t len) {
      { s.MarkDirty(offset, len) } -> std::same_as<void>;
      { s.DirtyAt(offset) } -> std::same_as<bool>;
      { s.SliceAt(offset) } -> std::same_as<S>;
    };

// A tracker owned by a region: constructed from the region's byte size and the
// page size, and able to hand out slices.
template <typename B>
concept DirtyTracker =
    std::constructible_from<B, size_t, size_t> &&
    DirtySlice<typename B::Slice> &&
    requires(const B& b, size_t offset, size_t len) {
      { b.MarkDirty(offset, len) } -> std::same_as<void>;
      { b.DirtyAt(offset) } -> std::same_as<bool>;
      { b.SliceAt(offset) } -> std::same_as<typename B::Slice>;
      { b.MarkPageOf(offset) } -> std::same_as<void>;
    };

// The tracker that tracks nothing (vm-memory's `impl Bitmap for ()`). Every
// call compiles to nothing, so an untracked region pays no cost for the
// tracking hooks in its write path.
class NoBitmap {
 public:
  using Slice = NoBitmap;

  NoBitmap() = default;
  NoBitmap(size_t /*byte_size*/, size_t /*page_size*/) {}

  void MarkDirty(size_t /*offset*/, size_t /*len*/) const {}
  void MarkPageOf(size_t /*offset*/) const {}
  bool DirtyAt(size_t /*offset*/) const { return false; }
  NoBitmap SliceAt(size_t /*offset*/) const { return NoBitmap(); }
};

static_assert(DirtyTracker<NoBitmap>);

}  // namespace livemig

#endif  // LIVEMIG_CORE_DIRTY_TRACKER_H_
