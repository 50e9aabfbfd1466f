// File: core/testing/always_rmw_bitmap.h
//
// AlwaysRmwBitmap: an AtomicBitmap whose marks never skip their RMW, as on a
// kernel without membarrier. A tracker type of its own (the region builds it
// from size and page size), so tests can run regions, guest memory and the
// concurrency test on that fallback path on any machine.
#ifndef LIVEMIG_CORE_TESTING_ALWAYS_RMW_BITMAP_H_
#define LIVEMIG_CORE_TESTING_ALWAYS_RMW_BITMAP_H_

#include <cstddef>

#include "core/atomic_bitmap.h"
#include "core/dirty_tracker.h"

namespace livemig::testing {

class AlwaysRmwBitmap : public AtomicBitmap {
 public:
  AlwaysRmwBitmap(size_t byte_size, size_t page_size)
      : AtomicBitmap(byte_size, page_size, SetBits::kAlwaysRmw) {}
};

static_assert(DirtyTracker<AlwaysRmwBitmap>);

}  // namespace livemig::testing

#endif  // LIVEMIG_CORE_TESTING_ALWAYS_RMW_BITMAP_H_
