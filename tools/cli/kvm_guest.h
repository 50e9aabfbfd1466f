// File: tools/cli/kvm_guest.h
//
// `livemig send --vm=kvm[:...]`: the KVM guest (tools/vmm/) the command
// migrates instead of its built-in writer threads, booted on the migrated
// memory, with the dirty source --tracker picks (tracker_flags.h):
// kvm-log / kvm-ring from the VM, uffd on its memory, or none (api: only the
// VM's device thread, which writes through the tracked API, is seen — the
// guest's own stores are then invisible, which the source audit reports).
//
//   auto guest = BootKvmGuest(memory, spec, Tracker::kKvmLog);
//   options.dirty_sources = (*guest)->sources();
//   sender.Migrate(memory, (*guest)->vm());
//
// Ownership: `memory` must outlive the guest; the guest owns the VM and the
// source, and destroys the source first.
// Thread safety: as KvmVm (VmControl calls from the sender's thread).
#ifndef LIVEMIG_TOOLS_CLI_KVM_GUEST_H_
#define LIVEMIG_TOOLS_CLI_KVM_GUEST_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/guest_memory.h"
#include "tools/cli/tracker_flags.h"
#include "tools/vmm/kvm_vm.h"

namespace livemig::cli {

class KvmGuest {
 public:
  // Boots the VM of `spec` on `memory` (whose region 0 the guest image and
  // workload fill) and creates the tracker. FailedPrecondition without a
  // usable /dev/kvm (or userfaultfd for uffd).
  static absl::StatusOr<std::unique_ptr<KvmGuest>> Boot(const GuestMemory<AtomicBitmap>& memory,
                                                        vmm::KvmVmSpec spec, Tracker tracker);
  ~KvmGuest();

  // Starts the vCPUs and the device thread.
  [[nodiscard]] absl::Status Start() { return vm_->Start(); }
  vmm::KvmVm& vm() { return *vm_; }
  std::vector<DirtySource*> sources() const;
  // "2 vCPUs, pattern counter, 256.0 MiB"
  std::string Describe() const;
  // The "vm" object of the --json result.
  std::string Json() const;

 private:
  KvmGuest() = default;
  std::unique_ptr<vmm::KvmVm> vm_;
  std::unique_ptr<DirtySource> source_;  // Null: api.
};

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_KVM_GUEST_H_
