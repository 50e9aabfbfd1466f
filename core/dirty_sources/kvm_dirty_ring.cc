#include "core/dirty_sources/kvm_dirty_ring.h"

#include <errno.h>
#include <sys/ioctl.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig {
namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

KvmDirtyRing::KvmDirtyRing(KvmVmView vm, std::vector<KvmDirtyRingView> rings,
                           const GuestMemory<AtomicBitmap>& memory)
    : vm_(std::move(vm)), rings_(std::move(rings)), memory_(memory) {
  for (const KvmMemslot& slot : vm_.slots) {
    words_.emplace_back((slot.memory_size / 4096 + 63) / 64, 0);
    touched_.emplace_back();
  }
}

KvmDirtyRing::~KvmDirtyRing() {
  if (started_) Stop();
}

absl::Status KvmDirtyRing::Start() {
  if (started_) return absl::FailedPreconditionError("kvm-ring: already started");
  for (const KvmDirtyRingView& ring : rings_) {
    if (ring.entries == nullptr || ring.size == 0 || (ring.size & (ring.size - 1)) != 0 ||
        ring.fetch == nullptr) {
      return absl::FailedPreconditionError(
          "kvm-ring: a vCPU has no dirty ring (boot the VM in ring mode)");
    }
  }
  for (const KvmMemslot& slot : vm_.slots) {
    if (slot.region_index >= memory_.num_regions() ||
        memory_.region(slot.region_index).len() != slot.memory_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kvm-ring: slot ", slot.slot, " does not match region ", slot.region_index));
    }
  }
  absl::Status status = SetDirtyLogging(vm_, true);
  if (!status.ok()) {
    (void)SetDirtyLogging(vm_, false);
    return status;
  }
  started_ = true;
  return absl::OkStatus();
}

absl::Status KvmDirtyRing::Collect() {
  std::lock_guard<std::mutex> lock(mu_);
  CollectStats stats;
  absl::Status status = CollectLocked(&stats);
  last_ = stats;
  return status;
}

absl::Status KvmDirtyRing::CollectLocked(CollectStats* stats) {
  const uint64_t t0 = NowNs();
  for (const KvmDirtyRingView& ring : rings_) {
    stats->entries += kvm_ring_internal::HarvestRing(
        ring.entries, ring.size, ring.fetch, [&](uint32_t slot_id, uint64_t offset) {
          for (size_t s = 0; s < vm_.slots.size(); ++s) {
            if (vm_.slots[s].slot != slot_id) continue;
            if (offset >= vm_.slots[s].memory_size / 4096) break;
            uint64_t& word = words_[s][offset / 64];
            if (word == 0) touched_[s].push_back(static_cast<uint32_t>(offset / 64));
            word |= uint64_t{1} << (offset % 64);
            return;
          }
          ++stats->ignored;
        });
  }
  const uint64_t t1 = NowNs();
  stats->harvest_ns = t1 - t0;
  absl::Status reset = absl::OkStatus();
  if (stats->entries > 0) {
    // The ordering rule: re-protect every harvested page before the bitmap
    // can show it to the sender.
    int ret;
    do {
      ret = ioctl(vm_.vm_fd, KVM_RESET_DIRTY_RINGS, 0);
    } while (ret < 0 && errno == EINTR);
    stats->reset_ns = NowNs() - t1;
    // On failure the bits are still reported below (never lost); the error
    // fails the attempt, and the sender then re-marks everything it took.
    if (ret < 0) reset = PosixError("KVM_RESET_DIRTY_RINGS", errno);
  }
  for (size_t s = 0; s < words_.size(); ++s) {
    const AtomicBitmap& bitmap = memory_.region(vm_.slots[s].region_index).bitmap();
    for (uint32_t w : touched_[s]) {
      stats->pages += static_cast<uint64_t>(__builtin_popcountll(words_[s][w]));
      // Merge of one word at its place: the bitmap's word layout is KVM's.
      for (uint64_t bits = words_[s][w]; bits != 0; bits &= bits - 1) {
        bitmap.MarkPageOf((uint64_t{w} * 64 + static_cast<uint64_t>(__builtin_ctzll(bits))) *
                          4096);
      }
      words_[s][w] = 0;
    }
    touched_[s].clear();
  }
  return reset;
}

void KvmDirtyRing::Stop() {
  if (!started_) return;
  started_ = false;
  (void)SetDirtyLogging(vm_, false);
  // Drain what was logged before logging went off (reported: harmless).
  (void)Collect();
}

KvmDirtyRing::CollectStats KvmDirtyRing::last_collect() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

}  // namespace livemig
