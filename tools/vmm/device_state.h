// File: tools/vmm/device_state.h
//
// What the tiny KVM VMM sends as the migration's device state: every vCPU's
// registers (GPRs, RIP, RFLAGS, CR0/CR3/CR4/EFER and the CS/SS selectors;
// the rest of the segment state is the fixed CPL3 flat model of
// BootControlState), the guest layout, the pattern's parameters and the
// device thread's position.
//
// Byte layout (little-endian, x86-64 only):
//
//   0   magic "LMKVMDS1"                       8
//   8   u32 version (1)   u32 header_bytes (96)
//   16  u32 total_bytes   u32 vcpu_count (1..256)
//   24  u32 vcpu_record_bytes (184)   u32 pattern
//   32  u64 pages_per_second  u64 hot_pages  u64 seed  u64 device_seq
//   64  u64 base  u64 workload_gpa  u64 workload_pages  u64 mmio_gpa
//   96  vcpu_count records: u64 gpr[16], rip, rflags, cr0, cr3, cr4, efer,
//       u16 cs, u16 ss, u32 zero                          (184 bytes each)
//   ..  u64 FNV-1a 64 of every byte before it
//
// ParseDeviceState never crashes on any input: a short, long, corrupt or
// foreign blob is InvalidArgument naming the field that is wrong.
//
// Thread safety: plain functions.
#ifndef LIVEMIG_TOOLS_VMM_DEVICE_STATE_H_
#define LIVEMIG_TOOLS_VMM_DEVICE_STATE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/vmm/guest_program.h"

namespace livemig::vmm {

inline constexpr uint32_t kDeviceStateVersion = 1;
inline constexpr size_t kDeviceStateHeaderBytes = 96;
inline constexpr size_t kVcpuRecordBytes = 184;
inline constexpr uint32_t kMaxVcpus = 256;

struct DeviceStateData {
  PatternSpec pattern;
  GuestLayout layout;
  uint64_t device_seq = 0;  // Chunks the device thread has written.
  std::vector<VcpuRegs> vcpus;
};

std::string SerializeDeviceState(const DeviceStateData& state);
absl::StatusOr<DeviceStateData> ParseDeviceState(std::string_view bytes);

// The serialized size for `vcpus` vCPUs (DeviceStateSizeHint).
constexpr size_t DeviceStateBytes(size_t vcpus) {
  return kDeviceStateHeaderBytes + vcpus * kVcpuRecordBytes + 8;
}

}  // namespace livemig::vmm

#endif  // LIVEMIG_TOOLS_VMM_DEVICE_STATE_H_
