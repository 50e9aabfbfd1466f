// File: migration/device_state.h
//
// The device state a migration carries after its final round, as named
// sections (VmControl::DeviceSections, migration/vm_control.h): one
// DEVICE_STATE frame each, in order, each naming its index, the section
// count and the XXH3-64 of its bytes (proto/migration.proto, DeviceState).
//
//   Source:       LIVEMIG_RETURN_IF_ERROR(CheckDeviceSections(sections));
//                 for (const proto::DeviceState& frame :
//                      DeviceStateFrames(std::move(sections))) { ... write it ... }
//   Destination:  DeviceStateAssembler sections;
//                 while (!sections.complete()) {
//                   ... read a frame ...; LIVEMIG_RETURN_IF_ERROR(sections.Add(frame));
//                 }
//                 std::vector<DeviceSection> got = sections.Take();
//
// Limits (both sides): at most kMaxDeviceSections sections, ids non-empty,
// at most kMaxDeviceIdLength bytes and unique; each section's bytes fit one
// frame, and all of them together at most kMaxDeviceStateBytes (what a
// destination holds before it has checked them). A source from before
// sections (index = count = 0, no hash) sends exactly one.
//
// Errors: the source's check is InvalidArgument naming the section (the
// VMM's bug: nothing was sent); the destination's are DataLoss (a frame out
// of order, a hash that does not match: the stream is wrong) or
// InvalidArgument (a limit), each naming the section.
//
// Thread safety: functions are pure; an assembler is used by one thread.
#ifndef LIVEMIG_MIGRATION_DEVICE_STATE_H_
#define LIVEMIG_MIGRATION_DEVICE_STATE_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "migration/vm_control.h"
#include "proto/migration.pb.h"

namespace livemig {

inline constexpr uint32_t kMaxDeviceSections = 4096;
inline constexpr size_t kMaxDeviceIdLength = 256;
inline constexpr size_t kMaxDeviceStateBytes = size_t{64} << 20;

// XXH3-64 of `bytes`, never 0 (0 means "no hash" on the wire).
uint64_t HashDeviceState(const std::string& bytes);

[[nodiscard]] absl::Status CheckDeviceSections(const std::vector<DeviceSection>& sections);

// The DEVICE_STATE frames for `sections` (checked), in order: id, format
// version, bytes, their hash, index and count.
std::vector<proto::DeviceState> DeviceStateFrames(std::vector<DeviceSection> sections);

class DeviceStateAssembler {
 public:
  // The next frame. REQUIRES: !complete().
  [[nodiscard]] absl::Status Add(proto::DeviceState frame);
  bool complete() const { return count_ != 0 && sections_.size() == count_; }
  std::vector<DeviceSection> Take() { return std::move(sections_); }

 private:
  uint32_t count_ = 0;  // 0 until the first frame.
  size_t bytes_ = 0;    // Of the sections so far.
  std::vector<DeviceSection> sections_;
  std::set<std::string> ids_;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_DEVICE_STATE_H_
