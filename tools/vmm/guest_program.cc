#include "tools/vmm/guest_program.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace livemig::vmm {
namespace {

// guest_program.S, assembled with `as --64` and `objcopy -O binary`; the
// listing is in that file. Entry points at 0x00 (counter), 0x40 (random)
// and 0x80 (probe).
constexpr uint8_t kCode[] = {
    0x4d, 0x85, 0xc0, 0x75, 0x05, 0x4d, 0x8b, 0x01, 0xeb, 0xf6, 0x48, 0x89,
    0xd8, 0x48, 0xc1, 0xe0, 0x0c, 0x48, 0x89, 0x0c, 0x07, 0x49, 0xff, 0xc8,
    0x48, 0xff, 0xc3, 0x48, 0x39, 0xf3, 0x72, 0xe0, 0x31, 0xdb, 0x48, 0xff,
    0xc1, 0xeb, 0xd9, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x0f, 0x1f, 0x00, 0x4d, 0x85, 0xc0, 0x75, 0x05, 0x4d, 0x8b, 0x01,
    0xeb, 0xf6, 0x48, 0x89, 0xd8, 0x48, 0xc1, 0xe0, 0x0d, 0x48, 0x31, 0xc3,
    0x48, 0x89, 0xd8, 0x48, 0xc1, 0xe8, 0x07, 0x48, 0x31, 0xc3, 0x48, 0x89,
    0xd8, 0x48, 0xc1, 0xe0, 0x11, 0x48, 0x31, 0xc3, 0x48, 0x89, 0xd8, 0x31,
    0xd2, 0x48, 0xf7, 0xf6, 0x48, 0xc1, 0xe2, 0x0c, 0x48, 0xff, 0xc1, 0x48,
    0x89, 0x0c, 0x17, 0x49, 0xff, 0xc8, 0xeb, 0xc0, 0x4d, 0x8b, 0x51, 0x08,
    0x4d, 0x8b, 0x59, 0x10, 0x4d, 0x8b, 0x61, 0x18, 0x4d, 0x85, 0xe4, 0x74,
    0xef, 0x49, 0xff, 0xc5, 0x4d, 0x39, 0xda, 0x73, 0x08, 0x4d, 0x89, 0x2a,
    0x4d, 0x01, 0xe2, 0xeb, 0xf3, 0x4d, 0x89, 0x69, 0x20, 0xeb, 0xd9};
static_assert(sizeof(kCode) <= kPageSize);

constexpr uint64_t kPresent = 1, kWritable = 2, kUser = 4, kHuge = 0x80;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t k2MiB = uint64_t{1} << 21;

// The info page: lets a human (or a debugger) recognise a livemig guest.
struct InfoPage {
  char magic[8];  // "LMGUEST1"
  uint64_t workload_gpa;
  uint64_t workload_pages;
  uint64_t mmio_gpa;
  uint32_t pattern;
  uint32_t reserved;
  uint64_t pages_per_second;
  uint64_t hot_pages;
  uint64_t seed;
};

}  // namespace

const char* PatternName(Pattern pattern) {
  switch (pattern) {
    case Pattern::kCounter: return "counter";
    case Pattern::kUniform: return "uniform";
    case Pattern::kHotset: return "hotset";
    case Pattern::kProbe: return "probe";
  }
  return "unknown";
}

absl::StatusOr<Pattern> ParsePatternName(absl::string_view name) {
  for (Pattern p : {Pattern::kCounter, Pattern::kUniform, Pattern::kHotset,
                    Pattern::kProbe}) {
    if (name == PatternName(p)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown guest pattern \"", name, "\" (counter, uniform, hotset, probe)"));
}

absl::StatusOr<GuestLayout> ComputeLayout(std::span<const RegionExtent> regions) {
  if (regions.empty()) return absl::InvalidArgumentError("no guest regions");
  const RegionExtent& r0 = regions[0];
  if (r0.size < kReservedBytes + kPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "region 0 has ", r0.size, " bytes; the guest needs more than ",
        kReservedBytes, " (code, page tables, info and device pages) plus a "
        "workload page"));
  }
  uint64_t end = 0;
  for (const RegionExtent& r : regions) end = std::max(end, r.gpa + r.size);
  GuestLayout layout;
  layout.base = r0.gpa;
  layout.workload_gpa = r0.gpa + kReservedBytes;
  layout.workload_pages = (r0.size - kReservedBytes) / kPageSize;
  layout.mmio_gpa = (end + kGiB - 1) / kGiB * kGiB;
  if (layout.mmio_gpa / kGiB + 1 > kMaxPds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest memory ends at 0x", absl::Hex(end), "; the guest's page tables "
        "map only the first ", kMaxPds - 1, " GiB"));
  }
  return layout;
}

absl::Status WriteGuestImage(const GuestLayout& layout, const PatternSpec& spec,
                             const GuestWriter& write) {
  LIVEMIG_RETURN_IF_ERROR(write(layout.code_gpa(), GuestCode()));
  std::vector<uint64_t> table(512, 0);
  auto bytes = [&table]() {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(table.data()),
                                    table.size() * sizeof(uint64_t));
  };
  table[0] = (layout.base + kPdptOffset) | kPresent | kWritable | kUser;
  LIVEMIG_RETURN_IF_ERROR(write(layout.pml4_gpa(), bytes()));
  table.assign(512, 0);
  for (uint64_t i = 0; i < kMaxPds; ++i) {
    table[i] = (layout.base + kPdOffset + i * kPageSize) | kPresent | kWritable | kUser;
  }
  LIVEMIG_RETURN_IF_ERROR(write(layout.base + kPdptOffset, bytes()));
  for (uint64_t pd = 0; pd < kMaxPds; ++pd) {
    for (uint64_t i = 0; i < 512; ++i) {
      table[i] = (pd * kGiB + i * k2MiB) | kPresent | kWritable | kUser | kHuge;
    }
    LIVEMIG_RETURN_IF_ERROR(write(layout.base + kPdOffset + pd * kPageSize, bytes()));
  }
  InfoPage info{};
  std::memcpy(info.magic, "LMGUEST1", 8);
  info.workload_gpa = layout.workload_gpa;
  info.workload_pages = layout.workload_pages;
  info.mmio_gpa = layout.mmio_gpa;
  info.pattern = static_cast<uint32_t>(spec.pattern);
  info.pages_per_second = spec.pages_per_second;
  info.hot_pages = spec.hot_pages;
  info.seed = spec.seed;
  return write(layout.info_gpa(),
               std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&info),
                                        sizeof(info)));
}

VcpuRegs BootControlState(const GuestLayout& layout) {
  VcpuRegs regs;
  regs.cr0 = 0x80050033;  // PG | AM | WP | NE | ET | MP | PE
  regs.cr3 = layout.pml4_gpa();
  regs.cr4 = 0x20;     // PAE
  regs.efer = 0x500;   // LMA | LME
  regs.cs = 0x33;
  regs.ss = 0x2b;
  regs.rflags = 0x2;
  return regs;
}

CounterSlice CounterSliceOf(const GuestLayout& layout, int index, int vcpus) {
  const uint64_t pages = layout.workload_pages / static_cast<uint64_t>(vcpus);
  return {layout.workload_gpa + static_cast<uint64_t>(index) * pages * kPageSize,
          pages};
}

absl::StatusOr<VcpuRegs> InitialRegs(const GuestLayout& layout,
                                     const PatternSpec& spec, int index,
                                     int vcpus) {
  if (vcpus < 1 || index < 0 || index >= vcpus) {
    return absl::InvalidArgumentError(absl::StrCat("vCPU ", index, " of ", vcpus));
  }
  if (layout.workload_pages < static_cast<uint64_t>(vcpus)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the workload has ", layout.workload_pages, " pages, fewer than the ",
        vcpus, " vCPUs"));
  }
  VcpuRegs regs = BootControlState(layout);
  regs.gpr[kR9] = layout.mmio_gpa;
  regs.gpr[kRsp] = layout.base + kInfoOffset;  // Unused: no pattern pushes.
  switch (spec.pattern) {
    case Pattern::kCounter: {
      const CounterSlice slice = CounterSliceOf(layout, index, vcpus);
      regs.rip = layout.code_gpa() + kEntryCounter;
      regs.gpr[kRdi] = slice.gpa;
      regs.gpr[kRsi] = slice.pages;
      regs.gpr[kRbx] = 0;
      regs.gpr[kRcx] = 1;  // Memory starts as all 0 = counter - 1.
      break;
    }
    case Pattern::kUniform:
    case Pattern::kHotset: {
      uint64_t pages = layout.workload_pages;
      if (spec.pattern == Pattern::kHotset) {
        if (spec.hot_pages == 0 || spec.hot_pages > layout.workload_pages) {
          return absl::InvalidArgumentError(absl::StrCat(
              "hotset needs 1..", layout.workload_pages, " hot pages, got ",
              spec.hot_pages));
        }
        pages = spec.hot_pages;
      }
      regs.rip = layout.code_gpa() + kEntryRandom;
      regs.gpr[kRdi] = layout.workload_gpa;
      regs.gpr[kRsi] = pages;
      // xorshift64 needs a non-zero state; one stream per vCPU.
      regs.gpr[kRbx] = (spec.seed * 0x9e3779b97f4a7c15ULL) ^
                       (static_cast<uint64_t>(index + 1) * 0xbf58476d1ce4e5b9ULL);
      if (regs.gpr[kRbx] == 0) regs.gpr[kRbx] = 1;
      break;
    }
    case Pattern::kProbe:
      regs.rip = layout.code_gpa() + kEntryProbe;
      break;
    default:
      return absl::InvalidArgumentError("unknown pattern");
  }
  return regs;
}

std::span<const uint8_t> GuestCode() { return std::span<const uint8_t>(kCode); }

}  // namespace livemig::vmm
