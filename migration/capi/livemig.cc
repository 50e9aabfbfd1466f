// File: migration/capi/livemig.cc
//
// The C ABI (livemig.h), part one: errors, options and guest memory over
// caller-owned mappings; the sender is in sender.cc, the receiver in
// receiver.cc, ABI 3's and ABI 4's options in options_abi3.cc and
// options_abi4.cc. Every entry point runs its body inside Guard()
// (internal/handles.h), which turns any C++ exception into a livemig_error,
// so none crosses into C.
#include "migration/capi/livemig.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

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
#include "migration/capi/internal/handles.h"

using livemig::AtomicBitmap;
using livemig::Endpoint;
using livemig::GuestAddress;
using livemig::capi_internal::CheckAligned;
using livemig::capi_internal::CheckFileSpan;
using livemig::capi_internal::DurationMs;
using livemig::capi_internal::Guard;
using livemig::capi_internal::kMaxChannels;
using livemig::capi_internal::NullArgument;
using livemig::capi_internal::SetOption;
using livemig::capi_internal::Report;

// ------------------------------------------------------------------ Errors

namespace {

// Handed out when even the error cannot be allocated; never freed.
livemig_error kOutOfMemory{LIVEMIG_RESOURCE_EXHAUSTED, "livemig: out of memory"};

}  // namespace

namespace livemig::capi_internal {

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

absl::Status NullArgument(const char* name) {
  return absl::InvalidArgumentError(absl::StrCat(name, ": NULL"));
}

size_t CopyOut(const std::string& text, char* buf, size_t buf_size) noexcept {
  if (buf != nullptr && buf_size > 0) {
    const size_t n = std::min(text.size(), buf_size - 1);
    std::memcpy(buf, text.data(), n);
    buf[n] = '\0';
  }
  return text.size();
}

absl::Status FromCallback(int rc, char* message, const char* name) {
  if (rc == LIVEMIG_OK) return absl::OkStatus();
  message[kMessageSize - 1] = '\0';
  const absl::StatusCode code = rc >= 1 && rc <= LIVEMIG_UNAUTHENTICATED
                                    ? static_cast<absl::StatusCode>(rc)
                                    : absl::StatusCode::kUnknown;
  if (message[0] != '\0') return absl::Status(code, message);
  return absl::Status(code, absl::StrCat(name, " failed (returned ", rc, ")"));
}

absl::Status CheckAligned(const char* field, uint64_t value, size_t page) {
  if (value % page == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      field, ": 0x", absl::Hex(value), " is not aligned to the page size (", page, ")"));
}

absl::Status CheckFileSpan(int fd, uint64_t file_offset, uint64_t size) {
  if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
    return absl::InvalidArgumentError(absl::StrCat("fd: ", fd, " is not open"));
  }
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
      (file_offset > static_cast<uint64_t>(st.st_size) ||
       size > static_cast<uint64_t>(st.st_size) - file_offset)) {
    return absl::OutOfRangeError(absl::StrCat(
        "fd: ", fd, " is a file of ", st.st_size, " bytes, too short for size ", size,
        " at file_offset ", file_offset));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Duration> DurationMs(const char* field, uint64_t ms) {
  if (ms < 1 || ms > kMaxDurationMs) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": must be 1 .. ", kMaxDurationMs, " ms, got ", ms));
  }
  return absl::Milliseconds(static_cast<int64_t>(ms));
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

}  // namespace livemig::capi_internal

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

int livemig_options_set_fds(livemig_options* options, const int* fds, size_t num_fds,
                            livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    if (fds == nullptr) return NullArgument("fds");
    if (num_fds < 1 || num_fds > kMaxChannels) {
      return absl::InvalidArgumentError(absl::StrCat(
          "endpoint.fds: ", num_fds, " descriptors, must be 1 .. ", kMaxChannels,
          " (one per channel)"));
    }
    std::vector<int> copy(fds, fds + num_fds);
    for (size_t i = 0; i < copy.size(); ++i) {
      if (copy[i] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("endpoint.fds[", i, "]: ", copy[i], " is not a descriptor"));
      }
      for (size_t j = 0; j < i; ++j) {
        if (copy[j] == copy[i]) {
          return absl::InvalidArgumentError(absl::StrCat(
              "endpoint.fds[", i, "]: descriptor ", copy[i], " repeats endpoint.fds[", j,
              "] (one socket per channel)"));
        }
      }
    }
    o.endpoint = Endpoint::Fds(std::move(copy));
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

int livemig_options_set_region_memory(livemig_options* options, livemig_region_memory_fn fn,
                                      void* user_data, livemig_error** error_out) {
  return SetOption(options, error_out, [&](livemig_options& o) -> absl::Status {
    o.region_memory = {fn, nullptr, fn == nullptr ? nullptr : user_data};
    return absl::OkStatus();
  });
}

}  // extern "C"

// ------------------------------------------------------------ Guest memory

namespace {

absl::StatusOr<livemig::GuestMemory<AtomicBitmap>> BuildMemory(
    const std::vector<livemig_memory::Spec>& specs) {
  std::vector<livemig::GuestRegion<AtomicBitmap>> regions;
  regions.reserve(specs.size());
  for (const livemig_memory::Spec& s : specs) {
    // A file-backed region is our own shared mapping of the file (its
    // FileOffset makes the region table say BACKING_FILE); otherwise
    // PROT/flags describe the caller's mapping for the region table, and
    // BuildRaw never maps or unmaps.
    absl::StatusOr<livemig::MmapRegion<AtomicBitmap>> raw =
        s.file.has_value()
            ? livemig::MmapRegion<AtomicBitmap>::FromFile(*s.file, s.size)
            : livemig::MmapRegion<AtomicBitmap>::BuildRaw(s.host_ptr, s.size,
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

// Adds `spec` to `memory`: validates the whole set by building it (so an
// overlap is refused and nothing changes), then publishes it.
absl::Status AddSpec(livemig_memory& memory, livemig_memory::Spec spec) {
  std::lock_guard<std::mutex> lock(memory.mu);
  if (memory.sealed.load(std::memory_order_relaxed)) {  // Written under mu.
    return absl::FailedPreconditionError(
        "memory: sealed by its first use (mark_dirty, write, read or migrate); add "
        "every region before");
  }
  std::vector<livemig_memory::Spec> specs = memory.specs;
  specs.push_back(std::move(spec));
  absl::StatusOr<livemig::GuestMemory<AtomicBitmap>> built = BuildMemory(specs);
  if (!built.ok()) return built.status();
  std::vector<std::string> names;
  for (const auto& region : built->regions()) {
    std::string name;
    for (const livemig_memory::Spec& s : specs) {
      if (s.guest_addr == region.start_addr().value) name = s.file_name;
    }
    names.push_back(std::move(name));
  }
  memory.specs = std::move(specs);
  memory.memory.emplace(std::move(*built));
  memory.file_names = std::move(names);
  return absl::OkStatus();
}

absl::Status CheckSize(size_t size, size_t page) {
  if (size != 0 && size % page == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "size: ", size, " is not a non-zero multiple of the page size (", page, ")"));
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
    absl::Status checked = CheckSize(size, page);
    if (checked.ok()) checked = CheckAligned("guest_addr", guest_addr, page);
    if (!checked.ok()) return checked;
    return AddSpec(*memory, {guest_addr, host_ptr, size, std::nullopt, ""});
  });
}

int livemig_memory_add_file_region(livemig_memory* memory, uint64_t guest_addr, size_t size,
                                   int fd, uint64_t file_offset, const char* file_name,
                                   livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (memory == nullptr) return NullArgument("memory");
    if (fd < 0) {
      return absl::InvalidArgumentError(absl::StrCat("fd: ", fd, " is not a descriptor"));
    }
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    absl::Status checked = CheckSize(size, page);
    if (checked.ok()) checked = CheckAligned("file_offset", file_offset, page);
    if (checked.ok()) checked = CheckAligned("guest_addr", guest_addr, page);
    if (!checked.ok()) return checked;
    if (file_name != nullptr && *file_name == '\0') {
      return absl::InvalidArgumentError("file_name: empty (NULL for the default name)");
    }
    if (file_name != nullptr && *file_name == '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "file_name: \"", file_name, "\" is absolute; it must be relative to the "
          "receiver's root dir"));
    }
    checked = CheckFileSpan(fd, file_offset, size);
    if (!checked.ok()) return checked;
    absl::StatusOr<livemig::FileOffset> file = livemig::FileOffset::Dup(fd, file_offset);
    if (!file.ok()) {
      return absl::Status(file.status().code(),
                          absl::StrCat("fd: ", file.status().message()));
    }
    return AddSpec(*memory, {guest_addr, nullptr, size, std::move(*file),
                             file_name == nullptr ? "" : file_name});
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
