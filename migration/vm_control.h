// File: migration/vm_control.h
//
// VmControl: what the sender needs from the VMM that embeds it. The VMM
// implements it; the sender calls it from its migration thread only (never
// concurrently with itself), so implementations need no locking of their own
// beyond what their VM needs.
//
//   Pause()        stop every vCPU and every VMM thread that writes guest
//                  memory; when it returns, guest memory must not change.
//   Resume()       undo Pause(); called when a migration fails after Pause.
//   SetThrottle(p) slow the guest down to (100 - p)% of its CPU time
//                  (auto-converge); 0 turns throttling off. Called with 0
//                  when a migration ends, successfully or not.
//   CollectDirty() optional: OR into `words` (KVM_GET_DIRTY_LOG layout, one
//                  bit per page of region `region_index`) the pages the
//                  hypervisor saw written since the last call. The sender
//                  merges them into the region's AtomicBitmap before each
//                  harvest. Writes made through livemig's tracked API need
//                  nothing here.
//   DeviceState()  the opaque device state, taken while paused.
//   DeviceSections() the device state as named sections (id -> bytes, each
//                  with its format version), for VMMs with many devices; by
//                  default one section "vmm" holding DeviceState(). Ids are
//                  unique and non-empty; each section's bytes must fit one
//                  frame (under 1 MiB); at most 4096 sections.
//   DeviceStateSizeHint()  optional: its expected size in bytes, which the
//                  switchover rule adds to the pending dirty bytes.
#ifndef LIVEMIG_MIGRATION_VM_CONTROL_H_
#define LIVEMIG_MIGRATION_VM_CONTROL_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace livemig {

struct DeviceSection {
  std::string id;
  uint32_t format_version = 1;
  std::string bytes;
  friend bool operator==(const DeviceSection&, const DeviceSection&) = default;
};

class VmControl {
 public:
  virtual ~VmControl() = default;

  [[nodiscard]] virtual absl::Status Pause() = 0;
  [[nodiscard]] virtual absl::Status Resume() = 0;
  virtual void SetThrottle(int /*percent*/) {}
  [[nodiscard]] virtual absl::Status CollectDirty(size_t /*region_index*/,
                                                  std::span<uint64_t> /*words*/) {
    return absl::OkStatus();
  }
  [[nodiscard]] virtual absl::StatusOr<std::string> DeviceState() {
    return std::string();
  }
  [[nodiscard]] virtual absl::StatusOr<std::vector<DeviceSection>> DeviceSections() {
    absl::StatusOr<std::string> state = DeviceState();
    if (!state.ok()) return state.status();
    return std::vector<DeviceSection>{{"vmm", 1, std::move(*state)}};
  }
  virtual uint64_t DeviceStateSizeHint() { return 0; }
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_VM_CONTROL_H_
