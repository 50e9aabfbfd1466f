#include "tools/vmm/device_state.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace livemig::vmm {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'K', 'V', 'M', 'D', 'S', '1'};

uint64_t Fnv1a(std::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  template <typename T>
  void Put(T value) {
    char buf[sizeof(T)];
    std::memcpy(buf, &value, sizeof(T));
    out_.append(buf, sizeof(T));
  }

 private:
  std::string& out_;
};

// Reads fixed-size fields; the caller checked the total size first.
class Reader {
 public:
  Reader(std::string_view bytes, size_t at) : bytes_(bytes), at_(at) {}
  template <typename T>
  T Get() {
    T value;
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }

 private:
  std::string_view bytes_;
  size_t at_;
};

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("KVM device state: ", what));
}

}  // namespace

std::string SerializeDeviceState(const DeviceStateData& state) {
  std::string out;
  out.reserve(DeviceStateBytes(state.vcpus.size()));
  out.append(kMagic, sizeof(kMagic));
  Writer w(out);
  w.Put<uint32_t>(kDeviceStateVersion);
  w.Put<uint32_t>(kDeviceStateHeaderBytes);
  w.Put<uint32_t>(static_cast<uint32_t>(DeviceStateBytes(state.vcpus.size())));
  w.Put<uint32_t>(static_cast<uint32_t>(state.vcpus.size()));
  w.Put<uint32_t>(kVcpuRecordBytes);
  w.Put<uint32_t>(static_cast<uint32_t>(state.pattern.pattern));
  w.Put<uint64_t>(state.pattern.pages_per_second);
  w.Put<uint64_t>(state.pattern.hot_pages);
  w.Put<uint64_t>(state.pattern.seed);
  w.Put<uint64_t>(state.device_seq);
  w.Put<uint64_t>(state.layout.base);
  w.Put<uint64_t>(state.layout.workload_gpa);
  w.Put<uint64_t>(state.layout.workload_pages);
  w.Put<uint64_t>(state.layout.mmio_gpa);
  for (const VcpuRegs& r : state.vcpus) {
    for (uint64_t g : r.gpr) w.Put<uint64_t>(g);
    w.Put<uint64_t>(r.rip);
    w.Put<uint64_t>(r.rflags);
    w.Put<uint64_t>(r.cr0);
    w.Put<uint64_t>(r.cr3);
    w.Put<uint64_t>(r.cr4);
    w.Put<uint64_t>(r.efer);
    w.Put<uint16_t>(r.cs);
    w.Put<uint16_t>(r.ss);
    w.Put<uint32_t>(0);
  }
  w.Put<uint64_t>(Fnv1a(out));
  return out;
}

absl::StatusOr<DeviceStateData> ParseDeviceState(std::string_view bytes) {
  // The magic first: another VMM's state (a source that ran no KVM guest)
  // is named as such, whatever its length.
  if (bytes.empty() ||
      std::memcmp(bytes.data(), kMagic, std::min(bytes.size(), sizeof(kMagic))) != 0) {
    return Bad(
        "bad magic (not a livemig KVM device state: the source ran no KVM guest, "
        "send --vm=kvm)");
  }
  if (bytes.size() < kDeviceStateHeaderBytes) {
    return Bad(absl::StrCat("truncated: ", bytes.size(),
                            " bytes, shorter than the ", kDeviceStateHeaderBytes,
                            "-byte header"));
  }
  Reader r(bytes, 8);
  const uint32_t version = r.Get<uint32_t>();
  const uint32_t header_bytes = r.Get<uint32_t>();
  const uint32_t total_bytes = r.Get<uint32_t>();
  const uint32_t vcpu_count = r.Get<uint32_t>();
  const uint32_t record_bytes = r.Get<uint32_t>();
  const uint32_t pattern = r.Get<uint32_t>();
  if (version != kDeviceStateVersion) {
    return Bad(absl::StrCat("version ", version, ", this VMM reads version ",
                            kDeviceStateVersion));
  }
  if (header_bytes != kDeviceStateHeaderBytes) {
    return Bad(absl::StrCat("header_bytes is ", header_bytes, ", expected ",
                            kDeviceStateHeaderBytes));
  }
  if (record_bytes != kVcpuRecordBytes) {
    return Bad(absl::StrCat("vcpu_record_bytes is ", record_bytes, ", expected ",
                            kVcpuRecordBytes));
  }
  if (vcpu_count < 1 || vcpu_count > kMaxVcpus) {
    return Bad(absl::StrCat("vcpu_count is ", vcpu_count, ", expected 1..",
                            kMaxVcpus));
  }
  if (total_bytes != DeviceStateBytes(vcpu_count)) {
    return Bad(absl::StrCat("total_bytes is ", total_bytes, " but ", vcpu_count,
                            " vCPUs need ", DeviceStateBytes(vcpu_count)));
  }
  if (bytes.size() != total_bytes) {
    return Bad(absl::StrCat(bytes.size() < total_bytes ? "truncated: " : "too long: ",
                            bytes.size(), " bytes, the header says ", total_bytes));
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + total_bytes - 8, 8);
  if (stored_sum != Fnv1a(bytes.substr(0, total_bytes - 8))) {
    return Bad("checksum mismatch (the bytes were corrupted)");
  }
  DeviceStateData state;
  switch (static_cast<Pattern>(pattern)) {
    case Pattern::kCounter:
    case Pattern::kUniform:
    case Pattern::kHotset:
    case Pattern::kProbe:
      state.pattern.pattern = static_cast<Pattern>(pattern);
      break;
    default:
      return Bad(absl::StrCat("unknown pattern ", pattern));
  }
  state.pattern.pages_per_second = r.Get<uint64_t>();
  state.pattern.hot_pages = r.Get<uint64_t>();
  state.pattern.seed = r.Get<uint64_t>();
  state.device_seq = r.Get<uint64_t>();
  state.layout.base = r.Get<uint64_t>();
  state.layout.workload_gpa = r.Get<uint64_t>();
  state.layout.workload_pages = r.Get<uint64_t>();
  state.layout.mmio_gpa = r.Get<uint64_t>();
  if (state.layout.workload_gpa != state.layout.base + kReservedBytes) {
    return Bad(absl::StrCat("workload_gpa 0x", absl::Hex(state.layout.workload_gpa),
                            " is not base + 0x", absl::Hex(kReservedBytes)));
  }
  for (uint32_t i = 0; i < vcpu_count; ++i) {
    VcpuRegs v;
    for (uint64_t& g : v.gpr) g = r.Get<uint64_t>();
    v.rip = r.Get<uint64_t>();
    v.rflags = r.Get<uint64_t>();
    v.cr0 = r.Get<uint64_t>();
    v.cr3 = r.Get<uint64_t>();
    v.cr4 = r.Get<uint64_t>();
    v.efer = r.Get<uint64_t>();
    v.cs = r.Get<uint16_t>();
    v.ss = r.Get<uint16_t>();
    (void)r.Get<uint32_t>();
    if (v.cs != 0x33 || v.ss != 0x2b) {
      return Bad(absl::StrCat("vCPU ", i, " has CS 0x", absl::Hex(v.cs), " SS 0x",
                              absl::Hex(v.ss), "; only CPL3 (0x33/0x2b) runs"));
    }
    if ((v.efer & 0x400) == 0 || (v.cr0 & 0x80000001) != 0x80000001) {
      return Bad(absl::StrCat("vCPU ", i, " is not in long mode (EFER 0x",
                              absl::Hex(v.efer), ", CR0 0x", absl::Hex(v.cr0), ")"));
    }
    state.vcpus.push_back(v);
  }
  return state;
}

}  // namespace livemig::vmm
