#include "tools/vmm/kvm_vm.h"

#include <errno.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/posix_error.h"
#include "core/status_macros.h"

namespace livemig::vmm {

using vmm_internal::Ioctl;

namespace {

constexpr uint64_t kMaxGrant = 4096;  // Pages per budget: an exit every <= 16 MiB.

std::chrono::nanoseconds Chrono(absl::Duration d) {
  return absl::ToChronoNanoseconds(std::max(d, absl::ZeroDuration()));
}

absl::StatusOr<std::vector<uint8_t>> SupportedCpuid(int kvm_fd) {
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
    cpuid->nent = n;
    if (ioctl(kvm_fd, vmm_internal::kKvmGetSupportedCpuid, cpuid) == 0) return buf;
    if (errno != E2BIG) return PosixError("KVM_GET_SUPPORTED_CPUID", errno);
  }
  return absl::InternalError("KVM_GET_SUPPORTED_CPUID: too many entries");
}

absl::StatusOr<uint64_t> ParseSize(absl::string_view key, absl::string_view value) {
  uint64_t mult = 1;
  absl::string_view digits = value;
  if (!value.empty()) {
    switch (value.back()) {
      case 'k': case 'K': mult = 1ull << 10; break;
      case 'm': case 'M': mult = 1ull << 20; break;
      case 'g': case 'G': mult = 1ull << 30; break;
      default: mult = 0; break;
    }
    if (mult != 0) {
      digits.remove_suffix(1);
    } else {
      mult = 1;
    }
  }
  uint64_t n;
  if (!absl::SimpleAtoi(digits, &n) || n > UINT64_MAX / mult) {
    return absl::InvalidArgumentError(
        absl::StrCat("--vm: ", key, "=\"", value, "\" is not a size (N, Nk, Nm, Ng)"));
  }
  return n * mult;
}

}  // namespace

absl::StatusOr<KvmVmSpec> ParseKvmVmSpec(absl::string_view spec) {
  if (!absl::ConsumePrefix(&spec, "kvm")) {
    return absl::InvalidArgumentError(absl::StrCat("--vm: \"", spec, "\" is not kvm:..."));
  }
  KvmVmSpec out;
  if (spec.empty()) return out;
  if (!absl::ConsumePrefix(&spec, ":")) {
    return absl::InvalidArgumentError("--vm: expected kvm:key=value,...");
  }
  std::set<std::string> seen;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    const absl::string_view key = kv.first, value = kv.second;
    if (!seen.insert(std::string(key)).second) {
      return absl::InvalidArgumentError(absl::StrCat("--vm: ", key, "= is given twice"));
    }
    if (key == "vcpus") {
      int n;
      if (!absl::SimpleAtoi(value, &n) || n < 1 || n > static_cast<int>(kMaxVcpus)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--vm: vcpus=\"", value, "\" is not 1..", kMaxVcpus));
      }
      out.options.vcpus = n;
    } else if (key == "pattern") {
      absl::StatusOr<Pattern> pattern = ParsePatternName(value);
      if (!pattern.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--vm: ", pattern.status().message()));
      }
      out.options.pattern.pattern = *pattern;
    } else if (key == "rate") {
      LIVEMIG_ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(key, value));
      out.options.pattern.pages_per_second = (bytes + kPageSize - 1) / kPageSize;
    } else if (key == "size") {
      LIVEMIG_ASSIGN_OR_RETURN(out.size, ParseSize(key, value));
      if (out.size % kPageSize != 0 || out.size <= kReservedBytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--vm: size=", value, " must be a multiple of 4 KiB above ", kReservedBytes));
      }
    } else if (key == "hot") {
      LIVEMIG_ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(key, value));
      out.options.pattern.hot_pages = bytes / kPageSize;
    } else if (key == "device") {
      LIVEMIG_ASSIGN_OR_RETURN(out.options.device_bytes_per_second, ParseSize(key, value));
    } else if (key == "seed") {
      if (!absl::SimpleAtoi(value, &out.options.pattern.seed)) {
        return absl::InvalidArgumentError(absl::StrCat("--vm: seed=\"", value, "\""));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--vm: unknown key \"", key,
          "\" (vcpus, pattern, rate, size, hot, device, seed)"));
    }
  }
  const uint64_t workload_pages = (out.size - kReservedBytes) / kPageSize;
  if (out.options.pattern.pattern == Pattern::kHotset &&
      out.options.pattern.hot_pages == 0) {
    out.options.pattern.hot_pages = std::max<uint64_t>(1, workload_pages / 10);
  }
  if (out.options.pattern.hot_pages > workload_pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--vm: hot= is ", out.options.pattern.hot_pages, " pages; the guest's workload has ",
        workload_pages, " (size= less ", kReservedBytes, " reserved bytes)"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<KvmVm>> KvmVm::Create(
    std::vector<RamRegion> ram, GuestWriter writer, KvmVmOptions options,
    std::optional<DeviceStateData> restore) {
  std::unique_ptr<KvmVm> vm(new KvmVm());
  LIVEMIG_ASSIGN_OR_RETURN(vm->kvm_, vmm_internal::OpenKvm());
  LIVEMIG_ASSIGN_OR_RETURN(int vm_fd,
                           Ioctl(vm->kvm_.get(), KVM_CREATE_VM, 0ul, "KVM_CREATE_VM"));
  vm->vm_fd_ = ScopedFd(vm_fd);
  vm->ram_ = std::move(ram);
  vm->write_ = std::move(writer);
  vm->device_rate_ = options.device_bytes_per_second;

  const uint32_t ring = options.dirty_ring_entries;
  if (ring > 0) {
    if ((ring & (ring - 1)) != 0 || ring < 256 || ring > 65536) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dirty_ring_entries ", ring, " is not a power of two in 256..65536"));
    }
    const int max_bytes = ioctl(vm->kvm_.get(), KVM_CHECK_EXTENSION,
                                KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    if (max_bytes <= 0 || static_cast<uint64_t>(max_bytes) < ring * sizeof(kvm_dirty_gfn)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "KVM_CAP_DIRTY_LOG_RING_ACQ_REL allows ", std::max(max_bytes, 0),
          " bytes per ring; ", ring, " entries need ", ring * sizeof(kvm_dirty_gfn)));
    }
    kvm_enable_cap cap = {};
    cap.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
    cap.args[0] = ring * sizeof(kvm_dirty_gfn);
    LIVEMIG_RETURN_IF_ERROR(
        Ioctl(vm_fd, KVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(DIRTY_LOG_RING_ACQ_REL)")
            .status());
    vm->ring_entries_ = ring;
  }

  std::vector<RegionExtent> extents;
  for (const RamRegion& r : vm->ram_) extents.push_back({r.gpa, r.size});
  LIVEMIG_ASSIGN_OR_RETURN(vm->layout_, ComputeLayout(extents));
  if (restore.has_value()) {
    const GuestLayout& l = restore->layout;
    if (l.base != vm->layout_.base || l.workload_gpa != vm->layout_.workload_gpa ||
        l.workload_pages != vm->layout_.workload_pages ||
        l.mmio_gpa != vm->layout_.mmio_gpa) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KVM device state: its layout (base 0x", absl::Hex(l.base), ", ",
          l.workload_pages, " workload pages, MMIO 0x", absl::Hex(l.mmio_gpa),
          ") does not match this memory's (base 0x", absl::Hex(vm->layout_.base), ", ",
          vm->layout_.workload_pages, " pages, MMIO 0x", absl::Hex(vm->layout_.mmio_gpa),
          ")"));
    }
    vm->pattern_ = restore->pattern;
    vm->device_seq_.store(restore->device_seq, std::memory_order_relaxed);
  } else {
    vm->pattern_ = options.pattern;
  }

  for (size_t i = 0; i < vm->ram_.size(); ++i) {
    const RamRegion& r = vm->ram_[i];
    kvm_userspace_memory_region region = {};
    region.slot = static_cast<uint32_t>(i);
    region.guest_phys_addr = r.gpa;
    region.memory_size = r.size;
    region.userspace_addr = reinterpret_cast<uint64_t>(r.host);
    LIVEMIG_RETURN_IF_ERROR(Ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region,
                                  absl::StrCat("KVM_SET_USER_MEMORY_REGION of slot ", i))
                                .status());
  }
  if (!restore.has_value()) {
    LIVEMIG_RETURN_IF_ERROR(WriteGuestImage(vm->layout_, vm->pattern_, vm->write_));
  }

  LIVEMIG_ASSIGN_OR_RETURN(std::vector<uint8_t> cpuid, SupportedCpuid(vm->kvm_.get()));
  LIVEMIG_ASSIGN_OR_RETURN(int run_size, Ioctl(vm->kvm_.get(), KVM_GET_VCPU_MMAP_SIZE,
                                               0ul, "KVM_GET_VCPU_MMAP_SIZE"));
  const int vcpus = restore.has_value() ? static_cast<int>(restore->vcpus.size())
                                        : options.vcpus;
  if (vcpus < 1 || vcpus > static_cast<int>(kMaxVcpus)) {
    return absl::InvalidArgumentError(absl::StrCat("vcpus ", vcpus, " is not 1..", kMaxVcpus));
  }
  for (int i = 0; i < vcpus; ++i) {
    VcpuRegs regs;
    if (restore.has_value()) {
      regs = restore->vcpus[static_cast<size_t>(i)];
    } else {
      LIVEMIG_ASSIGN_OR_RETURN(regs, InitialRegs(vm->layout_, vm->pattern_, i, vcpus));
    }
    LIVEMIG_ASSIGN_OR_RETURN(
        std::unique_ptr<Vcpu> vcpu,
        Vcpu::Create(vm_fd, static_cast<size_t>(run_size), i,
                     *reinterpret_cast<const kvm_cpuid2*>(cpuid.data()),
                     vm->ring_entries_, regs, vm.get()));
    vm->vcpus_.push_back(std::move(vcpu));
  }
  vm->state_.assign(vm->vcpus_.size(), VcpuState::kEnded);
  vm->pace_granted_.assign(vm->vcpus_.size(), 0);
  return vm;
}

KvmVm::~KvmVm() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
    device_stop_ = true;
    park_.store(true);
  }
  cv_.notify_all();
  if (device_.joinable()) device_.join();
  // Kick until every vCPU thread ended (a kick may race its KVM_RUN entry).
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    bool live = false;
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      if (state_[i] != VcpuState::kEnded) {
        live = true;
        vcpus_[i]->Kick();
      }
    }
    if (!live) break;
    cv_.wait_for(lock, std::chrono::milliseconds(1));
  }
  lock.unlock();
  for (auto& vcpu : vcpus_) vcpu->Join();
}

absl::Status KvmVm::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return absl::FailedPreconditionError("the VM was started already");
    started_ = true;
    pace_start_ = absl::Now();
    for (auto& s : state_) s = VcpuState::kRunning;
  }
  for (auto& vcpu : vcpus_) vcpu->Start();
  StartDevice();
  return absl::OkStatus();
}

absl::Status KvmVm::Pause() {
  const absl::Time requested = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    park_.store(true);  // seq_cst, see the member's comment.
  }
  cv_.notify_all();  // Wakes vCPUs sleeping for budget or a probe job.
  StopDevice();
  std::unique_lock<std::mutex> lock(mu_);
  const absl::Time guard = requested + absl::Seconds(30);
  for (;;) {
    bool running = false;
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      if (state_[i] == VcpuState::kRunning) {
        running = true;
        vcpus_[i]->Kick();
      }
    }
    if (!running) break;
    if (absl::Now() > guard) {
      return absl::DeadlineExceededError("Pause: a vCPU did not stop within 30 s");
    }
    cv_.wait_for(lock, std::chrono::microseconds(500));
  }
  last_pause_latency_ = absl::Now() - requested;
  return absl::OkStatus();
}

absl::Status KvmVm::Resume() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
    park_.store(false);
    pace_start_ = absl::Now();
    std::fill(pace_granted_.begin(), pace_granted_.end(), 0);
  }
  cv_.notify_all();
  StartDevice();
  return absl::OkStatus();
}

void KvmVm::SetThrottle(int percent) {
  std::lock_guard<std::mutex> lock(mu_);
  throttle_ = std::clamp(percent, 0, 99);
}

absl::StatusOr<std::string> KvmVm::DeviceState() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!park_.load()) {
    return absl::FailedPreconditionError("DeviceState needs a paused VM");
  }
  if (!error_.ok()) return error_;
  DeviceStateData state;
  state.pattern = pattern_;
  state.layout = layout_;
  state.device_seq = device_seq_.load(std::memory_order_relaxed);
  for (const auto& vcpu : vcpus_) state.vcpus.push_back(vcpu->saved_regs());
  return SerializeDeviceState(state);
}

KvmVmView KvmVm::kvm_view() const {
  KvmVmView view;
  view.vm_fd = vm_fd_.get();
  for (size_t i = 0; i < ram_.size(); ++i) {
    KvmMemslot slot;
    slot.slot = static_cast<uint32_t>(i);
    slot.guest_phys_addr = ram_[i].gpa;
    slot.memory_size = ram_[i].size;
    slot.userspace_addr = reinterpret_cast<uint64_t>(ram_[i].host);
    slot.region_index = i;
    view.slots.push_back(slot);
  }
  return view;
}

std::vector<KvmDirtyRingView> KvmVm::ring_views() {
  std::vector<KvmDirtyRingView> views;
  for (auto& vcpu : vcpus_) {
    views.push_back({vcpu->ring(), vcpu->ring_entries(), vcpu->ring_fetch()});
  }
  return views;
}

void KvmVm::SetRingFullHandler(std::function<absl::Status()> handler) {
  std::lock_guard<std::mutex> lock(ring_mu_);
  ring_full_ = std::move(handler);
}

absl::Status KvmVm::RunProbe(uint64_t start, uint64_t end, uint64_t stride,
                             absl::Duration timeout) {
  if (pattern_.pattern != Pattern::kProbe) {
    return absl::FailedPreconditionError("RunProbe needs a probe guest");
  }
  if (stride == 0) return absl::InvalidArgumentError("RunProbe: stride 0");
  std::unique_lock<std::mutex> lock(mu_);
  job_ = {start, end, stride};
  const uint64_t target = ++job_posted_;
  cv_.notify_all();
  const bool done = cv_.wait_for(lock, Chrono(timeout), [&] {
    return job_done_ >= target || !error_.ok();
  });
  if (!error_.ok()) return error_;
  if (!done) {
    return absl::DeadlineExceededError(absl::StrCat(
        "RunProbe: the guest did not finish job ", target, " within ",
        absl::FormatDuration(timeout)));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

std::vector<VcpuRegs> KvmVm::saved_regs() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VcpuRegs> regs;
  for (const auto& vcpu : vcpus_) regs.push_back(vcpu->saved_regs());
  return regs;
}

bool KvmVm::paused() const { return park_.load(); }

// --- VcpuHost ---

bool KvmVm::ShouldPark() const { return park_.load(); }

bool KvmVm::Park(int index) {
  std::unique_lock<std::mutex> lock(mu_);
  state_[index] = VcpuState::kParked;
  cv_.notify_all();
  cv_.wait(lock, [&] { return !park_.load() || quit_; });
  if (quit_) {
    state_[index] = VcpuState::kEnded;
    cv_.notify_all();
    return false;
  }
  state_[index] = VcpuState::kRunning;
  return true;
}

uint64_t KvmVm::MmioLoad(int index, uint64_t offset, absl::Duration ran) {
  switch (offset) {
    case kMmioBudget:
      return Grant(index, ran);
    case kMmioJobStart: {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return park_.load() || quit_ || (index == 0 && job_posted_ > job_taken_);
      });
      if (index != 0 || job_posted_ == job_taken_) return 0;
      job_taken_ = job_posted_;
      taken_ = job_;
      return taken_->start;
    }
    case kMmioJobEnd: {
      std::lock_guard<std::mutex> lock(mu_);
      return taken_.has_value() ? taken_->end : 0;
    }
    case kMmioJobStride: {
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t stride = taken_.has_value() ? taken_->stride : 0;
      taken_.reset();
      return stride;
    }
    default:
      return 0;
  }
}

void KvmVm::MmioStore(int index, uint64_t offset, uint64_t value) {
  if (offset != kMmioJobDone) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_done_ = std::max(job_done_, value);
  }
  cv_.notify_all();
}

uint64_t KvmVm::Grant(int index, absl::Duration ran) {
  std::unique_lock<std::mutex> lock(mu_);
  auto stop = [&] { return park_.load() || quit_; };
  if (throttle_ > 0) {
    // Auto-converge: sleep p/(100-p) of the time the guest ran.
    const absl::Duration nap = ran * throttle_ / (100 - throttle_);
    if (cv_.wait_for(lock, Chrono(nap), stop)) return 0;
  }
  if (stop()) return 0;
  const uint64_t rate = pattern_.pages_per_second;
  uint64_t chunk = kMaxGrant;
  if (rate > 0) {
    const uint64_t per_vcpu = std::max<uint64_t>(1, rate / vcpus_.size());
    chunk = std::clamp<uint64_t>(per_vcpu / 100, 1, kMaxGrant);  // ~10 ms of work.
    const absl::Time due =
        pace_start_ + absl::Seconds(static_cast<double>(pace_granted_[index] + chunk) /
                                    static_cast<double>(per_vcpu));
    const absl::Duration wait = due - absl::Now();
    if (wait > absl::ZeroDuration() && cv_.wait_for(lock, Chrono(wait), stop)) return 0;
  }
  pace_granted_[index] += chunk;
  granted_total_.fetch_add(chunk, std::memory_order_relaxed);
  return chunk;
}

absl::Status KvmVm::RingFull(int index) {
  std::lock_guard<std::mutex> lock(ring_mu_);
  if (!ring_full_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vCPU ", index, ": dirty ring full and no ring-full handler is installed"));
  }
  return ring_full_();
}

void KvmVm::Failed(int index, absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = std::move(status);
    state_[index] = VcpuState::kEnded;
  }
  cv_.notify_all();
}

// --- The device ---

void KvmVm::StartDevice() {
  if (device_rate_ == 0 || device_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (quit_) return;
    device_stop_ = false;
  }
  device_ = std::thread([this] { DeviceLoop(); });
}

void KvmVm::StopDevice() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    device_stop_ = true;
  }
  cv_.notify_all();
  if (device_.joinable()) device_.join();
}

void KvmVm::DeviceLoop() {
  std::vector<uint64_t> chunk(kPageSize / sizeof(uint64_t));
  const absl::Duration interval =
      absl::Seconds(static_cast<double>(kPageSize) / static_cast<double>(device_rate_));
  for (;;) {
    const uint64_t seq = device_seq_.load(std::memory_order_relaxed);
    std::fill(chunk.begin(), chunk.end(), seq + 1);
    absl::Status status = write_(
        layout_.device_gpa() + (seq % kDevicePages) * kPageSize,
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(chunk.data()), kPageSize));
    if (!status.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_.ok()) error_ = status;
      return;
    }
    device_seq_.store(seq + 1, std::memory_order_relaxed);
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, Chrono(interval), [&] { return device_stop_; })) return;
  }
}

// --- Trackers ---

absl::StatusOr<TrackerKind> ParseTrackerKind(absl::string_view name) {
  if (name == "kvm-log") return TrackerKind::kLog;
  if (name == "kvm-log-manual") return TrackerKind::kLogManual;
  if (name == "kvm-ring") return TrackerKind::kRing;
  return absl::InvalidArgumentError(absl::StrCat(
      "--tracker: unknown \"", name, "\" (kvm-log, kvm-log-manual, kvm-ring)"));
}

namespace {

// A ring source that unhooks itself from the VM when destroyed.
class HookedRing : public KvmDirtyRing {
 public:
  HookedRing(KvmVm& vm, const GuestMemory<AtomicBitmap>& memory)
      : KvmDirtyRing(vm.kvm_view(), vm.ring_views(), memory), vm_(vm) {
    vm_.SetRingFullHandler([this] { return CollectFromVcpu(); });
  }
  ~HookedRing() override { vm_.SetRingFullHandler(nullptr); }

 private:
  KvmVm& vm_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DirtySource>> MakeTracker(
    KvmVm& vm, const GuestMemory<AtomicBitmap>& memory, TrackerKind kind) {
  const bool ring = vm.dirty_ring_entries() > 0;
  if (kind == TrackerKind::kRing) {
    if (!ring) {
      return absl::FailedPreconditionError(
          "kvm-ring needs a VM booted with dirty_ring_entries > 0");
    }
    return std::unique_ptr<DirtySource>(new HookedRing(vm, memory));
  }
  if (ring) {
    return absl::FailedPreconditionError(
        "kvm-log cannot track a VM booted in dirty-ring mode (GET_DIRTY_LOG is ENXIO)");
  }
  KvmDirtyLog::Options options;
  options.mode = kind == TrackerKind::kLogManual ? KvmDirtyLog::Mode::kManual
                                                 : KvmDirtyLog::Mode::kClassic;
  return std::unique_ptr<DirtySource>(new KvmDirtyLog(vm.kvm_view(), memory, options));
}

}  // namespace livemig::vmm
