// File: migration/source_audit.h
//
// The source audit: re-hash the paused source memory and compare every page
// with the hash of the version last sent (migration/page_hashes.h). A page
// that differs was written without being marked dirty — through a raw
// pointer, by another process writing a backing file, by a hypervisor log
// nobody merged — so the destination holds an older version of it.
//
// The sender runs it while the guest is paused: before the handover with
// verify=full (a finding fails the migration, the guest resumes), after the
// destination committed with verify=sent (a finding is reported: the
// destination already owns the guest). It reads all memory the kernel does
// not know to be zero (never-written pages are not faulted in:
// internal/known_zero.h): O(memory), spread over several threads.
//
//   SourceAudit audit = AuditSource(memory, sent_hashes);
//   if (audit.changed > 0) ... DescribeChangedPages(audit) ...
//
// Thread safety: pure; REQUIRES nothing writes `memory` or `sent` meanwhile
// (the guest is paused and the channels idle).
#ifndef LIVEMIG_MIGRATION_SOURCE_AUDIT_H_
#define LIVEMIG_MIGRATION_SOURCE_AUDIT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "migration/page_hashes.h"

namespace livemig {

struct ChangedPage {
  uint32_t region = 0;
  uint64_t page = 0;        // In the region, in kHashedPageSize pages.
  uint64_t guest_addr = 0;  // Of the page's first byte.
};

struct SourceAudit {
  uint64_t changed = 0;            // Pages that differ from what was sent.
  std::vector<ChangedPage> first;  // The first `max_listed`, by address.
  uint64_t bytes = 0;              // Memory re-hashed.
};

// REQUIRES: sent.size() == memory.num_regions() and sent[r] has a hash per
// page of region r. `threads` 0: one per CPU, at most 8.
SourceAudit AuditSource(const GuestMemory<AtomicBitmap>& memory,
                        const std::vector<PageHashes>& sent, size_t max_listed = 8,
                        unsigned threads = 0);

// "3 pages changed without being marked dirty: region 0 page 5 (guest
// 0x5000), ..." — the first pages listed.
std::string DescribeChangedPages(const SourceAudit& audit);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_SOURCE_AUDIT_H_
