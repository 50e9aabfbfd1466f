#include "core/dirty_sources/kvm_dirty_log.h"

#include <errno.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

namespace livemig {
namespace {

constexpr uint64_t kManualProtectFlags = 1 /*ENABLE*/ | 2 /*INITIALLY_SET*/;

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

int IoctlRetry(int fd, unsigned long request, void* arg) {
  int ret;
  do {
    ret = ioctl(fd, request, arg);
  } while (ret < 0 && errno == EINTR);
  return ret;
}

absl::Status EnableManualProtect(int vm_fd, uint64_t flags) {
  kvm_enable_cap cap = {};
  cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  cap.args[0] = flags;
  if (IoctlRetry(vm_fd, KVM_ENABLE_CAP, &cap) < 0) {
    return PosixError(absl::StrCat("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2, ", flags,
                                   ")"),
                      errno);
  }
  return absl::OkStatus();
}

}  // namespace

KvmDirtyLog::KvmDirtyLog(KvmVmView vm, const GuestMemory<AtomicBitmap>& memory,
                         Options options)
    : vm_(std::move(vm)), memory_(memory), options_(options) {
  for (const KvmMemslot& slot : vm_.slots) {
    scratch_.emplace_back((slot.memory_size / 4096 + 63) / 64, 0);
  }
}

KvmDirtyLog::~KvmDirtyLog() {
  if (started_) Stop();
}

absl::Status SetDirtyLogging(const KvmVmView& vm, bool on) {
  for (const KvmMemslot& slot : vm.slots) {
    kvm_userspace_memory_region region = {};
    region.slot = slot.slot;
    region.flags = slot.flags | (on ? KVM_MEM_LOG_DIRTY_PAGES : 0);
    region.guest_phys_addr = slot.guest_phys_addr;
    region.memory_size = slot.memory_size;
    region.userspace_addr = slot.userspace_addr;
    if (IoctlRetry(vm.vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
      return PosixError(absl::StrCat("KVM_SET_USER_MEMORY_REGION of slot ", slot.slot,
                                     on ? " (logging on)" : " (logging off)"),
                        errno);
    }
  }
  return absl::OkStatus();
}

absl::Status KvmDirtyLog::Clear(const KvmMemslot& slot, uint64_t first_page,
                                uint64_t num_pages, uint64_t* bits) {
  kvm_clear_dirty_log clear = {};
  clear.slot = slot.slot;
  clear.first_page = first_page;
  clear.num_pages = static_cast<uint32_t>(num_pages);
  clear.dirty_bitmap = bits;
  const uint64_t t0 = NowNs();
  const int ret = IoctlRetry(vm_.vm_fd, KVM_CLEAR_DIRTY_LOG, &clear);
  last_.clear_ns += NowNs() - t0;
  ++last_.clear_calls;
  if (ret < 0) {
    return PosixError(absl::StrCat("KVM_CLEAR_DIRTY_LOG of slot ", slot.slot, " pages [",
                                   first_page, ", ", first_page + num_pages, ")"),
                      errno);
  }
  return absl::OkStatus();
}

absl::Status KvmDirtyLog::Start() {
  if (started_) return absl::FailedPreconditionError("kvm-log: already started");
  for (const KvmMemslot& slot : vm_.slots) {
    if (slot.region_index >= memory_.num_regions() ||
        memory_.region(slot.region_index).len() != slot.memory_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "kvm-log: slot ", slot.slot, " (", slot.memory_size,
          " bytes) does not match region ", slot.region_index));
    }
  }
  const bool manual = options_.mode == Mode::kManual;
  if (manual) {
    if (options_.clear_chunk_pages == 0 || options_.clear_chunk_pages % 64 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "kvm-log: clear_chunk_pages ", options_.clear_chunk_pages,
          " is not a positive multiple of 64"));
    }
    absl::Status s = EnableManualProtect(vm_.vm_fd, kManualProtectFlags);
    if (!s.ok()) return s;
  }
  absl::Status status = SetDirtyLogging(vm_, true);
  if (status.ok() && manual) {
    // INITIALLY_SET left every page writable with its bit set: protect them
    // all now, chunk by chunk, so round 0's copies are covered.
    last_ = {};
    std::vector<uint64_t> ones(options_.clear_chunk_pages / 64, ~uint64_t{0});
    for (const KvmMemslot& slot : vm_.slots) {
      const uint64_t pages = slot.memory_size / 4096;
      for (uint64_t first = 0; first < pages && status.ok();
           first += options_.clear_chunk_pages) {
        const uint64_t n = std::min(options_.clear_chunk_pages, pages - first);
        status = Clear(slot, first, n, ones.data());
      }
      if (!status.ok()) break;
    }
  }
  if (!status.ok()) {
    (void)SetDirtyLogging(vm_, false);
    if (manual) (void)EnableManualProtect(vm_.vm_fd, 0);
    return status;
  }
  started_ = true;
  return absl::OkStatus();
}

absl::Status KvmDirtyLog::Collect() {
  if (!started_) return absl::FailedPreconditionError("kvm-log: not started");
  last_ = {};
  const bool manual = options_.mode == Mode::kManual;
  for (size_t s = 0; s < vm_.slots.size(); ++s) {
    const KvmMemslot& slot = vm_.slots[s];
    std::vector<uint64_t>& words = scratch_[s];
    kvm_dirty_log log = {};
    log.slot = slot.slot;
    log.dirty_bitmap = words.data();
    const uint64_t t0 = NowNs();
    if (IoctlRetry(vm_.vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
      return PosixError(absl::StrCat("KVM_GET_DIRTY_LOG of slot ", slot.slot), errno);
    }
    last_.get_ns += NowNs() - t0;
    if (manual) {
      // Re-protect exactly the words with bits set: one CLEAR per run of
      // non-zero words, bounded by clear_chunk_pages.
      const uint64_t pages = slot.memory_size / 4096;
      const size_t max_words = options_.clear_chunk_pages / 64;
      size_t w = 0;
      while (w < words.size()) {
        if (words[w] == 0) {
          ++w;
          continue;
        }
        size_t end = w;
        while (end < words.size() && words[end] != 0 && end - w < max_words) ++end;
        const uint64_t first = w * 64;
        const uint64_t n = std::min<uint64_t>((end - w) * 64, pages - first);
        absl::Status status = Clear(slot, first, n, &words[w]);
        if (!status.ok()) {
          // The runs before it were re-protected and are no longer in
          // KVM's log: they go to the bitmap (this one and the rest too;
          // an extra page is allowed, a lost one is not).
          (void)memory_.region(slot.region_index).bitmap().Merge(words.data(), words.size());
          return status;
        }
        w = end;
      }
    }
    // Only now, with the pages protected again, may the sender see them.
    size_t pages = 0;
    for (uint64_t word : words) pages += static_cast<size_t>(__builtin_popcountll(word));
    last_.pages += pages;
    if (pages > 0) {
      absl::Status merged =
          memory_.region(slot.region_index).bitmap().Merge(words.data(), words.size());
      if (!merged.ok()) return merged;
    }
  }
  return absl::OkStatus();
}

void KvmDirtyLog::Stop() {
  if (!started_) return;
  started_ = false;
  (void)SetDirtyLogging(vm_, false);
  if (options_.mode == Mode::kManual) (void)EnableManualProtect(vm_.vm_fd, 0);
}

}  // namespace livemig
