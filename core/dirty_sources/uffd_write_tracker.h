// File: core/dirty_sources/uffd_write_tracker.h
//
// UffdWriteTracker: a DirtySource ("uffd") that sees every write to guest
// memory made through this process's page tables, by write-protecting the
// VMM's mapping of guest RAM with userfaultfd in asynchronous mode
// (UFFD_FEATURE_WP_ASYNC, Linux 6.7+) and harvesting with PAGEMAP_SCAN.
//
//   if (absl::Status why = UffdWriteTracker::Probe(); !why.ok()) { ...fallback... }
//   UffdWriteTracker uffd(memory);              // memory must outlive it
//   options.dirty_sources = {&uffd};            // the sender Starts/Collects/Stops
//
// How it works. Start() opens a userfaultfd (/dev/userfaultfd with
// USERFAULTFD_IOC_NEW, else the userfaultfd(2) syscall), enables WP_ASYNC
// and WP_UNPOPULATED, registers every region of `memory` write-protect-only
// and write-protects it whole (in chunks of at most protect_chunk_bytes, so
// no single ioctl holds the mm lock for all of guest RAM), including pages
// never touched (pte markers). A write to a protected page takes one minor
// fault that the kernel resolves by itself: it drops the protection and the
// page counts as written; no thread of ours is involved. Collect() runs
// PAGEMAP_SCAN over each region with PM_SCAN_WP_MATCHING|PM_SCAN_CHECK_WPASYNC
// and category/return mask PAGE_IS_WRITTEN, which lists the written pages and
// write-protects them again in the same walk, and ORs each listed range into
// the region's AtomicBitmap. It loops until the walk covered the region
// (walk_end == end), scan_vec_len ranges per call.
//
// Ordering rule (DirtySource's): the kernel re-protects a page inside the
// same PAGEMAP_SCAN call that reports it, so its bit is OR-ed into the bitmap
// only after it is armed again. A write landing after the re-protect faults
// and shows in the next Collect(); a write before it is in this one. The
// re-protect flushes the TLB on every CPU running this mm, so those CPUs'
// earlier stores to the page are visible before the ioctl returns, and the
// bitmap's harvest orders them before the sender's copy.
//
// What it sees: every store through this process's page tables into the
// registered ranges: VMM threads writing through raw pointers (device
// emulation, virtio queues), the tracked API's own writes (harmless
// duplicates), KVM guest writes (KVM maps guest RAM through GUP with
// FOLL_WRITE, which takes the same fault; its MMU notifier drops KVM's
// mapping when a scan re-protects), and the kernel writing into the mapping
// on the process's behalf (read(2), recv(2): copy_to_user takes the fault).
// Reads never count. Written pages are reported exactly, at 4 KiB: no false
// positives were seen for reads or for untouched pages.
//
// What it misses: DMA into pages that a device pinned long-term before the
// write (VFIO, RDMA): the device does not walk page tables. And discards:
// MADV_DONTNEED on a MAP_PRIVATE file mapping silently reverts the page to
// the file's content without reporting it; hole punching (MADV_REMOVE,
// fallocate PUNCH_HOLE) on shmem/memfd is untested. The VMM must mark pages
// it discards (balloon, free page reporting) itself. (MADV_DONTNEED on
// private anonymous memory is reported; on shmem/memfd it keeps the content.)
//
// Costs (measured on this project's 2-vCPU PVM machine, Linux 6.18, with
// `bazel run -c opt //core/dirty_sources:bench`: the benchmark thread's CPU
// time, medians of 5, ranges over 3 runs on a box loaded by other jobs):
//   first write to a page after a Collect (one async WP fault, resolved in
//   the kernel): 0.83–0.96 µs anonymous, 0.92–1.25 µs memfd (the notes: a
//   MAP_SHARED ext4 file 7–11 µs for page_mkwrite; a KVM guest's first write
//   3.5–6.5 µs), against 10–11 ns for a store to an unprotected page;
//   Collect() over 1 GiB (262144 pages): 0.26–0.45 ms at 0%, 0.8–1.0 ms at
//   1% (2622 pages, 6 PAGEMAP_SCAN calls of 512 ranges), 2.1–2.5 ms at 10%;
//   Start() of 1 GiB already populated: 27–36 ms (register + write-protect
//   262144 PTEs; never-touched ranges also get page tables for the markers);
//   Stop() of 1 GiB: 27–47 ms (unregistering clears every PTE's WP bit), so
//   a caller that stops while the guest is paused adds that to the pause.
// Transparent huge pages are split to 4 KiB on the first write to a
// protected huge page, and stay split: guest RAM loses its THPs (tracking
// stays exact).
//
// Requirements: Linux 6.7+ (WP_ASYNC and PAGEMAP_SCAN), and either access to
// /dev/userfaultfd (root-only by default) or the userfaultfd(2) syscall
// (vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE). Probe() says which one
// is missing. One userfaultfd per range: a second tracker over the same
// memory fails Start() (EBUSY). The fd stays open from Start() to Stop():
// closing it drops every protection.
//
// Thread safety: Start/Collect/Stop and stats() from one thread at a time
// (the sender's migration thread). Any number of threads, and the guest, may
// write the memory meanwhile. `memory` must outlive the tracker and keep its
// regions mapped while started.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_UFFD_WRITE_TRACKER_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_UFFD_WRITE_TRACKER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"

namespace livemig {

namespace uffd_internal {
struct PageRegion;
}  // namespace uffd_internal

class UffdWriteTracker : public DirtySource {
 public:
  struct Options {
    // Ranges (24 bytes each) returned per PAGEMAP_SCAN call; a scan with more
    // written ranges takes several calls. REQUIRES: > 0. Keep it <= 512: the
    // kernel buffers at most 512 ranges (one 2 MiB walk step) internally,
    // and a call whose vec is larger than that and that needed several
    // internal flushes answers with walk_end at the last flush, not at
    // `end` (measured on 6.18), so the loop pays one more, partial scan.
    size_t scan_vec_len = 512;
    // Largest range one UFFDIO_WRITEPROTECT call covers in Start().
    // REQUIRES: a multiple of the page size, > 0.
    size_t protect_chunk_bytes = size_t{64} << 20;
  };

  // Counters since construction, for stats and tests.
  struct Stats {
    uint64_t starts = 0;
    uint64_t collects = 0;
    uint64_t scan_ioctls = 0;      // PAGEMAP_SCAN calls.
    uint64_t ranges_reported = 0;  // page_region entries returned.
    uint64_t pages_reported = 0;   // Pages OR-ed into the bitmaps.
  };

  // OK iff a tracker can work in this process on this kernel. Runs the whole
  // sequence on a throw-away userfaultfd and a one-page scratch mapping
  // (open, UFFDIO_API, register, protect, write, PAGEMAP_SCAN), so "OK" means
  // it was seen working. Otherwise the reason:
  //   PermissionDenied   no access to /dev/userfaultfd and the syscall is
  //                      refused (vm.unprivileged_userfaultfd=0, no
  //                      CAP_SYS_PTRACE);
  //   Unimplemented      no userfaultfd at all, or the kernel lacks
  //                      UFFD_FEATURE_WP_ASYNC / PAGEMAP_SCAN (needs 6.7+);
  //   Internal (or the errno's code)  anything else, naming the step.
  // Cheap (~40 µs measured); the result may be cached by the caller.
  [[nodiscard]] static absl::Status Probe();
  static bool Available() { return Probe().ok(); }

  // Tracks every region of `memory`. Nothing happens until Start().
  explicit UffdWriteTracker(const GuestMemory<AtomicBitmap>& memory);
  UffdWriteTracker(const GuestMemory<AtomicBitmap>& memory, Options options);
  // Stops if started.
  ~UffdWriteTracker() override;
  UffdWriteTracker(const UffdWriteTracker&) = delete;
  UffdWriteTracker& operator=(const UffdWriteTracker&) = delete;

  const char* name() const override { return "uffd"; }

  // Opens the userfaultfd, registers and write-protects every region. From
  // its return on, every write to the regions is reported by a later
  // Collect(). FailedPrecondition if already started. On any error nothing
  // stays registered or open (Stop() is then a no-op), and the error names
  // the step and the region: e.g. PermissionDenied (no userfaultfd access),
  // Unimplemented (kernel lacks WP_ASYNC), ResourceExhausted (no memory for
  // page tables), Internal "... EBUSY" (the range is registered elsewhere).
  [[nodiscard]] absl::Status Start() override;

  // ORs into each region's bitmap every page written since Start() or the
  // previous Collect(), each re-protected before its bit is set.
  // FailedPrecondition before Start(). On a scan error the pages already
  // reported stay reported; a later Collect() reports the rest.
  [[nodiscard]] absl::Status Collect() override;

  // Unregisters every region (which drops the protection: writes are free
  // and unseen from here on) and closes the fds. Idempotent; a later Start()
  // begins afresh.
  void Stop() override;

  bool started() const { return uffd_.valid(); }
  const Stats& stats() const { return stats_; }

 private:
  // Host range [start, end) of region `i`, rounded out to whole pages.
  struct Range {
    uint64_t start;
    uint64_t end;
  };

  absl::Status RegisterAndProtect(size_t region_index);
  absl::Status ScanRegion(size_t region_index);

  const GuestMemory<AtomicBitmap>& memory_;
  const Options options_;
  std::vector<Range> ranges_;  // One per region of memory_, same order.
  ScopedFd uffd_;              // Valid iff started.
  ScopedFd pagemap_;           // /proc/self/pagemap, valid iff started.
  size_t registered_ = 0;      // Regions [0, registered_) are registered.
  std::vector<uffd_internal::PageRegion> vec_;  // scan_vec_len entries.
  Stats stats_;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_UFFD_WRITE_TRACKER_H_
