// File: migration/destination_memory.h
//
// What a destination VMM is told about each region of an incoming migration,
// and what it may lend for it: plain values, no protobuf (the wire's
// RegionInfo stays inside livemig).
//
//   options.region_memory = [&](const RegionDescription& r)
//       -> absl::StatusOr<ProvidedMemory> {
//     if (r.index != 0) return ProvidedMemory{};  // The receiver's own.
//     return ProvidedMemory{my_memfd_mapping, r.size};
//   };
//
// Thread safety: plain values.
#ifndef LIVEMIG_MIGRATION_DESTINATION_MEMORY_H_
#define LIVEMIG_MIGRATION_DESTINATION_MEMORY_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace livemig {

// One region of the table the source sent.
struct RegionDescription {
  enum class Backing { kAnonymous, kFile };

  uint32_t index = 0;       // Its place in the table (and in ReceivedMigration).
  uint32_t table_regions = 0;  // How many regions the whole table has.
  uint64_t guest_addr = 0;  // Guest physical address of its first byte.
  uint64_t size = 0;        // Bytes.
  uint32_t page_size = 0;   // Of the source's backing (4096, or a huge page).
  Backing backing = Backing::kAnonymous;
  // kFile: where the receiver rebuilds it, relative to its root directory,
  // and the offset of the region's first byte in that file. Empty and 0 for
  // kAnonymous.
  std::string file_path;
  uint64_t file_offset = 0;
  int prot = 0;            // PROT_* bits of the source's mapping.
  bool hugetlbfs = false;  // The source's file lives on hugetlbfs.

  friend bool operator==(const RegionDescription&, const RegionDescription&) = default;
};

// A mapping the VMM owns, lent to the receiver for one region: at least the
// region's size, page-aligned, readable and writable, and mapped until the
// memory ReceiveOne() returns is destroyed. Its content need not be zero
// (the receiver writes every page, zeros included, unless `zeroed`). Lent
// ranges must not overlap each other. Null addr: the receiver makes its own
// mapping.
struct ProvidedMemory {
  void* addr = nullptr;
  size_t size = 0;
  // Optional: the file `addr` maps (MAP_SHARED: a memfd, a tmpfs or disk
  // file) and the offset in it of addr's first byte. With it, round 0's
  // pages may be written into the file with pwrite(2) instead of through
  // the mapping: pages the file does not hold yet are then allocated
  // without being cleared first (internal/file_landing.h), and the mapping
  // is never faulted in by the receiver. The receiver dup()s it; -1: none.
  // Checked before any page lands (internal/provided_mapping.h): the range
  // must be mapped readable and writable, and with an fd MAP_SHARED of that
  // fd's file at file_offset, the fd open for writing without O_APPEND;
  // otherwise the table is refused with InvalidArgument naming the region.
  int fd = -1;
  uint64_t file_offset = 0;
  // The VMM vouches that every byte is zero (a fresh memfd or file): pages
  // the source sends as ZERO are then left alone instead of cleared, so
  // they stay holes, not written or faulted in.
  bool zeroed = false;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_DESTINATION_MEMORY_H_
