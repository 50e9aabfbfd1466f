// KVM dirty-source benchmarks on this host (bazel run -c opt //tools/vmm:bench):
//   1. harvest cost per round (Collect) for kvm-log classic, kvm-log manual
//      protect and kvm-ring, on a 1 GiB slot at 1% and 10% dirty;
//   2. the guest's cost of its first store to a page after a harvest,
//      against a store to a page already writable;
//   3. time from Pause() to every vCPU stopped (2 vCPUs running counter).
// Medians (and min/max) over several rounds; the machine is shared, so
// trust the minimum and median more than the maximum.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/kvm_dirty_log.h"
#include "core/dirty_sources/kvm_dirty_ring.h"
#include "core/guest_memory.h"
#include "tools/vmm/kvm_vm.h"

namespace livemig::vmm {
namespace {

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kPage = 4096;

struct Summary {
  double min = 0, median = 0, max = 0;
};
Summary Summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

std::unique_ptr<GuestMemory<AtomicBitmap>> Memory(uint64_t size) {
  auto mapping = MmapRegion<AtomicBitmap>::Create(size);
  if (!mapping.ok()) return nullptr;
  auto region = GuestRegion<AtomicBitmap>::Create(std::move(*mapping), GuestAddress(0));
  std::vector<GuestRegion<AtomicBitmap>> regions;
  regions.push_back(std::move(*region));
  auto memory = GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
  return std::make_unique<GuestMemory<AtomicBitmap>>(std::move(*memory));
}

void Drain(const GuestMemory<AtomicBitmap>& memory) {
  std::vector<uint64_t> words(memory.region(0).bitmap().num_words());
  (void)memory.region(0).bitmap().GetAndReset(words);
}

int Harvest(TrackerKind kind, const char* name) {
  auto memory = Memory(kGiB);
  if (memory == nullptr) return 1;
  KvmVmOptions options;
  options.pattern.pattern = Pattern::kProbe;
  if (kind == TrackerKind::kRing) options.dirty_ring_entries = 65536;
  auto vm = KvmVm::Boot(*memory, options);
  if (!vm.ok()) {
    std::printf("%s: %s\n", name, vm.status().ToString().c_str());
    return 1;
  }
  auto source = MakeTracker(**vm, *memory, kind);
  if (!source.ok() || !(*vm)->Start().ok()) return 1;
  const absl::Time s0 = absl::Now();
  if (!(*source)->Start().ok()) return 1;
  const double start_ms = absl::ToDoubleMilliseconds(absl::Now() - s0);
  const GuestLayout& l = (*vm)->layout();
  const uint64_t first = l.workload_gpa, end = l.workload_gpa + l.workload_pages * kPage;
  // Fault every page in once so the harvests measure re-protection only.
  (void)(*vm)->RunProbe(first, end, kPage, absl::Seconds(120));
  (void)(*source)->Collect();
  Drain(*memory);
  std::printf("%-15s Start() on a live 1 GiB slot: %.2f ms\n", name, start_ms);
  for (uint64_t every : {100, 10}) {
    std::vector<double> total_us, get_us, clear_us, first_ns, rewrite_ns;
    uint64_t pages = 0;
    for (int round = 0; round < 7; ++round) {
      const uint64_t offset = static_cast<uint64_t>(round) % every;
      const uint64_t a = first + offset * kPage;
      const absl::Time w0 = absl::Now();
      (void)(*vm)->RunProbe(a, end, every * kPage, absl::Seconds(120));
      const absl::Duration first_write = absl::Now() - w0;
      const absl::Time w1 = absl::Now();
      (void)(*vm)->RunProbe(a, end, every * kPage, absl::Seconds(120));
      const absl::Duration rewrite = absl::Now() - w1;
      const absl::Time t0 = absl::Now();
      if (!(*source)->Collect().ok()) return 1;
      total_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
      pages = 0;
      if (auto* log = dynamic_cast<KvmDirtyLog*>(source->get())) {
        get_us.push_back(log->last_collect().get_ns / 1e3);
        clear_us.push_back(log->last_collect().clear_ns / 1e3);
        pages = log->last_collect().pages;
      } else if (auto* ring = dynamic_cast<KvmDirtyRing*>(source->get())) {
        get_us.push_back(ring->last_collect().harvest_ns / 1e3);
        clear_us.push_back(ring->last_collect().reset_ns / 1e3);
        pages = ring->last_collect().pages;
      }
      const uint64_t n = (end - a + every * kPage - 1) / (every * kPage);
      first_ns.push_back(absl::ToDoubleNanoseconds(first_write) / static_cast<double>(n));
      rewrite_ns.push_back(absl::ToDoubleNanoseconds(rewrite) / static_cast<double>(n));
      Drain(*memory);
    }
    const Summary t = Summarize(total_us), g = Summarize(get_us), c = Summarize(clear_us);
    const bool ring = kind == TrackerKind::kRing;
    std::printf(
        "%-15s 1 GiB at %3.0f%% (%6llu pages): Collect median %8.1f us (min %8.1f, max %8.1f)"
        "  %s %.1f us, %s %.1f us\n",
        name, 100.0 / static_cast<double>(every), static_cast<unsigned long long>(pages),
        t.median, t.min, t.max, ring ? "harvest" : "GET", g.median,
        ring ? "RESET_DIRTY_RINGS" : "CLEAR", c.median);
    const Summary f = Summarize(first_ns), r = Summarize(rewrite_ns);
    std::printf("%-15s   guest store: first after a harvest %.0f ns/page (min %.0f), "
                "page already writable %.0f ns/page (min %.0f)\n",
                name, f.median, f.min, r.median, r.min);
  }
  (*source)->Stop();
  return 0;
}

int PauseLatency() {
  auto memory = Memory(64ull << 20);
  KvmVmOptions options;
  options.vcpus = 2;
  options.pattern.pattern = Pattern::kCounter;
  auto vm = KvmVm::Boot(*memory, options);
  if (!vm.ok() || !(*vm)->Start().ok()) return 1;
  std::vector<double> us;
  for (int i = 0; i < 30; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
    if (!(*vm)->Pause().ok()) return 1;
    us.push_back(absl::ToDoubleMicroseconds((*vm)->last_pause_latency()));
    if (!(*vm)->Resume().ok()) return 1;
  }
  const Summary s = Summarize(us);
  std::printf("Pause() to both vCPUs parked (2 vCPUs, counter, 30 runs): median %.0f us "
              "(min %.0f, max %.0f)\n",
              s.median, s.min, s.max);
  return 0;
}

}  // namespace
}  // namespace livemig::vmm

int main() {
  using livemig::vmm::TrackerKind;
  int rc = 0;
  rc |= livemig::vmm::Harvest(TrackerKind::kLog, "kvm-log");
  rc |= livemig::vmm::Harvest(TrackerKind::kLogManual, "kvm-log-manual");
  rc |= livemig::vmm::Harvest(TrackerKind::kRing, "kvm-ring");
  rc |= livemig::vmm::PauseLatency();
  return rc;
}
