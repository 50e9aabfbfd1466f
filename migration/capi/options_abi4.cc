// File: migration/capi/options_abi4.cc
//
// The C ABI (livemig_abi4.h), ABI 4's options: the sender's limits
// (bandwidth cap, rounds, timeout and on_limit, stall rounds, auto-converge
// steps, batch pages) and the receiver's region_memory_fd callback. They
// only fill livemig_options (internal/handles.h): every value is checked
// here, before anything is stored, so a refused call leaves the options as
// they were; livemig_sender_new (sender.cc) and livemig_receiver_listen
// (receiver.cc) hand them to the C++ options. Every entry point runs its
// body inside SetOption() (Guard()), so no C++ exception crosses into C.
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "migration/capi/internal/handles.h"
#include "migration/capi/livemig.h"
#include "migration/protocol.h"
#include "migration/sender.h"
#include "migration/wire/frame_format.h"

using livemig::capi_internal::kMaxDurationMs;
using livemig::capi_internal::SetOption;

namespace {

// The engine's bound (Sender::Migrate refuses more): one frame's payload.
static_assert(LIVEMIG_MAX_BATCH_PAGES ==
              livemig::wire::kMaxPayloadSize / livemig::kMigrationPageSize);

constexpr int kMaxThrottle = 99;  // Percent; 100 would stop the guest.

absl::Status CheckPercent(const char* field, int percent) {
  if (percent >= 1 && percent <= kMaxThrottle) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": must be 1 .. ", kMaxThrottle, ", got ", percent));
}

}  // namespace

extern "C" {

int livemig_options_set_max_bandwidth(livemig_options* options, uint64_t bytes_per_s,
                                      livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.limits.max_bandwidth = bytes_per_s;
    return absl::OkStatus();
  });
}

int livemig_options_set_limits(livemig_options* options, uint32_t max_rounds,
                               uint64_t timeout_ms, int on_limit, livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    using OnLimit = livemig::SenderOptions::OnLimit;
    if (max_rounds < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_rounds: must be at least 1, got ", max_rounds));
    }
    if (timeout_ms > kMaxDurationMs) {
      return absl::InvalidArgumentError(absl::StrCat(
          "timeout_ms: must be 0 (none) or 1 .. ", kMaxDurationMs, " ms, got ", timeout_ms));
    }
    OnLimit policy;
    switch (on_limit) {
      case LIVEMIG_ON_LIMIT_CANCEL: policy = OnLimit::kCancel; break;
      case LIVEMIG_ON_LIMIT_FORCE: policy = OnLimit::kForce; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "on_limit: must be LIVEMIG_ON_LIMIT_CANCEL or _FORCE (0..1), got ", on_limit));
    }
    o.limits.max_rounds = max_rounds;
    o.limits.timeout = timeout_ms == 0 ? absl::InfiniteDuration()
                                       : absl::Milliseconds(static_cast<int64_t>(timeout_ms));
    o.limits.on_limit = policy;
    return absl::OkStatus();
  });
}

int livemig_options_set_stall_rounds(livemig_options* options, uint32_t rounds,
                                     livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.limits.stall_rounds = rounds;
    return absl::OkStatus();
  });
}

int livemig_options_set_auto_converge(livemig_options* options, int enable,
                                      int throttle_initial, int throttle_increment,
                                      int throttle_max, livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (enable == 0) {
      o.limits.auto_converge = false;
      return absl::OkStatus();
    }
    absl::Status checked = CheckPercent("throttle_initial", throttle_initial);
    if (checked.ok()) checked = CheckPercent("throttle_increment", throttle_increment);
    if (checked.ok()) checked = CheckPercent("throttle_max", throttle_max);
    if (!checked.ok()) return checked;
    if (throttle_initial > throttle_max) {
      return absl::InvalidArgumentError(absl::StrCat("throttle_initial: ", throttle_initial,
                                                     " is above throttle_max ", throttle_max));
    }
    o.limits.auto_converge = true;
    o.limits.throttle_initial = throttle_initial;
    o.limits.throttle_increment = throttle_increment;
    o.limits.throttle_max = throttle_max;
    return absl::OkStatus();
  });
}

int livemig_options_set_batch_pages(livemig_options* options, uint32_t pages,
                                    livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (pages < 1 || pages > LIVEMIG_MAX_BATCH_PAGES) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch_pages: must be 1 .. ", LIVEMIG_MAX_BATCH_PAGES, ", got ", pages));
    }
    o.limits.batch_pages = pages;
    return absl::OkStatus();
  });
}

int livemig_options_set_region_memory_fd(livemig_options* options,
                                         livemig_region_memory_fd_fn fn, void* user_data,
                                         livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.region_memory = {nullptr, fn, fn == nullptr ? nullptr : user_data};
    return absl::OkStatus();
  });
}

}  // extern "C"
