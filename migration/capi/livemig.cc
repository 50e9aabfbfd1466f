// File: migration/capi/livemig.cc
//
// The C ABI (livemig.h) over Sender, Receiver and GuestMemory. Every entry
// point runs its body inside Guard(), which turns any C++ exception into a
// livemig_error, so none crosses into C.
#include "migration/capi/livemig.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/mmap_region.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/stats.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/vm_control.h"

using livemig::AtomicBitmap;
using livemig::Endpoint;
using livemig::GuestAddress;

// ------------------------------------------------------------------ Errors

struct livemig_error {
  int code;
  std::string message;
};

namespace {

// Handed out when even the error cannot be allocated; never freed.
livemig_error kOutOfMemory{LIVEMIG_RESOURCE_EXHAUSTED, "livemig: out of memory"};

constexpr size_t kMessageSize = 256;  // The callbacks' message buffer.
constexpr uint32_t kMaxChannels = 64;
constexpr uint64_t kMaxDurationMs = 24ull * 3600 * 1000;

// Stores `status` in *out (when out is not NULL) and returns its code.
int Report(const absl::Status& status, livemig_error** out) noexcept {
  if (out != nullptr) {
    *out = nullptr;
    if (!status.ok()) {
      try {
        *out = new livemig_error{static_cast<int>(status.code()),
                                 std::string(status.message())};
      } catch (...) {
        *out = &kOutOfMemory;
      }
    }
  }
  return static_cast<int>(status.code());
}

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

absl::Status NullArgument(const char* name) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": NULL"));
}

absl::StatusOr<absl::Duration> DurationMs(const char* field, uint64_t ms) {
  if (ms < 1 || ms > kMaxDurationMs) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": must be 1 .. ", kMaxDurationMs, " ms, got ", ms));
  }
  return absl::Milliseconds(static_cast<int64_t>(ms));
}

}  // namespace

extern "C" {

int livemig_abi_version(void) { return LIVEMIG_ABI_VERSION; }

int livemig_error_code(const livemig_error* error) {
  return error == nullptr ? LIVEMIG_OK : error->code;
}

const char* livemig_error_message(const livemig_error* error) {
  return error == nullptr ? "" : error->message.c_str();
}

void livemig_error_free(livemig_error* error) {
  if (error != &kOutOfMemory) delete error;
}

const char* livemig_code_name(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",          "UNKNOWN",      "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",  "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  if (code < 0 || code > LIVEMIG_UNAUTHENTICATED) return "UNKNOWN";
  return kNames[code];
}

}  // extern "C"

// ----------------------------------------------------------------- Options

struct livemig_options {
  std::optional<Endpoint> endpoint;
  std::optional<uint32_t> channels;  // Unset: sender 2, receiver 64.
  absl::Duration downtime_limit = absl::Milliseconds(300);
  livemig::SenderOptions::Verify verify = livemig::SenderOptions::Verify::kSent;
  std::string tls_dir;  // Empty: plaintext.
  std::string tls_hostname;
  absl::Duration io_timeout = absl::Seconds(30);
  absl::Duration accept_timeout = absl::InfiniteDuration();
  std::string root_dir;
  bool anonymous_as_files = false;
};

namespace {

// Runs `set` on a valid options handle.
template <typename Fn>
int SetOption(livemig_options* options, livemig_error** out, Fn&& set) noexcept {
  return Guard(out, [&]() -> absl::Status {
    if (options == nullptr) return NullArgument("options");
    return set(*options);
  });
}

absl::StatusOr<std::shared_ptr<const livemig::TlsContext>> LoadTls(
    const livemig_options& o, livemig::TlsContext::Role role) {
  if (o.tls_dir.empty()) return std::shared_ptr<const livemig::TlsContext>();
  if (role == livemig::TlsContext::Role::kDestination) {
    return livemig::TlsContext::ForDestination(o.tls_dir);
  }
  if (o.tls_hostname.empty()) {
    return absl::InvalidArgumentError(
        "tls.hostname: a sender needs the name the destination's certificate carries");
  }
  return livemig::TlsContext::ForSource(o.tls_dir, o.tls_hostname);
}

}  // namespace

extern "C" {

livemig_options* livemig_options_new(void) {
  try {
    return new livemig_options();
  } catch (...) {
    return nullptr;
  }
}

void livemig_options_free(livemig_options* options) { delete options; }

int livemig_options_set_tcp(livemig_options* options, const char* host, uint16_t port,
                            livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (host == nullptr) return NullArgument("endpoint.host");
    if (*host == '\0') return absl::InvalidArgumentError("endpoint.host: empty");
    o.endpoint = Endpoint::Tcp(host, port);
    return absl::OkStatus();
  });
}

int livemig_options_set_unix(livemig_options* options, const char* path,
                             livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (path == nullptr) return NullArgument("endpoint.path");
    const size_t n = std::strlen(path);
    if (n == 0) return absl::InvalidArgumentError("endpoint.path: empty");
    if (n > Endpoint::kMaxUnixPathLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          "endpoint.path: ", n, " bytes, longer than the ", Endpoint::kMaxUnixPathLength,
          " a Unix socket path may have"));
    }
    o.endpoint = Endpoint::Unix(path);
    return absl::OkStatus();
  });
}

int livemig_options_set_channels(livemig_options* options, uint32_t channels,
                                 livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (channels < 1 || channels > kMaxChannels) {
      return absl::InvalidArgumentError(
          absl::StrCat("channels: must be 1 .. ", kMaxChannels, ", got ", channels));
    }
    o.channels = channels;
    return absl::OkStatus();
  });
}

int livemig_options_set_downtime_limit_ms(livemig_options* options, uint64_t ms,
                                          livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    absl::StatusOr<absl::Duration> d = DurationMs("downtime_limit_ms", ms);
    if (!d.ok()) return d.status();
    o.downtime_limit = *d;
    return absl::OkStatus();
  });
}

int livemig_options_set_verify(livemig_options* options, int verify,
                               livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    using Verify = livemig::SenderOptions::Verify;
    switch (verify) {
      case LIVEMIG_VERIFY_SENT: o.verify = Verify::kSent; break;
      case LIVEMIG_VERIFY_FULL: o.verify = Verify::kFull; break;
      case LIVEMIG_VERIFY_OFF: o.verify = Verify::kOff; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "verify: must be LIVEMIG_VERIFY_SENT, _FULL or _OFF (0..2), got ", verify));
    }
    return absl::OkStatus();
  });
}

int livemig_options_set_tls(livemig_options* options, const char* dir, const char* hostname,
                            livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (dir == nullptr) {
      o.tls_dir.clear();
      o.tls_hostname.clear();
      return absl::OkStatus();
    }
    if (*dir == '\0') return absl::InvalidArgumentError("tls.dir: empty");
    if (hostname != nullptr && *hostname == '\0') {
      return absl::InvalidArgumentError("tls.hostname: empty");
    }
    o.tls_dir = dir;
    o.tls_hostname = hostname == nullptr ? "" : hostname;
    return absl::OkStatus();
  });
}

int livemig_options_set_io_timeout_ms(livemig_options* options, uint64_t ms,
                                      livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    absl::StatusOr<absl::Duration> d = DurationMs("io_timeout_ms", ms);
    if (!d.ok()) return d.status();
    o.io_timeout = *d;
    return absl::OkStatus();
  });
}

int livemig_options_set_accept_timeout_ms(livemig_options* options, uint64_t ms,
                                          livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (ms == 0) {
      o.accept_timeout = absl::InfiniteDuration();
      return absl::OkStatus();
    }
    absl::StatusOr<absl::Duration> d = DurationMs("accept_timeout_ms", ms);
    if (!d.ok()) return d.status();
    o.accept_timeout = *d;
    return absl::OkStatus();
  });
}

int livemig_options_set_root_dir(livemig_options* options, const char* dir,
                                 int anonymous_as_files, livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (dir == nullptr) {
      o.root_dir.clear();
      o.anonymous_as_files = false;
      return absl::OkStatus();
    }
    if (*dir == '\0') return absl::InvalidArgumentError("root_dir: empty");
    o.root_dir = dir;
    o.anonymous_as_files = anonymous_as_files != 0;
    return absl::OkStatus();
  });
}

}  // extern "C"

// ------------------------------------------------------------ Guest memory

// Regions are collected until the first use, which builds the GuestMemory
// once and seals it: GuestMemory is immutable, so every later accessor may
// run on any thread without a lock.
struct livemig_memory {
  struct Spec {
    uint64_t guest_addr;
    void* host_ptr;
    size_t size;
  };

  std::mutex mu;
  std::vector<Spec> specs ABSL_GUARDED_BY(mu);
  // Rebuilt by every add (from clean bitmaps: nothing can mark before the
  // seal), under mu; never written once `sealed` is true.
  std::optional<livemig::GuestMemory<AtomicBitmap>> memory;
  // Written (true, release) once, under mu, after `memory`'s last write;
  // read with acquire by every use, so a reader that sees true sees memory.
  std::atomic<bool> sealed{false};

  // The sealed memory; FailedPrecondition when no region was added.
  absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> Seal() {
    if (sealed.load(std::memory_order_acquire)) return &*memory;
    std::lock_guard<std::mutex> lock(mu);
    if (!memory.has_value()) {
      return absl::FailedPreconditionError("memory: no region was added");
    }
    sealed.store(true, std::memory_order_release);
    return &*memory;
  }
};

namespace {

absl::StatusOr<livemig::GuestMemory<AtomicBitmap>> BuildMemory(
    const std::vector<livemig_memory::Spec>& specs) {
  std::vector<livemig::GuestRegion<AtomicBitmap>> regions;
  regions.reserve(specs.size());
  for (const livemig_memory::Spec& s : specs) {
    // PROT/flags describe the caller's mapping for the region table; BuildRaw
    // never maps or unmaps.
    absl::StatusOr<livemig::MmapRegion<AtomicBitmap>> raw =
        livemig::MmapRegion<AtomicBitmap>::BuildRaw(s.host_ptr, s.size,
                                                    PROT_READ | PROT_WRITE, MAP_SHARED);
    if (!raw.ok()) return raw.status();
    absl::StatusOr<livemig::GuestRegion<AtomicBitmap>> region =
        livemig::GuestRegion<AtomicBitmap>::Create(std::move(*raw),
                                                   GuestAddress(s.guest_addr));
    if (!region.ok()) return region.status();
    regions.push_back(std::move(*region));
  }
  return livemig::GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

absl::Status CheckRange(uint64_t guest_addr, uint64_t len) {
  if (len != 0 && len - 1 > std::numeric_limits<uint64_t>::max() - guest_addr) {
    return absl::InvalidArgumentError(
        absl::StrCat("range of ", len, " bytes at guest address 0x", absl::Hex(guest_addr),
                     " overflows the guest address space"));
  }
  return absl::OkStatus();
}

// Calls fn(region, offset, n) for each region-sized piece of the range, or
// does nothing and returns OutOfRange when a byte of it is not mapped.
template <typename Fn>
absl::Status ForEachPiece(const livemig::GuestMemory<AtomicBitmap>& memory,
                          uint64_t guest_addr, uint64_t len, Fn&& fn) {
  for (int pass = 0; pass < 2; ++pass) {  // Pass 0 checks, pass 1 acts.
    uint64_t next = guest_addr;
    uint64_t remaining = len;
    while (remaining > 0) {
      const livemig::GuestRegion<AtomicBitmap>* r = memory.FindRegion(GuestAddress(next));
      if (r == nullptr) {
        return absl::OutOfRangeError(absl::StrCat("guest address 0x", absl::Hex(next),
                                                  " is not in any region"));
      }
      const uint64_t avail = r->last_addr().value - next + 1;
      const uint64_t n = std::min(avail, remaining);
      if (pass == 1) fn(*r, r->OffsetOf(GuestAddress(next)), static_cast<size_t>(n));
      remaining -= n;
      next += n;
    }
  }
  return absl::OkStatus();
}

}  // namespace

extern "C" {

livemig_memory* livemig_memory_new(void) {
  try {
    return new livemig_memory();
  } catch (...) {
    return nullptr;
  }
}

void livemig_memory_free(livemig_memory* memory) { delete memory; }

int livemig_memory_add_region(livemig_memory* memory, uint64_t guest_addr, void* host_ptr,
                              size_t size, livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (memory == nullptr) return NullArgument("memory");
    if (host_ptr == nullptr) return NullArgument("host_ptr");
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    if (reinterpret_cast<uintptr_t>(host_ptr) % page != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("host_ptr: ", absl::Hex(reinterpret_cast<uintptr_t>(host_ptr)),
                       " is not aligned to the page size (", page, ")"));
    }
    if (size == 0 || size % page != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "size: ", size, " is not a non-zero multiple of the page size (", page, ")"));
    }
    if (guest_addr % page != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "guest_addr: 0x", absl::Hex(guest_addr), " is not aligned to the page size (",
          page, ")"));
    }
    std::lock_guard<std::mutex> lock(memory->mu);
    if (memory->sealed.load(std::memory_order_relaxed)) {  // Written under mu.
      return absl::FailedPreconditionError(
          "memory: sealed by its first use (mark_dirty, write, read or migrate); add "
          "every region before");
    }
    std::vector<livemig_memory::Spec> specs = memory->specs;
    specs.push_back({guest_addr, host_ptr, size});
    absl::StatusOr<livemig::GuestMemory<AtomicBitmap>> built = BuildMemory(specs);
    if (!built.ok()) return built.status();
    memory->specs = std::move(specs);
    memory->memory.emplace(std::move(*built));
    return absl::OkStatus();
  });
}

int livemig_memory_mark_dirty(livemig_memory* memory, uint64_t guest_addr, uint64_t len,
                              livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (memory == nullptr) return NullArgument("memory");
    absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> m = memory->Seal();
    if (!m.ok()) return m.status();
    absl::Status range = CheckRange(guest_addr, len);
    if (!range.ok()) return range;
    return ForEachPiece(**m, guest_addr, len,
                        [](const livemig::GuestRegion<AtomicBitmap>& r, size_t offset,
                           size_t n) { r.bitmap().MarkDirty(offset, n); });
  });
}

int livemig_memory_write(livemig_memory* memory, uint64_t guest_addr, const void* data,
                         size_t len, livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (memory == nullptr) return NullArgument("memory");
    if (data == nullptr && len != 0) return NullArgument("data");
    absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> m = memory->Seal();
    if (!m.ok()) return m.status();
    if (len == 0) return absl::OkStatus();
    return (*m)->Write(GuestAddress(guest_addr),
                       std::span<const uint8_t>(static_cast<const uint8_t*>(data), len));
  });
}

int livemig_memory_read(livemig_memory* memory, uint64_t guest_addr, void* data, size_t len,
                        livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (memory == nullptr) return NullArgument("memory");
    if (data == nullptr && len != 0) return NullArgument("data");
    absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> m = memory->Seal();
    if (!m.ok()) return m.status();
    if (len == 0) return absl::OkStatus();
    return (*m)->Read(GuestAddress(guest_addr),
                      std::span<uint8_t>(static_cast<uint8_t*>(data), len));
  });
}

}  // extern "C"

// -------------------------------------------------------------- VM control

namespace {

// A callback's result as a Status: its code (outside 1..16: Unknown) and
// the message it wrote, or one naming the callback.
absl::Status FromCallback(int rc, char* message, const char* name) {
  if (rc == LIVEMIG_OK) return absl::OkStatus();
  message[kMessageSize - 1] = '\0';
  const absl::StatusCode code = rc >= 1 && rc <= LIVEMIG_UNAUTHENTICATED
                                    ? static_cast<absl::StatusCode>(rc)
                                    : absl::StatusCode::kUnknown;
  if (message[0] != '\0') return absl::Status(code, message);
  return absl::Status(code, absl::StrCat("vm_ops.", name, " failed (returned ", rc, ")"));
}

class CVmControl final : public livemig::VmControl {
 public:
  CVmControl(const livemig_vm_ops& ops, void* user_data) : ops_(ops), user_data_(user_data) {}

  absl::Status Pause() override {
    char message[kMessageSize] = {0};
    return FromCallback(ops_.pause(user_data_, message, sizeof message), message, "pause");
  }
  absl::Status Resume() override {
    char message[kMessageSize] = {0};
    return FromCallback(ops_.resume(user_data_, message, sizeof message), message, "resume");
  }
  void SetThrottle(int percent) override {
    if (ops_.set_throttle != nullptr) ops_.set_throttle(user_data_, percent);
  }
  absl::Status CollectDirty(size_t region_index, std::span<uint64_t> words) override {
    if (ops_.collect_dirty == nullptr) return absl::OkStatus();
    char message[kMessageSize] = {0};
    return FromCallback(ops_.collect_dirty(user_data_, region_index, words.data(),
                                           words.size(), message, sizeof message),
                        message, "collect_dirty");
  }
  absl::StatusOr<std::string> DeviceState() override {
    if (ops_.device_state == nullptr) return std::string();
    char message[kMessageSize] = {0};
    const void* data = nullptr;
    size_t size = 0;
    absl::Status status = FromCallback(
        ops_.device_state(user_data_, &data, &size, message, sizeof message), message,
        "device_state");
    if (!status.ok()) return status;
    if (size == 0) return std::string();
    if (data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("vm_ops.device_state: returned NULL data of ", size, " bytes"));
    }
    return std::string(static_cast<const char*>(data), size);
  }
  uint64_t DeviceStateSizeHint() override {
    return ops_.device_state_size_hint == nullptr ? 0 : ops_.device_state_size_hint(user_data_);
  }

 private:
  const livemig_vm_ops ops_;  // A copy: the caller's struct may go.
  void* const user_data_;
};

void FillStats(const livemig::MigrationStats& s, livemig_stats* out) {
  std::memset(out, 0, sizeof *out);
  std::snprintf(out->status, sizeof out->status, "%s", s.status.c_str());
  out->rounds = s.rounds;
  out->channels = s.channels;
  out->total_time_ms = s.total_time_ms;
  out->downtime_ms = s.downtime_ms;
  out->setup_time_ms = s.setup_time_ms;
  out->transferred_bytes = s.transferred;
  out->total_bytes = s.total;
  out->normal_pages = s.normal;
  out->zero_pages = s.duplicate;
  out->converged = s.converged ? 1 : 0;
  out->audit_ran = s.audit.ran ? 1 : 0;
  out->audit_untracked_pages = s.audit.untracked_pages;
}

}  // namespace

// ------------------------------------------------------------------ Sender

struct livemig_sender {
  explicit livemig_sender(livemig::SenderOptions options) : sender(std::move(options)) {}
  livemig::Sender sender;
};

extern "C" {

livemig_sender* livemig_sender_new(const livemig_options* options,
                                   livemig_error** error_out) {
  livemig_sender* made = nullptr;
  Guard(error_out, [&]() -> absl::Status {
    if (options == nullptr) return NullArgument("options");
    if (!options->endpoint.has_value()) {
      return absl::InvalidArgumentError("endpoint: not set");
    }
    if (options->endpoint->kind == Endpoint::Kind::kTcp && options->endpoint->port == 0) {
      return absl::InvalidArgumentError("endpoint.port: 0 (a sender needs the destination's port)");
    }
    livemig::SenderOptions so;
    so.destination = *options->endpoint;
    so.channels = options->channels.value_or(2);
    so.downtime_limit = options->downtime_limit;
    so.verify = options->verify;
    so.io_timeout = options->io_timeout;
    absl::StatusOr<std::shared_ptr<const livemig::TlsContext>> tls =
        LoadTls(*options, livemig::TlsContext::Role::kSource);
    if (!tls.ok()) return tls.status();
    so.tls = *tls;
    made = new livemig_sender(std::move(so));
    return absl::OkStatus();
  });
  return made;
}

void livemig_sender_free(livemig_sender* sender) { delete sender; }

int livemig_sender_migrate(livemig_sender* sender, livemig_memory* memory,
                           const livemig_vm_ops* vm_ops, void* user_data,
                           livemig_stats* stats_out, livemig_error** error_out) {
  if (stats_out != nullptr) {
    std::memset(stats_out, 0, sizeof *stats_out);
    std::snprintf(stats_out->status, sizeof stats_out->status, "none");
  }
  return Guard(error_out, [&]() -> absl::Status {
    if (sender == nullptr) return NullArgument("sender");
    if (memory == nullptr) return NullArgument("memory");
    if (vm_ops == nullptr) return NullArgument("vm_ops");
    if (vm_ops->pause == nullptr) return NullArgument("vm_ops.pause");
    if (vm_ops->resume == nullptr) return NullArgument("vm_ops.resume");
    absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> m = memory->Seal();
    if (!m.ok()) return m.status();
    CVmControl vm(*vm_ops, user_data);
    absl::StatusOr<livemig::MigrationStats> stats = sender->sender.Migrate(**m, vm);
    if (stats_out != nullptr) {
      FillStats(stats.ok() ? *stats : sender->sender.last_stats(), stats_out);
    }
    return stats.status();
  });
}

void livemig_sender_cancel(livemig_sender* sender) {
  if (sender == nullptr) return;
  Guard(nullptr, [&]() -> absl::Status {
    sender->sender.Cancel();
    return absl::OkStatus();
  });
}

}  // extern "C"

// ---------------------------------------------------------------- Receiver

struct livemig_receiver {
  std::unique_ptr<livemig::Receiver> receiver;
};

struct livemig_received {
  explicit livemig_received(livemig::ReceivedMigration m) : got(std::move(m)) {}
  livemig::ReceivedMigration got;
  std::vector<std::string> paths;  // Per region of got.memory; "" anonymous.
};

extern "C" {

livemig_receiver* livemig_receiver_listen(const livemig_options* options,
                                          livemig_error** error_out) {
  livemig_receiver* made = nullptr;
  Guard(error_out, [&]() -> absl::Status {
    if (options == nullptr) return NullArgument("options");
    if (!options->endpoint.has_value()) {
      return absl::InvalidArgumentError("endpoint: not set");
    }
    livemig::ReceiverOptions ro;
    ro.root_dir = options->root_dir;
    ro.anonymous_regions_as_files = options->anonymous_as_files;
    ro.io_timeout = options->io_timeout;
    ro.accept_timeout = options->accept_timeout;
    ro.max_channels = options->channels.value_or(kMaxChannels);
    absl::StatusOr<std::shared_ptr<const livemig::TlsContext>> tls =
        LoadTls(*options, livemig::TlsContext::Role::kDestination);
    if (!tls.ok()) return tls.status();
    ro.tls = *tls;
    absl::StatusOr<std::unique_ptr<livemig::Receiver>> r =
        livemig::Receiver::Listen(*options->endpoint, std::move(ro));
    if (!r.ok()) return r.status();
    made = new livemig_receiver{std::move(*r)};
    return absl::OkStatus();
  });
  return made;
}

void livemig_receiver_free(livemig_receiver* receiver) { delete receiver; }

size_t livemig_receiver_endpoint(const livemig_receiver* receiver, char* buf, size_t buf_size,
                                 uint16_t* port_out) {
  if (port_out != nullptr) *port_out = 0;
  if (buf != nullptr && buf_size > 0) buf[0] = '\0';
  if (receiver == nullptr) return 0;
  size_t length = 0;
  Guard(nullptr, [&]() -> absl::Status {
    const Endpoint at = receiver->receiver->endpoint();
    const std::string text = at.ToString();
    if (port_out != nullptr && at.kind == Endpoint::Kind::kTcp) *port_out = at.port;
    if (buf != nullptr && buf_size > 0) {
      std::snprintf(buf, buf_size, "%s", text.c_str());
    }
    length = text.size();
    return absl::OkStatus();
  });
  return length;
}

int livemig_receiver_receive_one(livemig_receiver* receiver, livemig_received** result_out,
                                 livemig_error** error_out) {
  if (result_out != nullptr) *result_out = nullptr;
  return Guard(error_out, [&]() -> absl::Status {
    if (receiver == nullptr) return NullArgument("receiver");
    if (result_out == nullptr) return NullArgument("result_out");
    absl::StatusOr<livemig::ReceivedMigration> got = receiver->receiver->ReceiveOne();
    if (!got.ok()) return got.status();
    auto result = std::make_unique<livemig_received>(std::move(*got));
    const livemig::ReceivedMigration& g = result->got;
    for (const auto& region : g.memory.regions()) {
      std::string path;
      for (size_t i = 0; i < g.regions.size() && i < g.files.size(); ++i) {
        if (g.regions[i].guest_addr() == region.start_addr().value) path = g.files[i];
      }
      result->paths.push_back(std::move(path));
    }
    *result_out = result.release();
    return absl::OkStatus();
  });
}

void livemig_receiver_cancel(livemig_receiver* receiver) {
  if (receiver == nullptr) return;
  Guard(nullptr, [&]() -> absl::Status {
    receiver->receiver->Cancel();
    return absl::OkStatus();
  });
}

size_t livemig_received_num_regions(const livemig_received* result) {
  return result == nullptr ? 0 : result->got.memory.num_regions();
}

int livemig_received_region_at(const livemig_received* result, size_t index,
                               livemig_received_region* region_out) {
  return Guard(nullptr, [&]() -> absl::Status {
    if (result == nullptr) return NullArgument("result");
    if (region_out == nullptr) return NullArgument("region_out");
    if (index >= result->got.memory.num_regions()) {
      return absl::OutOfRangeError(absl::StrCat("index: ", index, ", the result has ",
                                                result->got.memory.num_regions(),
                                                " regions"));
    }
    const auto& r = result->got.memory.region(index);
    region_out->guest_addr = r.start_addr().value;
    region_out->size = r.len();
    region_out->host_ptr = r.region().as_ptr();
    region_out->file_path = result->paths[index].empty() ? nullptr : result->paths[index].c_str();
    return absl::OkStatus();
  });
}

const void* livemig_received_device_state(const livemig_received* result, size_t* size_out) {
  if (result == nullptr) {
    if (size_out != nullptr) *size_out = 0;
    return nullptr;
  }
  if (size_out != nullptr) *size_out = result->got.device_state.size();
  return result->got.device_state.data();
}

int livemig_received_verified(const livemig_received* result) {
  return result != nullptr && result->got.verified ? 1 : 0;
}

void livemig_received_free(livemig_received* result) { delete result; }

}  // extern "C"
