#include "migration/received_json.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migration/json_escape.h"
#include "migration/wire/compression.h"

namespace livemig {

std::string ReceivedJson(const ReceivedMigration& got) {
  std::string regions;
  for (size_t i = 0; i < got.regions.size(); ++i) {
    const RegionDescription& info = got.regions[i];
    if (!regions.empty()) regions += ",";
    absl::StrAppend(&regions, "{\"index\":", info.index, ",\"guest_addr\":", info.guest_addr,
                    ",\"size\":", info.size, ",\"file\":\"",
                    i < got.files.size() ? JsonEscape(got.files[i]) : "",
                    "\",\"file_offset\":", info.file_offset, ",\"page_hash_root\":\"",
                    absl::Hex(i < got.digests.size() ? got.digests[i] : 0, absl::kZeroPad16),
                    "\"}");
  }
  return absl::StrCat(
      "{\"status\":\"completed\",\"verified\":", got.verified ? "true" : "false", ",\"regions\":[",
      regions, "],\"stats\":{\"raw_pages\":", got.raw_pages, ",\"zero_pages\":", got.zero_pages,
      ",\"torn_pages\":", got.torn_pages, ",\"bytes_received\":", got.bytes_received,
      ",\"rounds\":", got.rounds, ",\"channels\":", got.channels,
      ",\"device_state_bytes\":", got.device_state.size(), ",\"compression\":\"",
      wire::CodecName(got.compression), "\",\"compressed_batches\":", got.compressed_batches,
      ",\"decompress_ms\":", absl::StrFormat("%.3f", got.decompress_ms), "}}");
}

}  // namespace livemig
