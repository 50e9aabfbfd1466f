// File: tools/vmm/kvm_vm.h
//
// KvmVm: the tiny KVM VMM livemig migrates. Its RAM is the GuestMemory
// being migrated (each region a memslot at its guest address, slot i =
// region i), its vCPUs run the CPL3 guest of tools/vmm/guest_program.h, and
// a "device" thread fills a buffer in guest memory through the tracked API.
// It implements VmControl for the Sender:
//
//   Pause()        kicks every vCPU out of KVM_RUN (signal + immediate_exit),
//                  lets each finish a pending MMIO exit, saves its registers
//                  and parks it; stops the device thread. Returns once guest
//                  memory no longer changes.
//   Resume()       unparks the vCPUs (pacing restarts from now) and restarts
//                  the device thread.
//   SetThrottle(p) each vCPU sleeps p/(100-p) of the time it ran.
//   DeviceState()  the vCPUs' registers, layout, pattern and device position
//                  (tools/vmm/device_state.h). REQUIRES: paused.
//
//   auto vm = KvmVm::Boot(memory, {.vcpus = 2, .pattern = {...}});
//   KvmDirtyLog log((*vm)->kvm_view(), memory);     // or MakeTracker()
//   (*vm)->Start();
//   sender.Migrate(memory, **vm);
//
// Tracking modes: the dirty ring must be enabled before any vCPU exists,
// so a VM that will be tracked by KvmDirtyRing is booted with
// `dirty_ring_entries` > 0 (and then cannot use KvmDirtyLog: GET_DIRTY_LOG
// is ENXIO with a ring). Ring-full exits call the handler installed with
// SetRingFullHandler (MakeTracker installs it).
//
// Ownership: `memory` is borrowed and must outlive the VM. The VM owns its
// fds, mappings and threads; the destructor stops and joins them all.
// Thread safety: VmControl methods from one thread (the sender's); the
// probe and observation calls from any one other thread.
#ifndef LIVEMIG_TOOLS_VMM_KVM_VM_H_
#define LIVEMIG_TOOLS_VMM_KVM_VM_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/dirty_sources/kvm_dirty_log.h"
#include "core/dirty_sources/kvm_dirty_ring.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "migration/vm_control.h"
#include "tools/vmm/device_state.h"
#include "tools/vmm/guest_program.h"
#include "tools/vmm/vcpu.h"

namespace livemig::vmm {

// A ring size that holds ~16 MiB of writes between collections per vCPU.
inline constexpr uint32_t kDefaultDirtyRingEntries = 4096;

struct KvmVmOptions {
  int vcpus = 1;
  PatternSpec pattern;  // Boot only; Restore takes it from the device state.
  // > 0: dirty-ring mode with this many entries per vCPU (a power of two,
  // 256..65536).
  uint32_t dirty_ring_entries = 0;
  // The device thread's fill rate; 0: no device thread.
  uint64_t device_bytes_per_second = 0;
};

// One region of guest RAM as KVM sees it.
struct RamRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;  // Writes through it are not tracked.
};

// Parses the CLI's VM spec "kvm:vcpus=N,pattern=P,rate=R,size=S[,hot=H]
// [,device=D]": rate in bytes/s of guest writes (suffixes k/m/g, binary;
// 0 = unlimited), size of region 0 (k/m/g), hot = hotset bytes, device =
// device-thread bytes/s. InvalidArgument naming the bad key or value.
struct KvmVmSpec {
  KvmVmOptions options;
  uint64_t size = 64ull << 20;
};
absl::StatusOr<KvmVmSpec> ParseKvmVmSpec(absl::string_view spec);

class KvmVm : public VmControl, private VcpuHost {
 public:
  // A fresh guest: writes the guest image (code, page tables, info page)
  // through memory.Write, and creates the vCPUs at the pattern's entry.
  // FailedPrecondition when /dev/kvm is missing or unusable.
  template <DirtyTracker B>
  static absl::StatusOr<std::unique_ptr<KvmVm>> Boot(const GuestMemory<B>& memory,
                                                     KvmVmOptions options) {
    return Create(RamOf(memory), WriterOf(memory), std::move(options), std::nullopt);
  }
  // A migrated guest: memory already holds the image; the vCPUs are created
  // with the registers in `device_state` (InvalidArgument if it does not
  // parse or does not match `memory`'s layout). options.vcpus and .pattern
  // are ignored.
  template <DirtyTracker B>
  static absl::StatusOr<std::unique_ptr<KvmVm>> Restore(
      const GuestMemory<B>& memory, std::string_view device_state,
      KvmVmOptions options) {
    absl::StatusOr<DeviceStateData> state = ParseDeviceState(device_state);
    if (!state.ok()) return state.status();
    return Create(RamOf(memory), WriterOf(memory), std::move(options),
                  std::move(*state));
  }

  ~KvmVm() override;

  // Starts the vCPU threads and the device thread. Once only.
  [[nodiscard]] absl::Status Start();

  // --- VmControl ---
  [[nodiscard]] absl::Status Pause() override;
  [[nodiscard]] absl::Status Resume() override;
  void SetThrottle(int percent) override;
  [[nodiscard]] absl::StatusOr<std::string> DeviceState() override;
  uint64_t DeviceStateSizeHint() override { return DeviceStateBytes(vcpus_.size()); }

  // --- For the KVM dirty sources ---
  KvmVmView kvm_view() const;
  // REQUIRES: booted with dirty_ring_entries > 0.
  std::vector<KvmDirtyRingView> ring_views();
  // Called on a vCPU thread at KVM_EXIT_DIRTY_RING_FULL; it must harvest
  // and reset the rings. Set before Start() (or while paused).
  void SetRingFullHandler(std::function<absl::Status()> handler);
  uint32_t dirty_ring_entries() const { return ring_entries_; }

  // --- Probe pattern (tracker tests) ---
  // Has vCPU 0 store the job number to every `stride` bytes of GPAs
  // [start, end) and waits until it says done. DeadlineExceeded past
  // `timeout` (a hang guard), FailedPrecondition if not a probe guest.
  [[nodiscard]] absl::Status RunProbe(uint64_t start, uint64_t end, uint64_t stride,
                                      absl::Duration timeout = absl::Seconds(30));

  // --- Observation ---
  const GuestLayout& layout() const { return layout_; }
  const PatternSpec& pattern() const { return pattern_; }
  int vcpu_count() const { return static_cast<int>(vcpus_.size()); }
  // Pages of write budget granted to the guest so far (>= pages written).
  uint64_t pages_granted() const { return granted_total_.load(std::memory_order_relaxed); }
  uint64_t device_chunks() const { return device_seq_.load(std::memory_order_relaxed); }
  // OK, or the first vCPU failure (guest fault, KVM error).
  absl::Status health() const;
  // The registers each vCPU had when last parked.
  std::vector<VcpuRegs> saved_regs() const;
  bool paused() const;
  std::span<const RamRegion> ram() const { return ram_; }
  // How long the last Pause() took from its request to every vCPU parked.
  absl::Duration last_pause_latency() const { return last_pause_latency_; }

 private:
  enum class VcpuState { kRunning, kParked, kEnded };

  template <DirtyTracker B>
  static std::vector<RamRegion> RamOf(const GuestMemory<B>& memory) {
    std::vector<RamRegion> ram;
    for (const auto& r : memory.regions()) {
      ram.push_back({r.start_addr().value, r.len(), r.region().as_ptr()});
    }
    return ram;
  }
  template <DirtyTracker B>
  static GuestWriter WriterOf(const GuestMemory<B>& memory) {
    return [&memory](uint64_t gpa, std::span<const uint8_t> bytes) {
      return memory.Write(GuestAddress(gpa), bytes);
    };
  }
  static absl::StatusOr<std::unique_ptr<KvmVm>> Create(
      std::vector<RamRegion> ram, GuestWriter writer, KvmVmOptions options,
      std::optional<DeviceStateData> restore);
  KvmVm() = default;

  // VcpuHost.
  bool ShouldPark() const override;
  bool Park(int index) override;
  uint64_t MmioLoad(int index, uint64_t offset, absl::Duration ran) override;
  void MmioStore(int index, uint64_t offset, uint64_t value) override;
  absl::Status RingFull(int index) override;
  void Failed(int index, absl::Status status) override;

  void DeviceLoop();
  void StartDevice();
  void StopDevice();
  uint64_t Grant(int index, absl::Duration ran);

  ScopedFd kvm_;
  ScopedFd vm_fd_;
  std::vector<RamRegion> ram_;
  GuestWriter write_;
  GuestLayout layout_;
  PatternSpec pattern_;
  uint32_t ring_entries_ = 0;
  uint64_t device_rate_ = 0;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;
  bool started_ = false;
  absl::Duration last_pause_latency_;

  // Read by every vCPU before each KVM_RUN, written by Pause/Resume/the
  // destructor under mu_. seq_cst: Pause() stores it and then sends the
  // kick; a vCPU that clears immediate_exit and then loads it either sees
  // true or will be interrupted by the kick (which Pause() also repeats).
  std::atomic<bool> park_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool quit_ = false;                      // Guarded by mu_.
  std::vector<VcpuState> state_;           // Guarded by mu_.
  absl::Status error_;                     // Guarded by mu_.
  int throttle_ = 0;                       // Guarded by mu_.
  absl::Time pace_start_;                  // Guarded by mu_.
  std::vector<uint64_t> pace_granted_;     // Guarded by mu_. Per vCPU.
  std::function<absl::Status()> ring_full_;  // Set while no vCPU runs.
  std::mutex ring_mu_;  // Serializes ring-full handlers of several vCPUs.
  // Probe jobs (vCPU 0), guarded by mu_.
  struct Job {
    uint64_t start = 0, end = 0, stride = 0;
  };
  uint64_t job_posted_ = 0, job_taken_ = 0, job_done_ = 0;
  Job job_;
  std::optional<Job> taken_;  // The job vCPU 0 is reading the fields of.
  // Statistics, relaxed: counters read by tests, ordered by nothing.
  std::atomic<uint64_t> granted_total_{0};
  std::atomic<uint64_t> device_seq_{0};
  // The device thread; device_stop_ is written under mu_ (cv_ wakes it).
  std::thread device_;
  bool device_stop_ = false;  // Guarded by mu_.
};

// What MakeTracker builds.
enum class TrackerKind { kLog, kLogManual, kRing };
absl::StatusOr<TrackerKind> ParseTrackerKind(absl::string_view name);  // kvm-log, kvm-log-manual, kvm-ring

// The KVM dirty source for `vm` (ring: also installs the ring-full handler;
// FailedPrecondition if the VM's mode does not fit the kind). The source
// must be destroyed before the VM; `memory` must be the VM's.
absl::StatusOr<std::unique_ptr<DirtySource>> MakeTracker(
    KvmVm& vm, const GuestMemory<AtomicBitmap>& memory, TrackerKind kind);

}  // namespace livemig::vmm

#endif  // LIVEMIG_TOOLS_VMM_KVM_VM_H_
