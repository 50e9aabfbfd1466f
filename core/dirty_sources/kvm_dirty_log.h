// File: core/dirty_sources/kvm_dirty_log.h
//
// KvmDirtyLog: a DirtySource reading KVM's per-memslot dirty log
// (KVM_GET_DIRTY_LOG), in one of two modes:
//
//   kClassic  KVM_GET_DIRTY_LOG returns the log and write-protects the
//             reported pages again before it returns; then the words are
//             OR-ed into the region's bitmap (AtomicBitmap::Merge).
//   kManual   KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET: GET no
//             longer clears; KVM_CLEAR_DIRTY_LOG re-protects exactly the
//             64-page words that had bits set (one ioctl per run of non-zero
//             words, at most `clear_chunk_pages` each), then the OR.
//
//   KvmDirtyLog log(vm->kvm_view(), memory, {.mode = KvmDirtyLog::Mode::kManual});
//   options.dirty_sources = {&log};
//
// Start() re-issues KVM_SET_USER_MEMORY_REGION on every live slot with
// KVM_MEM_LOG_DIRTY_PAGES (same slot, address, size, HVA). In manual mode it
// first enables the capability (so the fresh log is all ones and nothing is
// protected), then clears every page in chunks of `clear_chunk_pages`, so
// every page is write-protected before Start() returns — before round 0
// copies anything — and no single ioctl holds KVM's mmu lock for the whole
// slot. Stop() turns logging off again (and manual protect off).
//
// Ordering rule: re-protect, THEN OR into the bitmap, so a write after the
// sender's copy faults on a protected page and shows in the next Collect().
//
// What it sees: stores by the guest (vCPUs) into the slots. Conservative
// extras on a shadow-paging host (PVM): a page whose guest PTE has D=1 is
// logged on a read or fetch fault (the guest's code page), and a guest
// page-table page is logged when KVM sets A/D bits in it. What it misses:
// the VMM's own writes through its mapping (device emulation): those must
// go through the tracked API (GuestMemory::Write marks the bitmap).
//
// Cost (this PVM host, 2 loaded vCPUs; bazel run -c opt //tools/vmm:bench,
// 1 GiB slot, dirty pages spread one per 10 or 100 pages):
//   classic  Collect at 1% (2621 pages) ~0.16 ms, at 10% ~0.98 ms.
//   manual   Collect at 1% ~1.2 ms (GET ~7 µs, CLEAR ~1.1 ms), at 10%
//            ~1.1 ms: with INITIALLY_SET, KVM write-protects the 2 MiB
//            level for every non-zero 64-page word it clears, so scattered
//            pages cost ~7x classic here; Start() (protecting all 1 GiB in
//            8 chunks) 3.5-7 ms, classic Start() 0.3-1 ms.
//   guest    its first store to a page after a harvest is a write-protect
//            exit: ~4-8 µs (notes: 2.3-3 µs on a quieter host), against
//            ~0.05-0.1 µs once writable.
// Thread safety: Start/Collect/Stop from one thread at a time (the sender's
// migration thread). The VM's vCPUs keep running meanwhile.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_LOG_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_LOG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/guest_memory.h"

namespace livemig {

// One KVM memslot as the VMM registered it.
struct KvmMemslot {
  uint32_t slot = 0;  // (as_id << 16) | id, as KVM's ioctls take it.
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint32_t flags = 0;  // The slot's flags without KVM_MEM_LOG_DIRTY_PAGES.
  size_t region_index = 0;  // The GuestMemory region whose bitmap it feeds.
};

// What a KVM dirty source needs from the VMM (and nothing of the VMM
// itself: core does not depend on tools/).
struct KvmVmView {
  int vm_fd = -1;  // Borrowed: must outlive the source.
  std::vector<KvmMemslot> slots;
};

// Turns KVM_MEM_LOG_DIRTY_PAGES on or off for every slot of `vm` by
// re-registering each live slot (same GPA, size and HVA), as both KVM
// sources must. The error names the slot.
[[nodiscard]] absl::Status SetDirtyLogging(const KvmVmView& vm, bool on);

class KvmDirtyLog : public DirtySource {
 public:
  enum class Mode { kClassic, kManual };
  struct Options {
    Mode mode = Mode::kClassic;
    // Manual mode: the most pages one KVM_CLEAR_DIRTY_LOG covers (a
    // multiple of 64). 32768 pages = 128 MiB.
    uint64_t clear_chunk_pages = 32768;
  };

  // REQUIRES: every slot's region_index names a region of `memory` of
  // exactly the slot's size; `memory` and vm.vm_fd outlive this object.
  KvmDirtyLog(KvmVmView vm, const GuestMemory<AtomicBitmap>& memory,
              Options options);
  KvmDirtyLog(KvmVmView vm, const GuestMemory<AtomicBitmap>& memory)
      : KvmDirtyLog(std::move(vm), memory, Options()) {}
  ~KvmDirtyLog() override;  // Stop() if started.

  const char* name() const override {
    return options_.mode == Mode::kManual ? "kvm-log-manual" : "kvm-log";
  }
  // FailedPrecondition if already started or a slot does not match its
  // region; the ioctl's error otherwise (logging left off).
  [[nodiscard]] absl::Status Start() override;
  // A failed CLEAR (manual mode) still ORs what the slot's GET returned into
  // the bitmap before returning the error: earlier CLEARs re-protected
  // pages that are in no log any more.
  [[nodiscard]] absl::Status Collect() override;
  void Stop() override;

  // The last Collect(): pages reported, and how long the GET and (manual)
  // CLEAR ioctls took in total, in nanoseconds.
  struct CollectStats {
    uint64_t pages = 0;
    uint64_t get_ns = 0;
    uint64_t clear_ns = 0;
    uint64_t clear_calls = 0;
  };
  const CollectStats& last_collect() const { return last_; }

 private:
  absl::Status Clear(const KvmMemslot& slot, uint64_t first_page,
                     uint64_t num_pages, uint64_t* bits);

  const KvmVmView vm_;
  const GuestMemory<AtomicBitmap>& memory_;
  const Options options_;
  bool started_ = false;
  std::vector<std::vector<uint64_t>> scratch_;  // One bitmap per slot.
  CollectStats last_;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_LOG_H_
