// File: core/dirty_sources/kvm_dirty_ring.h
//
// KvmDirtyRing: a DirtySource reading KVM's per-vCPU dirty rings
// (KVM_CAP_DIRTY_LOG_RING_ACQ_REL). KVM appends one entry {slot, page} to a
// vCPU's ring for each page that vCPU dirties; the consumer harvests
// entries and hands them back with KVM_RESET_DIRTY_RINGS, which
// write-protects those pages again.
//
//   KvmDirtyRing ring(vm->kvm_view(), vm->ring_views(), memory);
//   vm->SetRingFullHandler([&ring] { return ring.CollectFromVcpu(); });
//   options.dirty_sources = {&ring};
//
// The ring must be enabled on the VM before any vCPU is created, so the VMM
// is booted in ring mode (tools/vmm: KvmVmOptions::dirty_ring_entries);
// such a VM has no KVM_GET_DIRTY_LOG (ENXIO) and no bitmap fallback on x86.
// Start() sets KVM_MEM_LOG_DIRTY_PAGES on every slot (the ring still needs
// it); from then on every guest write shows up in some ring. Stop() turns
// logging off and drains the rings.
//
// Harvest (notes, "Dirty ring"): per ring, from its free-running fetch
// index, load `flags` with ACQUIRE (pairs with KVM's release when it
// publishes the entry, so slot/offset are valid), stop at the first entry
// without DIRTY, record it, store flags = RESET with RELEASE (KVM's reset
// reads it with acquire and may reuse the slot). The same page can appear
// twice: harvesting is idempotent (it sets a bit).
//
// Ordering rule: every harvested entry is reset (KVM_RESET_DIRTY_RINGS
// re-protects its page) BEFORE any harvested bit is OR-ed into the bitmap.
//
// Ring full: at `size - 64` entries a vCPU exits with
// KVM_EXIT_DIRTY_RING_FULL; the VMM's vCPU loop calls CollectFromVcpu()
// and runs the vCPU again only after it returned (its ring is reset then).
// A mutex serializes that with the sender's Collect().
//
// What it sees and misses: as KvmDirtyLog (guest writes, conservative
// extras from shadow paging; not the VMM's own writes).
// Cost (this host, tools/vmm/bench, 1 GiB slot): harvest ~3 ns per entry,
// KVM_RESET_DIRTY_RINGS ~50-80 ns per entry (Collect ~0.22-0.24 ms at 1%,
// ~1.6-1.8 ms at 10%); nothing per clean page (no bitmap walk of the slot).
//
// Thread safety: Start/Collect/Stop from the sender's thread;
// CollectFromVcpu from any vCPU thread, concurrently with them.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_RING_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_RING_H_

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/dirty_sources/kvm_dirty_log.h"
#include "core/guest_memory.h"

namespace livemig {

// One vCPU's ring as the VMM mapped it.
struct KvmDirtyRingView {
  kvm_dirty_gfn* entries = nullptr;  // Borrowed mapping; outlives the source.
  uint32_t size = 0;                 // Entries; a power of two.
  // The consumer's free-running index, owned by the VMM so it survives a
  // source (only one source uses a ring at a time).
  uint32_t* fetch = nullptr;
};

class KvmDirtyRing : public DirtySource {
 public:
  // REQUIRES: as KvmDirtyLog; `rings` are every vCPU's.
  KvmDirtyRing(KvmVmView vm, std::vector<KvmDirtyRingView> rings,
               const GuestMemory<AtomicBitmap>& memory);
  ~KvmDirtyRing() override;  // Stop() if started.

  const char* name() const override { return "kvm-ring"; }
  [[nodiscard]] absl::Status Start() override;
  [[nodiscard]] absl::Status Collect() override;
  void Stop() override;
  // The ring-full handler: the same harvest, from a vCPU thread.
  [[nodiscard]] absl::Status CollectFromVcpu() {
    vcpu_collections_.fetch_add(1, std::memory_order_relaxed);
    return Collect();
  }

  struct CollectStats {
    uint64_t entries = 0;   // Harvested (duplicates included).
    uint64_t pages = 0;     // Distinct pages OR-ed in.
    uint64_t ignored = 0;   // Entries naming no known slot/page.
    uint64_t harvest_ns = 0;
    uint64_t reset_ns = 0;
  };
  // The last collection (under the mutex; copy).
  CollectStats last_collect() const;
  uint64_t ring_full_collections() const {
    return vcpu_collections_.load(std::memory_order_relaxed);
  }

 private:
  absl::Status CollectLocked(CollectStats* stats);

  const KvmVmView vm_;
  const std::vector<KvmDirtyRingView> rings_;
  const GuestMemory<AtomicBitmap>& memory_;
  bool started_ = false;  // The sender's thread only.
  mutable std::mutex mu_;
  // Per slot: the harvest's bitmap and the words it touched. Guarded by mu_.
  std::vector<std::vector<uint64_t>> words_;
  std::vector<std::vector<uint32_t>> touched_;
  CollectStats last_;  // Guarded by mu_.
  std::atomic<uint64_t> vcpu_collections_{0};  // Relaxed: a statistic.
};

namespace kvm_ring_internal {

inline constexpr uint32_t kDirty = 1;  // KVM_DIRTY_GFN_F_DIRTY
inline constexpr uint32_t kReset = 2;  // KVM_DIRTY_GFN_F_RESET

// Harvests one ring from *fetch on: calls fn(slot, offset) for every
// published entry and marks it for reset; advances *fetch. Returns the
// number of entries taken. At most `size` entries per call.
template <typename Fn>
uint32_t HarvestRing(kvm_dirty_gfn* entries, uint32_t size, uint32_t* fetch,
                     Fn&& fn) {
  uint32_t taken = 0;
  while (taken < size) {
    kvm_dirty_gfn& e = entries[*fetch & (size - 1)];
    // Acquire: pairs with KVM's release publishing slot/offset with DIRTY.
    const uint32_t flags = std::atomic_ref<uint32_t>(e.flags).load(std::memory_order_acquire);
    if ((flags & kDirty) == 0) break;
    fn(e.slot, e.offset);
    // Release: our reads of the entry happen before KVM may reuse it.
    std::atomic_ref<uint32_t>(e.flags).store(kReset, std::memory_order_release);
    ++*fetch;
    ++taken;
  }
  return taken;
}

}  // namespace kvm_ring_internal
}  // namespace livemig

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_KVM_DIRTY_RING_H_
