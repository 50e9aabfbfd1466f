// File: migration/internal/dirty_harvest.h
//
// DirtyHarvest: the sender's side of the dirty bitmaps during one migration
// attempt. It starts the attempt's dirty sources (core/dirty_sources/) before
// round 0 and stops them when it is destroyed. Each round it has every source
// collect and merges the hypervisor's log (VmControl::CollectDirty) into
// every region's AtomicBitmap, harvests the bitmaps, cuts the dirty
// pages into PageWork batches of at most `batch_pages` pages, and remembers
// every bit it took, so that a failed attempt can give them all back
// (GiveBack) and no dirty page is ever lost.
//
//   DirtyHarvest harvest(memory, vm, sources, 256);
//   LIVEMIG_RETURN_IF_ERROR(harvest.TakeAll(queue));            // round 0
//   LIVEMIG_ASSIGN_OR_RETURN(uint64_t pages, harvest.Harvest(1, queue));
//   ... on failure: harvest.GiveBack();
//
// Thread safety: one thread (the migration's) calls everything; the bitmaps
// themselves may be written by the guest meanwhile (their own contract).
#ifndef LIVEMIG_MIGRATION_INTERNAL_DIRTY_HARVEST_H_
#define LIVEMIG_MIGRATION_INTERNAL_DIRTY_HARVEST_H_

#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/guest_memory.h"
#include "migration/internal/send_channel.h"
#include "migration/vm_control.h"

namespace livemig::migration_internal {

class DirtyHarvest {
 public:
  using Queue = std::function<void(PageWork)>;

  // `memory`, `vm` and the sources must outlive the harvest.
  // REQUIRES: batch_pages > 0.
  DirtyHarvest(const GuestMemory<AtomicBitmap>& memory, VmControl& vm,
               std::span<DirtySource* const> sources, uint32_t batch_pages);
  DirtyHarvest(const DirtyHarvest&) = delete;
  DirtyHarvest& operator=(const DirtyHarvest&) = delete;
  ~DirtyHarvest();  // Stops every source started.

  // Round 0: starts every dirty source (the error names the one that
  // failed), then takes every bit set so far (so that round 1 sends only what
  // changed during round 0) and queues every page of every region.
  absl::Status TakeAll(const Queue& queue);
  // Round `round` > 0: merges the hypervisor logs, harvests every region and
  // queues the dirty pages; returns how many.
  absl::StatusOr<uint64_t> Harvest(uint32_t round, const Queue& queue);
  // Pages dirty now (hypervisor logs merged), without taking them.
  absl::StatusOr<uint64_t> Pending();
  // Marks every bit taken during the attempt dirty again.
  void GiveBack();
  // A failed attempt: has every started source collect one last time (what
  // it saw since the last harvest reaches the bitmaps: the sources' Stop()
  // drops what it holds), then stops it. A source that cannot collect, or
  // any collect that failed earlier in the attempt (a source's or the
  // hypervisor log's: it may have taken bits from the kernel and lost them),
  // marks every page of every region dirty instead (an extra is allowed, a
  // miss is not). Call it while the guest is still paused when it is: a write
  // between that collect and the stop is then impossible (in a live round
  // it is a window of microseconds). The destructor has nothing left to stop.
  void StopSources();

  uint64_t syncs() const { return syncs_; }  // Harvests so far.

 private:
  // Has every source collect (they OR into the bitmaps themselves).
  absl::Status CollectSources();
  // ORs the hypervisor's dirty log for region `r` into its bitmap.
  absl::Status MergeHypervisorLog(size_t r);
  // Records the bits just harvested from region `r` (in scratch_).
  void RememberTaken(size_t r);

  const GuestMemory<AtomicBitmap>& memory_;
  VmControl& vm_;
  const std::span<DirtySource* const> sources_;
  size_t started_ = 0;  // sources_[0, started_) were started.
  const uint32_t batch_pages_;
  // taken_[r]: every bit harvested from region r during this attempt.
  std::vector<std::vector<uint64_t>> taken_;
  std::vector<uint64_t> scratch_;
  uint64_t syncs_ = 0;
  // A collect failed during the attempt: StopSources marks every page.
  bool collect_failed_ = false;
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_DIRTY_HARVEST_H_
