// File: migration/internal/provided_mapping.h
//
// CheckProvidedMapping: what the receiver verifies of memory a VMM lends it
// (ProvidedMemory, destination_memory.h) before the first page lands there.
//
// Why: a mistake in what the VMM lends would not fail loudly later. A range
// that is not mapped, or not writable, crashes the receiver with SIGSEGV on
// the first page. Worse, an fd that is not the file the range maps (or an
// offset a page off, or a descriptor opened O_APPEND) makes round 0's
// pwrite(2) put the pages where the guest never sees them, while every
// page's hash, taken from the buffer the write copied (file_landing.h),
// still matches what the source sent: the migration would verify and hand
// over the wrong memory.
//
// Checked against /proc/self/maps, whose lines come in address order: every
// byte of [addr, addr + size) is mapped readable and writable; with an fd,
// every mapping in the range is MAP_SHARED of the fd's file (same device and
// inode) at the offset that puts addr at file_offset, and the fd is open for
// writing without O_APPEND (with which Linux's pwrite(2) appends).
//
// Thread safety: reads the process's mappings; REQUIRES nothing maps or
// unmaps the range meanwhile (the VMM lends it for the whole migration).
#ifndef LIVEMIG_MIGRATION_INTERNAL_PROVIDED_MAPPING_H_
#define LIVEMIG_MIGRATION_INTERNAL_PROVIDED_MAPPING_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace livemig::migration_internal {

// OK, or InvalidArgument naming `region`, the range, the first address that
// fails and why; Internal if /proc/self/maps cannot be read. `fd` -1: only
// the mapping is checked.
[[nodiscard]] absl::Status CheckProvidedMapping(const void* addr, size_t size, int fd,
                                                uint64_t file_offset, uint32_t region);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_PROVIDED_MAPPING_H_
