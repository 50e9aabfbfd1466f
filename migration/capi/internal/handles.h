// File: migration/capi/internal/handles.h
//
// What the C ABI's implementation files share: the structs behind the
// opaque handles of livemig.h (errors, options, guest memory) and the
// helpers every entry point uses. Internal: nothing here is part of the ABI.
//
// Thread safety: as livemig.h documents per handle.
#ifndef LIVEMIG_MIGRATION_CAPI_INTERNAL_HANDLES_H_
#define LIVEMIG_MIGRATION_CAPI_INTERNAL_HANDLES_H_

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "migration/capi/livemig.h"
#include "migration/sender.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/wire/compression.h"

struct livemig_error {
  int code;
  std::string message;
};

struct livemig_options {
  std::optional<livemig::Endpoint> endpoint;
  std::optional<uint32_t> channels;  // Unset: sender 2, receiver 64.
  absl::Duration downtime_limit = absl::Milliseconds(300);
  livemig::SenderOptions::Verify verify = livemig::SenderOptions::Verify::kSent;
  std::string tls_dir;  // Empty: plaintext.
  std::string tls_hostname;
  absl::Duration io_timeout = absl::Seconds(30);
  absl::Duration accept_timeout = absl::InfiniteDuration();
  // ABI 3.
  livemig::wire::CompressionSpec compression;  // Sender.
  std::vector<livemig::wire::Codec> accept_compression = {  // Receiver.
      livemig::wire::Codec::kZstd, livemig::wire::Codec::kLz4};
  bool prealloc = false;  // Receiver.
  livemig_progress_fn progress = nullptr;  // Sender; null: none.
  void* progress_user_data = nullptr;
  absl::Duration progress_interval = absl::Milliseconds(100);
  livemig_round_fn round = nullptr;  // Sender; null: none.
  void* round_user_data = nullptr;
  std::string root_dir;
  bool anonymous_as_files = false;
  // Receiver: where destination memory comes from. Each setter replaces the
  // whole, so at most one callback is set; neither: the receiver's own.
  struct RegionMemory {
    livemig_region_memory_fn mapping = nullptr;     // ABI 2.
    livemig_region_memory_fd_fn with_fd = nullptr;  // ABI 4: and its file.
    void* user_data = nullptr;
  } region_memory;
  // ABI 4, sender: the limits are set straight into these SenderOptions
  // fields, which keep their C++ defaults: max_bandwidth, max_rounds,
  // timeout, on_limit, stall_rounds, auto_converge, throttle_initial,
  // throttle_increment, throttle_max, batch_pages. livemig_sender_new reads
  // those and no other field of it.
  livemig::SenderOptions limits;
};

// Regions are collected until the first use, which builds the GuestMemory
// once and seals it: GuestMemory is immutable, so every later accessor may
// run on any thread without a lock.
struct livemig_memory {
  struct Spec {
    uint64_t guest_addr;
    void* host_ptr;  // Null for a file-backed region (livemig maps `file`).
    size_t size;
    std::optional<livemig::FileOffset> file;  // add_file_region: our dup.
    std::string file_name;  // add_file_region: the destination's; "" default.
  };

  std::mutex mu;
  std::vector<Spec> specs ABSL_GUARDED_BY(mu);
  // Per region of `memory` (guest address order): the file name a receiver
  // rebuilds it into (SenderOptions::file_names); "" default or anonymous.
  // Written with `memory`, under the same rule.
  std::vector<std::string> file_names;
  // Rebuilt by every add (from clean bitmaps: nothing can mark before the
  // seal), under mu; never written once `sealed` is true.
  std::optional<livemig::GuestMemory<livemig::AtomicBitmap>> memory;
  // Written (true, release) once, under mu, after `memory`'s last write;
  // read with acquire by every use, so a reader that sees true sees memory.
  std::atomic<bool> sealed{false};

  // The sealed memory; FailedPrecondition when no region was added.
  absl::StatusOr<const livemig::GuestMemory<livemig::AtomicBitmap>*> Seal() {
    if (sealed.load(std::memory_order_acquire)) return &*memory;
    std::lock_guard<std::mutex> lock(mu);
    if (!memory.has_value()) {
      return absl::FailedPreconditionError("memory: no region was added");
    }
    sealed.store(true, std::memory_order_release);
    return &*memory;
  }
};

namespace livemig::capi_internal {

constexpr size_t kMessageSize = 256;  // The callbacks' message buffer.
constexpr uint32_t kMaxChannels = 64;
constexpr uint64_t kMaxDurationMs = 24ull * 3600 * 1000;

// Stores `status` in *out (when out is not NULL) and returns its code.
int Report(const absl::Status& status, livemig_error** out) noexcept;

// Runs `fn` (returning absl::Status); no exception escapes.
template <typename Fn>
int Guard(livemig_error** out, Fn&& fn) noexcept {
  try {
    return Report(fn(), out);
  } catch (const std::bad_alloc&) {
    return Report(absl::ResourceExhaustedError("livemig: out of memory"), out);
  } catch (const std::exception& e) {
    try {
      return Report(absl::InternalError(absl::StrCat("livemig: unexpected C++ exception: ",
                                                     e.what())),
                    out);
    } catch (...) {
      return Report(absl::InternalError("livemig: unexpected C++ exception"), out);
    }
  } catch (...) {
    return Report(absl::InternalError("livemig: unexpected C++ exception"), out);
  }
}

absl::Status NullArgument(const char* name);

// `text` into `buf` by snprintf's convention (NUL-terminated, truncated to
// buf_size - 1; buf may be NULL when buf_size is 0): returns text's length.
size_t CopyOut(const std::string& text, char* buf, size_t buf_size) noexcept;

// Runs `set` (livemig_options& -> absl::Status) on a valid options handle,
// inside Guard(): every livemig_options_set_* is one call of it.
template <typename Fn>
int SetOption(livemig_options* options, livemig_error** out, Fn&& set) noexcept {
  return Guard(out, [&]() -> absl::Status {
    if (options == nullptr) return NullArgument("options");
    return set(*options);
  });
}

// A C callback's result as a Status: its code (outside 1..16: Unknown) and
// the message it wrote into `message` (kMessageSize bytes), or one saying
// `name` failed.
absl::Status FromCallback(int rc, char* message, const char* name);
// `value` is a multiple of `page`, else InvalidArgument naming `field`.
absl::Status CheckAligned(const char* field, uint64_t value, size_t page);
// `fd` is open and, when it is a regular file, holds `size` bytes from
// `file_offset`: else InvalidArgument "fd: N is not open" or OutOfRange
// "fd: N is a file of B bytes, too short for ...".
absl::Status CheckFileSpan(int fd, uint64_t file_offset, uint64_t size);
// `ms` as a duration for `field`: 1 ms to a day, else InvalidArgument.
absl::StatusOr<absl::Duration> DurationMs(const char* field, uint64_t ms);
// The TLS context `o` asks for in `role`; null without a TLS dir.
absl::StatusOr<std::shared_ptr<const livemig::TlsContext>> LoadTls(
    const livemig_options& o, livemig::TlsContext::Role role);

}  // namespace livemig::capi_internal

#endif  // LIVEMIG_MIGRATION_CAPI_INTERNAL_HANDLES_H_
