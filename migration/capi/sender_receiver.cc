// File: migration/capi/sender_receiver.cc
//
// The C ABI (livemig.h), part two: VmControl over livemig_vm_ops, the
// sender and the receiver; errors, options and guest memory are in
// livemig.cc. Every entry point runs its body inside Guard()
// (internal/handles.h), which turns any C++ exception into a livemig_error,
// so none crosses into C.
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
#include "migration/capi/internal/handles.h"

using livemig::AtomicBitmap;
using livemig::Endpoint;
using livemig::capi_internal::Guard;
using livemig::capi_internal::kMaxChannels;
using livemig::capi_internal::kMessageSize;
using livemig::capi_internal::LoadTls;
using livemig::capi_internal::NullArgument;

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
