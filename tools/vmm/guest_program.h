// File: tools/vmm/guest_program.h
//
// The guest the tiny KVM VMM runs: 64-bit CPL3 machine code (PVM runs only
// that natively, see /work/shared/notes/KVM-AND-UFFD.md), identity page
// tables with 2 MiB pages, and an info page, all kept INSIDE guest memory so
// they migrate with it. This header is the one place that knows the guest's
// memory layout and its register conventions.
//
// Layout (offsets from the start of region 0, the lowest region, `base`):
//
//   +0x00000  code page   guest_program.S assembled (kGuestCode below)
//   +0x01000  PML4        one entry -> the PDPT
//   +0x02000  PDPT        one entry per GiB of guest physical space
//   +0x03000  PDs         16 pages: 2 MiB pages, P|RW|US, GPA [0, 16 GiB)
//   +0x13000  info page   magic, layout and pattern (written once at boot)
//   +0x14000  device buf  16 pages the VMM's "device" thread fills
//   +0x40000  workload    up to the end of region 0: what the patterns write
//
// Other regions are mapped by the page tables and registered as memslots,
// but no pattern writes them. Guest exits go to `mmio_gpa`, the first GiB
// boundary above every region (no memslot there): a load from mmio_gpa+0
// asks the VMM for a write budget (the VMM sleeps there to pace the guest),
// loads from +8/+16/+24 fetch a probe job, a store to +32 says "job done".
//
// Patterns (registers; every vCPU runs the same code at its own entry):
//   counter  QEMU's migration-test pattern. The workload is cut into one
//            slice per vCPU; vCPU i stores the u64 counter rcx at offset 0
//            of page rbx of its slice, rbx++, and at the slice's end rbx=0,
//            rcx++. So each slice holds c (a prefix) and c-1 (the rest).
//            rdi = slice base, rsi = slice pages, rbx = index, rcx = counter.
//   uniform  rate-limited stores to pseudo-random pages (xorshift64 in rbx)
//            of the whole workload; rcx counts stores.
//   hotset   the same within the first `hot_pages` pages of the workload.
//   probe    for tracker tests: fetches (start, end, stride) GVAs by MMIO
//            loads, stores the job number r13 at start, start+stride, ...
//            < end, then stores r13 to mmio_gpa+32 ("done").
//   All: r8 = pages left in the current budget, r9 = mmio_gpa.
//
// Thread safety: plain functions and values.
#ifndef LIVEMIG_TOOLS_VMM_GUEST_PROGRAM_H_
#define LIVEMIG_TOOLS_VMM_GUEST_PROGRAM_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace livemig::vmm {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kCodeOffset = 0x0;
inline constexpr uint64_t kPml4Offset = 0x1000;
inline constexpr uint64_t kPdptOffset = 0x2000;
inline constexpr uint64_t kPdOffset = 0x3000;
inline constexpr uint64_t kMaxPds = 16;  // So guest memory must end below 15 GiB.
inline constexpr uint64_t kInfoOffset = 0x13000;
inline constexpr uint64_t kDeviceOffset = 0x14000;
inline constexpr uint64_t kDevicePages = 16;
inline constexpr uint64_t kReservedBytes = 0x40000;  // Before the workload.

// MMIO offsets from mmio_gpa.
inline constexpr uint64_t kMmioBudget = 0;     // load: pages granted
inline constexpr uint64_t kMmioJobStart = 8;   // load: probe job
inline constexpr uint64_t kMmioJobEnd = 16;
inline constexpr uint64_t kMmioJobStride = 24;
inline constexpr uint64_t kMmioJobDone = 32;   // store: job finished

enum class Pattern : uint32_t {
  kCounter = 1,
  kUniform = 2,
  kHotset = 3,
  kProbe = 4,
};
// "counter", "uniform", "hotset", "probe".
const char* PatternName(Pattern pattern);
absl::StatusOr<Pattern> ParsePatternName(absl::string_view name);

struct PatternSpec {
  Pattern pattern = Pattern::kCounter;
  // Guest writes per second over all vCPUs; 0: as fast as the vCPUs go.
  uint64_t pages_per_second = 0;
  uint64_t hot_pages = 0;  // hotset only: pages at the workload's start.
  uint64_t seed = 1;       // uniform/hotset.
};

// Where everything is, in guest physical addresses (= guest virtual).
struct GuestLayout {
  uint64_t base = 0;  // Region 0's start.
  uint64_t workload_gpa = 0;
  uint64_t workload_pages = 0;
  uint64_t mmio_gpa = 0;
  uint64_t code_gpa() const { return base + kCodeOffset; }
  uint64_t pml4_gpa() const { return base + kPml4Offset; }
  uint64_t device_gpa() const { return base + kDeviceOffset; }
  uint64_t info_gpa() const { return base + kInfoOffset; }
};

struct RegionExtent {
  uint64_t gpa = 0;
  uint64_t size = 0;
};

// The layout for regions sorted by address. InvalidArgument if region 0 is
// not larger than the reserved area, or memory reaches past 15 GiB.
absl::StatusOr<GuestLayout> ComputeLayout(std::span<const RegionExtent> regions);

// Writes guest memory; the VMM passes GuestMemory::Write, so these writes
// are tracked like any other VMM write.
using GuestWriter =
    std::function<absl::Status(uint64_t gpa, std::span<const uint8_t> bytes)>;

// Writes code, page tables and the info page for `spec` (at boot; a
// migrated guest already has them).
absl::Status WriteGuestImage(const GuestLayout& layout, const PatternSpec& spec,
                             const GuestWriter& write);

// A vCPU's architectural state as the VMM saves and restores it.
struct VcpuRegs {
  uint64_t gpr[16] = {};  // rax rbx rcx rdx rsi rdi rsp rbp r8..r15 (KVM order)
  uint64_t rip = 0;
  uint64_t rflags = 0x2;
  uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
  uint16_t cs = 0, ss = 0;  // Selectors: 0x33 and 0x2b (CPL3).
};
enum Gpr { kRax, kRbx, kRcx, kRdx, kRsi, kRdi, kRsp, kRbp, kR8, kR9, kR10,
           kR11, kR12, kR13, kR14, kR15 };

// The CPL3 long-mode control state every vCPU boots with.
VcpuRegs BootControlState(const GuestLayout& layout);

// The registers vCPU `index` of `vcpus` starts `spec` with. InvalidArgument
// if the workload is too small for one page per vCPU, or hot_pages is 0 or
// larger than the workload for hotset.
absl::StatusOr<VcpuRegs> InitialRegs(const GuestLayout& layout,
                                     const PatternSpec& spec, int index,
                                     int vcpus);

// The counter slice of vCPU `index`: first page GPA and page count.
struct CounterSlice {
  uint64_t gpa = 0;
  uint64_t pages = 0;
};
CounterSlice CounterSliceOf(const GuestLayout& layout, int index, int vcpus);

// The machine code (guest_program.S) and its entry points.
std::span<const uint8_t> GuestCode();
inline constexpr uint64_t kEntryCounter = 0x00;
inline constexpr uint64_t kEntryRandom = 0x40;
inline constexpr uint64_t kEntryProbe = 0x80;

}  // namespace livemig::vmm

#endif  // LIVEMIG_TOOLS_VMM_GUEST_PROGRAM_H_
