#include "tools/cli/manifest.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/migration.pb.h"
#include "tools/cli/json_escape.h"

namespace livemig::cli {

std::string ManifestJson(const ReceivedMigration& got) {
  std::string regions;
  for (size_t i = 0; i < got.regions.size(); ++i) {
    const RegionDescription& info = got.regions[i];
    if (!regions.empty()) regions += ",";
    absl::StrAppend(
        &regions, "{\"index\":", info.index, ",\"guest_addr\":", info.guest_addr,
        ",\"size\":", info.size, ",\"file\":\"", JsonEscape(got.files[i]),
        "\",\"file_offset\":", info.file_offset, ",\"page_hash_root\":\"",
        absl::Hex(got.digests[i], absl::kZeroPad16), "\"}");
  }
  return absl::StrCat("{\"status\":\"completed\",\"verified\":",
                      got.verified ? "true" : "false", ",\"regions\":[", regions,
                      "],\"stats\":{\"raw_pages\":", got.raw_pages,
                      ",\"zero_pages\":", got.zero_pages,
                      ",\"torn_pages\":", got.torn_pages,
                      ",\"bytes_received\":", got.bytes_received,
                      ",\"rounds\":", got.rounds, ",\"channels\":", got.channels,
                      ",\"device_state_bytes\":", got.device_state.size(),
                      ",\"compression\":\"", wire::CodecName(got.compression),
                      "\",\"compressed_batches\":", got.compressed_batches,
                      ",\"decompress_ms\":", absl::StrFormat("%.3f", got.decompress_ms), "}}");
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() &&
                  std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace livemig::cli
