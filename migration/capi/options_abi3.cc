// File: migration/capi/options_abi3.cc
//
// The C ABI (livemig.h), ABI 3's options: page-batch compression (the
// sender's codec, the receiver's accepted ones), the receiver's
// preallocation, and the sender's progress and round callbacks. They only
// fill livemig_options (internal/handles.h); livemig_sender_new
// (sender.cc) and livemig_receiver_listen (receiver.cc) hand them to the
// C++ options. Every entry point runs its body inside SetOption() (Guard()), so no C++
// exception crosses into C.
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "migration/capi/internal/handles.h"
#include "migration/capi/livemig.h"
#include "migration/wire/compression.h"

using livemig::capi_internal::DurationMs;
using livemig::capi_internal::NullArgument;
using livemig::capi_internal::SetOption;

namespace {

constexpr uint32_t kKnownCodecs = LIVEMIG_ACCEPT_ZSTD | LIVEMIG_ACCEPT_LZ4;

}  // namespace

extern "C" {

int livemig_options_set_compression(livemig_options* options, const char* spec,
                                    livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (spec == nullptr) return NullArgument("compression");
    absl::StatusOr<livemig::wire::CompressionSpec> parsed =
        livemig::wire::ParseCompressionSpec(spec);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("compression: ", parsed.status().message()));
    }
    o.compression = *parsed;
    return absl::OkStatus();
  });
}

int livemig_options_set_accept_compression(livemig_options* options, uint32_t codecs,
                                           livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if ((codecs & ~kKnownCodecs) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "accept_compression: unknown bits 0x%x in 0x%x; the codecs are "
          "LIVEMIG_ACCEPT_ZSTD (0x%x) and LIVEMIG_ACCEPT_LZ4 (0x%x)",
          codecs & ~kKnownCodecs, codecs, LIVEMIG_ACCEPT_ZSTD, LIVEMIG_ACCEPT_LZ4));
    }
    std::vector<livemig::wire::Codec> accept;
    if ((codecs & LIVEMIG_ACCEPT_ZSTD) != 0) accept.push_back(livemig::wire::Codec::kZstd);
    if ((codecs & LIVEMIG_ACCEPT_LZ4) != 0) accept.push_back(livemig::wire::Codec::kLz4);
    o.accept_compression = std::move(accept);
    return absl::OkStatus();
  });
}

int livemig_options_set_prealloc(livemig_options* options, int prealloc,
                                 livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.prealloc = prealloc != 0;
    return absl::OkStatus();
  });
}

int livemig_options_set_progress(livemig_options* options, livemig_progress_fn fn,
                                 void* user_data, uint64_t interval_ms,
                                 livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (fn == nullptr) {
      o.progress = nullptr;
      o.progress_user_data = nullptr;
      return absl::OkStatus();
    }
    absl::StatusOr<absl::Duration> d = DurationMs("progress_interval_ms", interval_ms);
    if (!d.ok()) return d.status();
    o.progress = fn;
    o.progress_user_data = user_data;
    o.progress_interval = *d;
    return absl::OkStatus();
  });
}

int livemig_options_set_round_callback(livemig_options* options, livemig_round_fn fn,
                                       void* user_data, livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.round = fn;
    o.round_user_data = fn == nullptr ? nullptr : user_data;
    return absl::OkStatus();
  });
}

}  // extern "C"
