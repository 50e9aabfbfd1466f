// File: migration/internal/known_zero.h
//
// KnownZero: the pages of a source region that the kernel says hold no data,
// found without reading them, so that neither the zero test of round 0 nor
// the source audit touches memory the guest never wrote.
//
// Why: reading a page faults it in. Through a shared mapping of a memfd or
// tmpfs file, a read of a hole allocates and clears a page (64 MiB of holes
// read once: 64 MiB allocated, measured), so migrating a sparse memfd guest
// made the source host hold all of its memory; in private anonymous memory
// each read maps the zero page, a page fault per 4 KiB and a page table
// entry that stays.
//
// How, chosen per region at the start of a migration:
//   - the region maps its own file (MmapRegion with a FileOffset,
//     MAP_SHARED): lseek(2) SEEK_DATA / SEEK_HOLE. A hole reads as zeros;
//     the kernel never reports data (page cache included, swapped shmem
//     included) as a hole. A file whose allocated blocks cover its size
//     has none (a page allocated but never written, fallocate(2), is then
//     read: it is already allocated): nothing is asked.
//   - private anonymous memory, as /proc/self/maps shows it (whatever flags
//     the caller declared): /proc/self/pagemap. A page neither present nor
//     swapped (nor migrating: reported as swapped) was never written, or
//     was discarded (MADV_DONTNEED), and reads as zeros.
//   - anything else (shared anonymous memory, a private file mapping, no
//     /proc): nothing is known; every page is read as before.
// A page the guest writes after it was found zero is dirty and is sent
// again, exactly as for a page the zero test read (the final round and the
// audit run paused).
//
// Thread safety: Find() may run on several threads at once (pread(2) and
// lseek(2) results do not depend on the shared file position).
#ifndef LIVEMIG_MIGRATION_INTERNAL_KNOWN_ZERO_H_
#define LIVEMIG_MIGRATION_INTERNAL_KNOWN_ZERO_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/file_offset.h"
#include "core/mmap_region.h"

namespace livemig::migration_internal {

class KnownZero {
 public:
  enum class Source { kNothing, kFileHoles, kPagemap };

  // For `region`'s 4 KiB pages. Never fails: what cannot be asked is
  // kNothing.
  static KnownZero For(const MmapRegion<AtomicBitmap>& region);

  // (*zero)[i] = 1 iff page first + i is known to hold zeros; resized to
  // `count`. REQUIRES: [first, first + count) inside the region.
  void Find(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const;

  Source source() const { return source_; }

 private:
  KnownZero() = default;
  void FindHoles(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const;
  void FindUnmapped(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const;

  // kFileHoles: the last extent SEEK_HOLE found to hold data. SEEK_HOLE
  // walks the file's page cache up to the next hole, so without it every
  // batch of a fully written 2 GiB file walked to its end (the migration
  // ran 7x slower). Only data is remembered: a page cached as data that
  // became a hole is merely read; a hole is asked for again every time, as
  // it may have been written since.
  struct DataExtent {
    std::mutex mu;
    off_t start = 0, end = 0;  // [start, end), file offsets. Guarded by mu.
  };

  Source source_ = Source::kNothing;
  std::unique_ptr<DataExtent> data_;  // kFileHoles.
  int file_fd_ = -1;         // kFileHoles: the region's (borrowed) file.
  uint64_t file_start_ = 0;  // kFileHoles: the region's offset in it.
  ScopedFd pagemap_;         // kPagemap: /proc/self/pagemap.
  uint64_t first_vpage_ = 0;  // kPagemap: the region's address / 4 KiB.
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_KNOWN_ZERO_H_
