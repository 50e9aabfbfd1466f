// File: migration/internal/prealloc.h
//
// Populator: makes a destination's region mappings resident before pages
// arrive, so that the receiver's channel readers land bytes in
// memory that is already allocated, zeroed and mapped instead of taking a
// page fault (allocation + zeroing) inside recvmsg for every 4 KiB page.
//
// How: madvise(MADV_POPULATE_WRITE) (Linux >= 5.14) over each target, in
// chunks of kChunkBytes, claimed in address order by `threads` helper
// threads. Populating never changes a mapping's content (a page already
// present is left as it is; an absent one becomes a zeroed private page,
// or the file's zeroed block), so VMM-provided memory keeps what it holds. Private anonymous targets get the
// kernel's transparent huge pages where MADV_HUGEPAGE was advised (the
// store advises it); shmem files get them only where their tmpfs allows
// (huge=advise/within_size/always, or shmem_enabled for memfds).
//
// Failure, the first one stops every thread (later chunks are not
// populated; chunks already populated stay so):
//   ResourceExhausted  ENOMEM (no memory for the pages), EFAULT (the
//                      backing cannot provide a page: a file too short or
//                      on a full filesystem, the same case that would be
//                      SIGBUS for a write), ENOSPC/EDQUOT. The message names
//                      the region, its backing file and the bytes asked.
//   FailedPrecondition EINVAL: the kernel lacks MADV_POPULATE_WRITE, or the
//                      mapping cannot be populated (VM_PFNMAP/VM_IO).
//   others             PosixError codes, with the same context.
//
// Thread safety: Start(), Wait(), Stop(), stats() and destruction are for
// the owner's thread; the helpers share nothing with it but the atomics and
// the error below.
#ifndef LIVEMIG_MIGRATION_INTERNAL_PREALLOC_H_
#define LIVEMIG_MIGRATION_INTERNAL_PREALLOC_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"

namespace livemig::migration_internal {

// One mapping to populate. The memory must stay mapped until the Populator
// that uses it was stopped or waited for.
struct PopulateTarget {
  uint32_t region = 0;     // For messages: "region <region>".
  uint8_t* addr = nullptr;
  size_t size = 0;
  // What backs it, for messages: a path, or a description ("the VMM's
  // memory"); empty for the store's own anonymous memory.
  std::string backing;
};

// What a finished population did.
struct PopulateStats {
  uint64_t populated_bytes = 0;  // Chunks made resident by the helpers.
  double ms = 0;                 // From Start to the last helper's end.
  int threads = 0;
};

class Populator {
 public:
  // Chunk granularity: one THP, so a chunk never splits a huge page's work.
  static constexpr size_t kChunkBytes = size_t{2} << 20;

  // One helper per core, at most 8 (populating is memory-bandwidth bound;
  // more threads than cores only take turns).
  static int DefaultThreads();

  // Over `targets` (which may be empty: Wait() then returns OK at once).
  explicit Populator(std::vector<PopulateTarget> targets);
  Populator(const Populator&) = delete;
  Populator& operator=(const Populator&) = delete;
  // Stop(), then joins.
  ~Populator();

  // Starts `threads` helpers (at least 1; no more than there are chunks).
  // REQUIRES: called once, before Wait() or Stop().
  void Start(int threads);
  // Blocks until every chunk is populated, or one failed; returns
  // the first failure (see the file comment). Idempotent.
  [[nodiscard]] absl::Status Wait();
  // Helpers finish the chunk in hand and stop; joins them. Idempotent.
  void Stop();

  // REQUIRES: Wait() or Stop() returned.
  PopulateStats stats() const;

 private:
  void Work();
  void Join();
  // The target and byte range of chunk `index` of the concatenated targets.
  struct Chunk {
    size_t target;
    uint64_t offset;
    uint64_t len;
  };
  Chunk ChunkAt(uint64_t index) const;
  absl::Status ErrorFor(const PopulateTarget& target, uint64_t offset, int error) const;

  const std::vector<PopulateTarget> targets_;
  std::vector<uint64_t> first_chunk_;  // Per target; plus the total at the end.
  // The next chunk to claim. Relaxed: it only hands out indices; the chunks'
  // memory is the kernel's business, and results are read after the join.
  std::atomic<uint64_t> next_{0};
  // Set by Stop() or the first failure. Relaxed: it only says "stop"; the
  // join orders everything the helpers did before the owner reads it.
  std::atomic<bool> stop_{false};
  // Summed by the helpers, read after the join (which orders them). Relaxed.
  std::atomic<uint64_t> populated_{0};
  std::atomic<int64_t> last_end_ns_{0};  // Max over helpers; read after join.
  int64_t start_ns_ = 0;
  mutable std::mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
  bool joined_ = false;
};

// Populates every target on `threads` helpers and waits: the synchronous
// form, for allocating everything before the first page is accepted.
[[nodiscard]] absl::Status PopulateAll(std::vector<PopulateTarget> targets, int threads,
                                       PopulateStats* stats);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_PREALLOC_H_
