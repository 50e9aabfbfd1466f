// File: migration/capi/receiver.cc
//
// The C ABI (livemig.h), part three: the receiver (TCP, Unix or connected
// fds; destination memory from the VMM's region_memory callback, or ABI 4's
// region_memory_fd with the file it maps) and the received result
// (regions, device state sections, its figures and ABI 5's JSON of it).
// Every entry point runs its body inside
// Guard() (internal/handles.h), which turns any C++ exception into a
// livemig_error, so none crosses into C.
#include "migration/capi/livemig.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/received_json.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/vm_control.h"
#include "migration/wire/compression.h"
#include "migration/capi/internal/handles.h"
#include "proto/migration.pb.h"

using livemig::Endpoint;
using livemig::capi_internal::CheckAligned;
using livemig::capi_internal::CheckFileSpan;
using livemig::capi_internal::CopyOut;
using livemig::capi_internal::FromCallback;
using livemig::capi_internal::Guard;
using livemig::capi_internal::kMaxChannels;
using livemig::capi_internal::kMessageSize;
using livemig::capi_internal::LoadTls;
using livemig::capi_internal::NullArgument;

namespace {

// One call of a C region memory callback: fills *out (which starts as
// {NULL, 0, -1, 0}) and returns a livemig_code.
using RegionMemoryCall = std::function<int(const livemig_region_info* region,
                                           livemig_provided_memory* out, char* message,
                                           size_t message_size)>;

// The file the VMM lent with its memory (ABI 4): one livemig can pwrite(2)
// round 0 into, holding the region. The engine dups it later.
absl::Status CheckProvidedFile(const livemig_provided_memory& m, uint64_t region_size) {
  if (m.fd < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd: ", m.fd, " is not a descriptor (-1: none)"));
  }
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  LIVEMIG_RETURN_IF_ERROR(CheckAligned("file_offset", m.file_offset, page));
  LIVEMIG_RETURN_IF_ERROR(CheckFileSpan(m.fd, m.file_offset, region_size));
  const int flags = ::fcntl(m.fd, F_GETFL);
  if (flags < 0 || (flags & O_PATH) != 0 || (flags & O_ACCMODE) == O_RDONLY) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd: ", m.fd, " is not open for writing"));
  }
  struct stat st;
  if (::fstat(m.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("fd: ", m.fd, " is not a regular file"));
  }
  return absl::OkStatus();
}

// ReceiverOptions::region_memory over a C callback (`name` in its errors).
std::function<absl::StatusOr<livemig::ProvidedMemory>(const livemig::RegionDescription&)>
RegionMemory(RegionMemoryCall call, const char* name) {
  return [call = std::move(call), name](const livemig::RegionDescription& info)
             -> absl::StatusOr<livemig::ProvidedMemory> {
    livemig_region_info region{};
    region.index = info.index;
    region.guest_addr = info.guest_addr;
    region.size = info.size;
    const bool file = info.backing == livemig::RegionDescription::Backing::kFile;
    region.backing = file ? LIVEMIG_BACKING_FILE : LIVEMIG_BACKING_ANONYMOUS;
    region.file_path = file ? info.file_path.c_str() : "";
    region.file_offset = file ? info.file_offset : 0;
    livemig_provided_memory got{nullptr, 0, -1, 0};
    char message[kMessageSize] = {0};
    LIVEMIG_RETURN_IF_ERROR(
        FromCallback(call(&region, &got, message, sizeof message), message, name));
    if (got.addr == nullptr) return livemig::ProvidedMemory{};
    if (got.fd != -1) LIVEMIG_RETURN_IF_ERROR(CheckProvidedFile(got, info.size));
    return livemig::ProvidedMemory{got.addr, got.size, got.fd, got.file_offset};
  };
}

void FillSection(const livemig::DeviceSection& s, livemig_device_section* out) {
  out->id = s.id.c_str();
  out->format_version = s.format_version;
  out->data = s.bytes.data();
  out->size = s.bytes.size();
}

}  // namespace

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
    ro.accept_compression = options->accept_compression;  // ABI 3.
    ro.prealloc = options->prealloc;
    ro.anonymous_regions_as_files = options->anonymous_as_files;
    ro.io_timeout = options->io_timeout;
    ro.accept_timeout = options->accept_timeout;
    ro.max_channels = options->channels.value_or(kMaxChannels);
    const livemig_options::RegionMemory& lent = options->region_memory;
    if (lent.mapping != nullptr) {  // ABI 2: a mapping only.
      ro.region_memory = RegionMemory(
          [fn = lent.mapping, ud = lent.user_data](const livemig_region_info* region,
                                                   livemig_provided_memory* out,
                                                   char* message, size_t message_size) {
            return fn(ud, region, &out->addr, &out->size, message, message_size);
          },
          "the region_memory callback");
    } else if (lent.with_fd != nullptr) {  // ABI 4: and its file.
      ro.region_memory = RegionMemory(
          [fn = lent.with_fd, ud = lent.user_data](const livemig_region_info* region,
                                                   livemig_provided_memory* out,
                                                   char* message, size_t message_size) {
            return fn(ud, region, out, message, message_size);
          },
          "the region_memory_fd callback");
    }
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
        if (g.regions[i].guest_addr == region.start_addr().value) path = g.files[i];
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

size_t livemig_received_num_device_sections(const livemig_received* result) {
  return result == nullptr ? 0 : result->got.device_sections.size();
}

int livemig_received_device_section_at(const livemig_received* result, size_t index,
                                       livemig_device_section* section_out,
                                       livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (result == nullptr) return NullArgument("result");
    if (section_out == nullptr) return NullArgument("section_out");
    const std::vector<livemig::DeviceSection>& sections = result->got.device_sections;
    if (index >= sections.size()) {
      return absl::OutOfRangeError(absl::StrCat("index: ", index, ", the result has ",
                                                sections.size(), " device sections"));
    }
    FillSection(sections[index], section_out);
    return absl::OkStatus();
  });
}

int livemig_received_find_device_section(const livemig_received* result, const char* id,
                                         livemig_device_section* section_out,
                                         livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (result == nullptr) return NullArgument("result");
    if (id == nullptr) return NullArgument("id");
    if (section_out == nullptr) return NullArgument("section_out");
    for (const livemig::DeviceSection& s : result->got.device_sections) {
      if (s.id == id) {
        FillSection(s, section_out);
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError(absl::StrCat("id: no device section \"", id, "\" among the ",
                                            result->got.device_sections.size(), " received"));
  });
}

int livemig_received_get_stats(const livemig_received* result,
                               livemig_received_stats* stats_out, livemig_error** error_out) {
  return Guard(error_out, [&]() -> absl::Status {
    if (result == nullptr) return NullArgument("result");
    if (stats_out == nullptr) return NullArgument("stats_out");
    const livemig::ReceivedMigration& g = result->got;
    std::memset(stats_out, 0, sizeof *stats_out);
    stats_out->rounds = g.rounds;
    stats_out->channels = g.channels;
    stats_out->raw_pages = g.raw_pages;
    stats_out->zero_pages = g.zero_pages;
    stats_out->bytes_received = g.bytes_received;
    stats_out->pages_written_to_files = g.pages_written_to_files;
    switch (g.compression) {
      case livemig::wire::Codec::kZstd: stats_out->compression = LIVEMIG_CODEC_ZSTD; break;
      case livemig::wire::Codec::kLz4: stats_out->compression = LIVEMIG_CODEC_LZ4; break;
      default: stats_out->compression = LIVEMIG_CODEC_NONE; break;
    }
    stats_out->compressed_batches = g.compressed_batches;
    stats_out->decompress_ms = g.decompress_ms;
    stats_out->prealloc_ms = g.prealloc_ms;
    stats_out->prealloc_bytes = g.prealloc_bytes;
    return absl::OkStatus();
  });
}

int livemig_received_verified(const livemig_received* result) {
  return result != nullptr && result->got.verified ? 1 : 0;
}

void livemig_received_free(livemig_received* result) { delete result; }

size_t livemig_received_stats_json(const livemig_received* result, char* buf, size_t buf_size) {
  if (buf != nullptr && buf_size > 0) buf[0] = '\0';
  if (result == nullptr) return 0;
  std::string json;
  // ReceivedJson only allocates: Guard turns std::bad_alloc into 0.
  Guard(nullptr, [&]() -> absl::Status {
    json = livemig::ReceivedJson(result->got);
    return absl::OkStatus();
  });
  return CopyOut(json, buf, buf_size);
}

}  // extern "C"
