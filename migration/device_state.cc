// File: migration/device_state.cc
#include "migration/device_state.h"

#include <xxhash.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "migration/wire/frame_format.h"

namespace livemig {
namespace {

// What one frame's message may hold of state: the frame limit less the
// message's other fields (an id of kMaxDeviceIdLength and a few numbers).
constexpr size_t kMaxSectionBytes = wire::kMaxMessageSize - kMaxDeviceIdLength - 64;

absl::Status CheckId(const std::string& id, size_t index, const char* who) {
  if (id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(who, "device state section ", index,
                                                   " has an empty id"));
  }
  if (id.size() > kMaxDeviceIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(who, "device state section ", index,
                                                   ": id of ", id.size(), " bytes (at most ",
                                                   kMaxDeviceIdLength, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t HashDeviceState(const std::string& bytes) {
  const uint64_t h = XXH3_64bits(bytes.data(), bytes.size());
  return h == 0 ? 1 : h;
}

absl::Status CheckDeviceSections(const std::vector<DeviceSection>& sections) {
  if (sections.empty() || sections.size() > kMaxDeviceSections) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VmControl::DeviceSections gave ", sections.size(), " sections; want 1 to ",
        kMaxDeviceSections));
  }
  std::set<std::string> ids;
  size_t total = 0;
  for (size_t i = 0; i < sections.size(); ++i) {
    const DeviceSection& s = sections[i];
    if (absl::Status id = CheckId(s.id, i, "VmControl: "); !id.ok()) return id;
    if (!ids.insert(s.id).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "VmControl: device state section id \"", s.id, "\" given twice"));
    }
    if (s.bytes.size() > kMaxSectionBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "VmControl: device state section \"", s.id, "\" holds ", s.bytes.size(),
          " bytes; one section carries at most ", kMaxSectionBytes, " (split it)"));
    }
    total += s.bytes.size();
    if (total > kMaxDeviceStateBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "VmControl: device state sections up to \"", s.id, "\" hold ", total,
          " bytes; a migration carries at most ", kMaxDeviceStateBytes));
    }
  }
  return absl::OkStatus();
}

std::vector<proto::DeviceState> DeviceStateFrames(std::vector<DeviceSection> sections) {
  std::vector<proto::DeviceState> frames(sections.size());
  for (size_t i = 0; i < sections.size(); ++i) {
    proto::DeviceState& frame = frames[i];
    frame.set_device_id(sections[i].id);
    frame.set_format_version(sections[i].format_version);
    frame.set_state_hash(HashDeviceState(sections[i].bytes));
    frame.set_state(std::move(sections[i].bytes));
    frame.set_index(static_cast<uint32_t>(i));
    frame.set_count(static_cast<uint32_t>(sections.size()));
  }
  return frames;
}

absl::Status DeviceStateAssembler::Add(proto::DeviceState frame) {
  const size_t index = sections_.size();
  // A source from before sections: one frame, index = count = 0.
  const uint32_t count = frame.count() == 0 && frame.index() == 0 && index == 0 ? 1 : frame.count();
  if (count == 0 || count > kMaxDeviceSections) {
    return absl::InvalidArgumentError(absl::StrCat("device state of ", frame.count(),
                                                   " sections; at most ", kMaxDeviceSections));
  }
  if (count_ != 0 && count != count_) {
    return absl::DataLossError(absl::StrCat("device state section ", index, " says ", count,
                                            " sections; the first said ", count_));
  }
  if (frame.index() != index && !(frame.count() == 0 && index == 0)) {
    return absl::DataLossError(absl::StrCat("device state section ", frame.index(),
                                            " arrived where section ", index, " was due"));
  }
  if (absl::Status id = CheckId(frame.device_id(), index, ""); !id.ok()) return id;
  if (!ids_.insert(frame.device_id()).second) {
    return absl::DataLossError(absl::StrCat("device state section id \"", frame.device_id(),
                                            "\" arrived twice"));
  }
  if (frame.state_hash() != 0 && frame.state_hash() != HashDeviceState(frame.state())) {
    return absl::DataLossError(absl::StrCat("device state section \"", frame.device_id(),
                                            "\" (", frame.state().size(),
                                            " bytes) does not match its hash"));
  }
  if (frame.state().size() > kMaxDeviceStateBytes - bytes_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device state section \"", frame.device_id(), "\" brings the sections to ",
        bytes_ + frame.state().size(), " bytes; a migration carries at most ",
        kMaxDeviceStateBytes));
  }
  bytes_ += frame.state().size();
  count_ = count;
  sections_.push_back(DeviceSection{frame.device_id(), frame.format_version(),
                                    std::move(*frame.mutable_state())});
  return absl::OkStatus();
}

}  // namespace livemig
