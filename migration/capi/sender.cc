// File: migration/capi/sender.cc
//
// The C ABI (livemig.h), part two: VmControl over livemig_vm_ops (device
// state as one blob or as named sections) and the sender (ABI 4: its
// limits and its stats as JSON, livemig_abi4.h); errors, options
// and guest memory are in livemig.cc, the receiver in receiver.cc. Every
// entry point runs its body inside Guard() (internal/handles.h), which turns
// any C++ exception into a livemig_error, so none crosses into C.
#include "migration/capi/livemig.h"

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
#include "migration/device_state.h"
#include "migration/sender.h"
#include "migration/stats.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/vm_control.h"
#include "migration/capi/internal/handles.h"

using livemig::AtomicBitmap;
using livemig::Endpoint;
using livemig::capi_internal::CopyOut;
using livemig::capi_internal::FromCallback;
using livemig::capi_internal::Guard;
using livemig::capi_internal::kMessageSize;
using livemig::capi_internal::LoadTls;
using livemig::capi_internal::NullArgument;

// -------------------------------------------------------------- VM control

namespace {

class CVmControl final : public livemig::VmControl {
 public:
  CVmControl(const livemig_vm_ops& ops, void* user_data) : ops_(ops), user_data_(user_data) {}

  absl::Status Pause() override {
    char message[kMessageSize] = {0};
    return FromCallback(ops_.pause(user_data_, message, sizeof message), message, "vm_ops.pause");
  }
  absl::Status Resume() override {
    char message[kMessageSize] = {0};
    return FromCallback(ops_.resume(user_data_, message, sizeof message), message, "vm_ops.resume");
  }
  void SetThrottle(int percent) override {
    if (ops_.set_throttle != nullptr) ops_.set_throttle(user_data_, percent);
  }
  absl::Status CollectDirty(size_t region_index, std::span<uint64_t> words) override {
    if (ops_.collect_dirty == nullptr) return absl::OkStatus();
    char message[kMessageSize] = {0};
    return FromCallback(ops_.collect_dirty(user_data_, region_index, words.data(),
                                           words.size(), message, sizeof message),
                        message, "vm_ops.collect_dirty");
  }
  absl::StatusOr<std::string> DeviceState() override {
    if (ops_.device_state == nullptr) return std::string();
    char message[kMessageSize] = {0};
    const void* data = nullptr;
    size_t size = 0;
    absl::Status status = FromCallback(
        ops_.device_state(user_data_, &data, &size, message, sizeof message), message,
        "vm_ops.device_state");
    if (!status.ok()) return status;
    if (size == 0) return std::string();
    if (data == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("vm_ops.device_state: returned NULL data of ", size, " bytes"));
    }
    return std::string(static_cast<const char*>(data), size);
  }
  absl::StatusOr<std::vector<livemig::DeviceSection>> DeviceSections() override {
    if (ops_.device_sections == nullptr) return VmControl::DeviceSections();
    char message[kMessageSize] = {0};
    const livemig_device_section* sections = nullptr;
    size_t count = 0;
    absl::Status status = FromCallback(
        ops_.device_sections(user_data_, &sections, &count, message, sizeof message), message,
        "vm_ops.device_sections");
    if (!status.ok()) return status;
    if (count > livemig::kMaxDeviceSections) {  // Before copying that many.
      return absl::InvalidArgumentError(absl::StrCat("vm_ops.device_sections: ", count,
                                                     " sections; at most ",
                                                     livemig::kMaxDeviceSections));
    }
    if (sections == nullptr && count != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "vm_ops.device_sections: returned NULL sections with count ", count));
    }
    std::vector<livemig::DeviceSection> out;
    out.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      const livemig_device_section& c = sections[i];
      if (c.id == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("vm_ops.device_sections: section ", i, ": id is NULL"));
      }
      if (c.data == nullptr && c.size != 0) {
        return absl::InvalidArgumentError(absl::StrCat("vm_ops.device_sections: section ", i,
                                                       " (\"", c.id, "\"): NULL data of ",
                                                       c.size, " bytes"));
      }
      out.push_back({c.id, c.format_version == 0 ? 1u : c.format_version,
                     c.size == 0 ? std::string()
                                 : std::string(static_cast<const char*>(c.data), c.size)});
    }
    return out;  // CheckDeviceSections (the sender's) applies the limits.
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

livemig_compression_stats CompressionOf(const livemig::MigrationStats& s) {
  livemig_compression_stats out;
  std::memset(&out, 0, sizeof out);
  const livemig::CompressionStats& c = s.compression;
  out.codec = c.codec == "zstd"  ? LIVEMIG_CODEC_ZSTD
              : c.codec == "lz4" ? LIVEMIG_CODEC_LZ4
                                 : LIVEMIG_CODEC_NONE;
  out.level = c.level;
  out.compressed_batches = c.compressed_batches;
  out.incompressible_batches = c.incompressible_batches;
  out.skipped_batches = c.skipped_batches;
  out.bytes_in = c.bytes_in;
  out.compressed_bytes = c.bytes_out;
  out.compression_rate = c.ratio();
  out.busy_ms = c.busy_ms;
  out.busy_rate = s.total_time_ms > 0 ? c.busy_ms / s.total_time_ms : 0;
  return out;
}

livemig_round RoundOf(const livemig::RoundStats& r) {
  livemig_round out;
  std::memset(&out, 0, sizeof out);
  out.round = r.round;
  out.final = r.final ? 1 : 0;
  out.dirty_pages = r.dirty_pages;
  out.zero_pages = r.zero_pages;
  out.bytes = r.bytes;
  out.duration_ms = r.duration_ms;
  out.bandwidth_bytes_per_s = r.bandwidth_bytes_per_s;
  out.dirtied_during_round = r.dirtied_during_round;
  out.expected_downtime_ms = r.expected_downtime_ms;
  out.throttle_percent = r.throttle_percent;
  return out;
}

livemig_progress ProgressOf(const livemig::MigrationProgress& p) {
  livemig_progress out;
  std::memset(&out, 0, sizeof out);
  out.round = p.round;
  out.round_pages = p.round_pages;
  out.round_pages_sent = p.round_pages_sent;
  out.transferred_bytes = p.transferred;
  out.total_bytes = p.total;
  out.elapsed_ms = p.elapsed_ms;
  out.round_bytes_per_s = p.round_bytes_per_s;
  return out;
}

}  // namespace

// ------------------------------------------------------------------ Sender

// The options are fixed at livemig_sender_new, but SenderOptions::file_names
// come with each migrate's memory: every migrate runs a livemig::Sender of
// its own. A cancel while none runs is kept here for the next one, as
// livemig::Sender itself keeps it.
struct livemig_sender {
  explicit livemig_sender(livemig::SenderOptions o) : options(std::move(o)) {}
  const livemig::SenderOptions options;
  std::mutex mu;
  livemig::Sender* running ABSL_GUARDED_BY(mu) = nullptr;
  bool cancel_pending ABSL_GUARDED_BY(mu) = false;
  // The last migrate's compression figures (livemig_sender_compression_stats)
  // and all its stats as JSON (livemig_sender_stats_json).
  mutable std::mutex stats_mu;
  livemig_compression_stats last_compression ABSL_GUARDED_BY(stats_mu) = {};
  std::string last_json ABSL_GUARDED_BY(stats_mu) = livemig::MigrationStats().ToJson();
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
    if (options->endpoint->kind == Endpoint::Kind::kFd) {
      const size_t fds = options->endpoint->fds.size();
      if (options->channels.has_value() && *options->channels != fds) {
        return absl::InvalidArgumentError(absl::StrCat(
            "channels: ", *options->channels, " with ", fds,
            " endpoint.fds: one connected socket per channel"));
      }
      so.channels = static_cast<uint32_t>(fds);
    }
    const livemig::SenderOptions& limits = options->limits;  // ABI 4.
    so.max_bandwidth = limits.max_bandwidth;
    so.max_rounds = limits.max_rounds;
    so.timeout = limits.timeout;
    so.on_limit = limits.on_limit;
    so.stall_rounds = limits.stall_rounds;
    so.auto_converge = limits.auto_converge;
    so.throttle_initial = limits.throttle_initial;
    so.throttle_increment = limits.throttle_increment;
    so.throttle_max = limits.throttle_max;
    so.max_pause = limits.max_pause;  // ABI 5.
    so.batch_pages = limits.batch_pages;
    so.downtime_limit = options->downtime_limit;
    so.verify = options->verify;
    so.io_timeout = options->io_timeout;
    so.compression = options->compression;
    if (options->progress != nullptr) {
      so.on_progress = [fn = options->progress,
                        ud = options->progress_user_data](const livemig::MigrationProgress& p) {
        const livemig_progress c = ProgressOf(p);
        fn(ud, &c);
      };
      so.progress_interval = options->progress_interval;
    }
    if (options->round != nullptr) {
      so.on_round = [fn = options->round,
                     ud = options->round_user_data](const livemig::MigrationStats& s) {
        if (s.round_stats.empty()) return;
        const livemig_round c = RoundOf(s.round_stats.back());
        fn(ud, &c);
      };
    }
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
    if (vm_ops->device_state != nullptr && vm_ops->device_sections != nullptr) {
      return absl::InvalidArgumentError(
          "vm_ops: device_state and device_sections are both set; set one");
    }
    absl::StatusOr<const livemig::GuestMemory<AtomicBitmap>*> m = memory->Seal();
    if (!m.ok()) return m.status();
    livemig::SenderOptions options = sender->options;
    options.file_names = memory->file_names;  // Immutable once sealed.
    livemig::Sender one(std::move(options));
    {
      std::lock_guard<std::mutex> lock(sender->mu);
      if (sender->cancel_pending) one.Cancel();  // Fails this Migrate at once.
      sender->cancel_pending = false;
      sender->running = &one;
    }
    struct Unpublish {
      livemig_sender& s;
      ~Unpublish() {
        std::lock_guard<std::mutex> lock(s.mu);
        s.running = nullptr;
      }
    } unpublish{*sender};
    CVmControl vm(*vm_ops, user_data);
    absl::StatusOr<livemig::MigrationStats> stats = one.Migrate(**m, vm);
    const livemig::MigrationStats& got = stats.ok() ? *stats : one.last_stats();
    if (stats_out != nullptr) FillStats(got, stats_out);
    std::string json = got.ToJson();
    {
      std::lock_guard<std::mutex> lock(sender->stats_mu);
      sender->last_compression = CompressionOf(got);
      sender->last_json = std::move(json);
    }
    return stats.status();
  });
}

void livemig_sender_cancel(livemig_sender* sender) {
  if (sender == nullptr) return;
  Guard(nullptr, [&]() -> absl::Status {
    std::lock_guard<std::mutex> lock(sender->mu);
    if (sender->running != nullptr) {
      sender->running->Cancel();
    } else {
      sender->cancel_pending = true;
    }
    return absl::OkStatus();
  });
}

int livemig_sender_compression_stats(const livemig_sender* sender,
                                     livemig_compression_stats* stats_out,
                                     livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (sender == nullptr) return NullArgument("sender");
    if (stats_out == nullptr) return NullArgument("stats_out");
    std::lock_guard<std::mutex> lock(sender->stats_mu);
    *stats_out = sender->last_compression;
    return absl::OkStatus();
  });
}

size_t livemig_sender_stats_json(const livemig_sender* sender, char* buf, size_t buf_size) {
  if (buf != nullptr && buf_size > 0) buf[0] = '\0';
  if (sender == nullptr) return 0;
  size_t length = 0;
  Guard(nullptr, [&]() -> absl::Status {
    std::lock_guard<std::mutex> lock(sender->stats_mu);
    length = CopyOut(sender->last_json, buf, buf_size);
    return absl::OkStatus();
  });
  return length;
}

}  // extern "C"
