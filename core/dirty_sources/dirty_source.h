// File: core/dirty_sources/dirty_source.h
//
// DirtySource: something other than livemig's tracked API that sees guest
// memory being written — KVM's dirty log or dirty ring, userfaultfd
// write-protection — and reports it by OR-ing into the regions'
// AtomicBitmaps. The bitmaps stay the one thing the migration loop reads, so
// every guarantee built on them (no lost bit, a failed attempt gives every
// harvested bit back) holds for these writes too.
//
//   UffdWriteTracker uffd(memory);             // a DirtySource
//   SenderOptions options;
//   options.dirty_sources = {&uffd};
//   sender.Migrate(memory, vm);                // Start, Collect..., Stop
//
// The sender drives a source through one migration attempt:
//   Start()    once, before round 0 copies any page. From its return on,
//              every write the source can see is reported by a later
//              Collect(). (Round 0 copies every page after Start, so what
//              was written before needs no report.)
//   Collect()  before every harvest and every dirty-volume estimate, on the
//              migration thread; also after Pause(), for the final round.
//              ORs into the owning region's bitmap every page written since
//              Start() or the previous Collect(). A Collect() that fails
//              may have lost pages it had taken from the kernel: the
//              sender then marks every page dirty when the attempt ends.
//   Stop()     once when the attempt ends, successfully or not; also called
//              when Start() failed. After it the source sees nothing and
//              holds no protection (a later Start() begins afresh). What it
//              saw since the last Collect() may be dropped: when an attempt
//              fails, the sender calls Collect() once more right before
//              Stop() (and before it resumes a paused guest), so no write
//              the source saw is lost to the bitmaps.
//
// The ordering rule every implementation keeps: a page is re-armed
// (write-protected again, its log or ring entry cleared) BEFORE its bit is
// OR-ed into the bitmap. The sender copies a page only after it harvested
// the bit, so a write that lands after the copy is seen by the re-armed
// tracking and reported by the next Collect(); the other order would lose
// it. Reporting a page that was not written (a conservative extra) is
// allowed; missing one is not.
//
// Thread safety: Start/Collect/Stop are called from one thread at a time.
// An implementation that must also collect from elsewhere (a vCPU thread
// handling a full dirty ring) serializes that itself. The guest and the VMM
// keep writing memory meanwhile; the bitmaps are safe for that.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_DIRTY_SOURCE_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_DIRTY_SOURCE_H_


#include "absl/status/status.h"

namespace livemig {

class DirtySource {
 public:
  virtual ~DirtySource() = default;

  // A short stable name for stats and flags: "kvm-log", "kvm-ring", "uffd".
  virtual const char* name() const = 0;

  [[nodiscard]] virtual absl::Status Start() = 0;
  [[nodiscard]] virtual absl::Status Collect() = 0;
  virtual void Stop() = 0;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_DIRTY_SOURCE_H_
