// File: migration/capi/options_abi5.cc
//
// The C ABI (livemig_abi5.h), ABI 5's option: the sender's pause budget
// (C++ SenderOptions::max_pause). Every entry point runs inside SetOption()
// (internal/handles.h), so no C++ exception crosses into C.
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "migration/capi/internal/handles.h"
#include "migration/capi/livemig.h"
#include "migration/sender.h"

using livemig::capi_internal::kMaxDurationMs;
using livemig::capi_internal::SetOption;

extern "C" {

int livemig_options_set_max_pause(livemig_options* options, uint64_t max_pause_ms,
                                  livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (max_pause_ms > kMaxDurationMs) {
      return absl::InvalidArgumentError(absl::StrCat("max_pause_ms: must be 0 (none) or 1 .. ",
                                                     kMaxDurationMs, " ms, got ", max_pause_ms));
    }
    o.limits.max_pause = max_pause_ms == 0 ? absl::InfiniteDuration()
                                           : absl::Milliseconds(static_cast<int64_t>(max_pause_ms));
    return absl::OkStatus();
  });
}

}  // extern "C"
