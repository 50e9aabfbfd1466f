// File: tools/cli/tracker_flags.cc
#include "tools/cli/tracker_flags.h"

#include "absl/strings/str_cat.h"

namespace livemig::cli {

absl::StatusOr<Tracker> TrackerFromFlag(const std::string& value, bool kvm_guest) {
  if (value.empty()) {
    return kvm_guest ? Tracker::kKvmLog : Tracker::kApi;
  }
  Tracker tracker;
  if (value == "api") {
    tracker = Tracker::kApi;
  } else if (value == "uffd") {
    tracker = Tracker::kUffd;
  } else if (value == "kvm-log") {
    tracker = Tracker::kKvmLog;
  } else if (value == "kvm-ring") {
    tracker = Tracker::kKvmRing;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--tracker=", value, ": expected api, uffd, kvm-log or kvm-ring"));
  }
  if ((tracker == Tracker::kKvmLog || tracker == Tracker::kKvmRing) && !kvm_guest) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tracker=", value, " sees a KVM guest's writes: it needs --vm=kvm"));
  }
  return tracker;
}

const char* TrackerName(Tracker tracker) {
  switch (tracker) {
    case Tracker::kApi:
      return "api";
    case Tracker::kUffd:
      return "uffd";
    case Tracker::kKvmLog:
      return "kvm-log";
    case Tracker::kKvmRing:
      return "kvm-ring";
  }
  return "?";
}

}  // namespace livemig::cli
