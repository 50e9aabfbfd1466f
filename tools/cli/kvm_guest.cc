// File: tools/cli/kvm_guest.cc
#include "tools/cli/kvm_guest.h"

#include "absl/strings/str_cat.h"
#include "core/dirty_sources/uffd_write_tracker.h"
#include "migration/json_escape.h"
#include "tools/cli/units.h"
#include "tools/vmm/guest_program.h"

namespace livemig::cli {

absl::StatusOr<std::unique_ptr<KvmGuest>> KvmGuest::Boot(const GuestMemory<AtomicBitmap>& memory,
                                                         vmm::KvmVmSpec spec, Tracker tracker) {
  // The ring exists only if the VM is made with it, before any vCPU.
  if (tracker == Tracker::kKvmRing) spec.options.dirty_ring_entries = vmm::kDefaultDirtyRingEntries;
  std::unique_ptr<KvmGuest> guest(new KvmGuest);
  absl::StatusOr<std::unique_ptr<vmm::KvmVm>> vm = vmm::KvmVm::Boot(memory, spec.options);
  if (!vm.ok()) return vm.status();
  guest->vm_ = std::move(*vm);
  switch (tracker) {
    case Tracker::kApi:
      break;
    case Tracker::kUffd:
      guest->source_ = std::make_unique<UffdWriteTracker>(memory);
      break;
    case Tracker::kKvmLog:
    case Tracker::kKvmRing: {
      absl::StatusOr<std::unique_ptr<DirtySource>> source = vmm::MakeTracker(
          *guest->vm_, memory,
          tracker == Tracker::kKvmRing ? vmm::TrackerKind::kRing : vmm::TrackerKind::kLog);
      if (!source.ok()) return source.status();
      guest->source_ = std::move(*source);
      break;
    }
  }
  return guest;
}

KvmGuest::~KvmGuest() {
  source_.reset();  // It refers to the VM's fds and rings.
  vm_.reset();
}

std::vector<DirtySource*> KvmGuest::sources() const {
  if (source_ == nullptr) return {};
  return {source_.get()};
}

std::string KvmGuest::Describe() const {
  const vmm::PatternSpec& p = vm_->pattern();
  std::string rate = p.pages_per_second == 0
                         ? "unpaced"
                         : FormatRate(static_cast<double>(p.pages_per_second) * 4096);
  return absl::StrCat("KVM guest: ", vm_->vcpu_count(), " vCPU(s), pattern ",
                      vmm::PatternName(p.pattern), ", ", rate);
}

std::string KvmGuest::Json() const {
  const vmm::PatternSpec& p = vm_->pattern();
  return absl::StrCat("{\"vcpus\":", vm_->vcpu_count(), ",\"pattern\":\"",
                      JsonEscape(vmm::PatternName(p.pattern)),
                      "\",\"pages-per-second\":", p.pages_per_second,
                      ",\"pages-granted\":", vm_->pages_granted(),
                      ",\"pause-latency-us\":",
                      absl::ToInt64Microseconds(vm_->last_pause_latency()), "}");
}

}  // namespace livemig::cli
