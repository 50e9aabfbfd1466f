#include "migration/stats.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace livemig {
namespace {

std::string Num(double v) { return absl::StrFormat("%.3f", v); }

}  // namespace

std::string MigrationStats::ToJson() const {
  std::string rounds_json;
  for (const RoundStats& r : round_stats) {
    if (!rounds_json.empty()) rounds_json += ",";
    absl::StrAppend(&rounds_json, "{\"round\":", r.round,
                    ",\"dirty-pages\":", r.dirty_pages,
                    ",\"zero-pages\":", r.zero_pages, ",\"bytes\":", r.bytes,
                    ",\"duration-ms\":", Num(r.duration_ms),
                    ",\"bandwidth-bytes-per-s\":", Num(r.bandwidth_bytes_per_s),
                    ",\"dirtied-during-round\":", r.dirtied_during_round,
                    ",\"expected-downtime-ms\":", Num(r.expected_downtime_ms),
                    ",\"throttle-percent\":", r.throttle_percent,
                    ",\"final\":", r.final ? "true" : "false", "}");
  }
  std::string addrs;
  for (uint64_t a : audit.first_addrs) {
    if (!addrs.empty()) addrs += ",";
    absl::StrAppend(&addrs, "\"0x", absl::Hex(a), "\"");
  }
  return absl::StrCat(
      "{\"status\":\"", status, "\",\"total-time\":", Num(total_time_ms),
      ",\"downtime\":", Num(downtime_ms), ",\"setup-time\":", Num(setup_time_ms),
      ",\"expected-downtime\":", Num(expected_downtime_ms),
      ",\"ram\":{\"transferred\":", transferred, ",\"remaining\":", remaining,
      ",\"total\":", total, ",\"duplicate\":", duplicate, ",\"normal\":", normal,
      ",\"normal-bytes\":", normal_bytes,
      ",\"dirty-pages-rate\":", Num(dirty_pages_rate), ",\"mbps\":", Num(mbps),
      ",\"dirty-sync-count\":", dirty_sync_count,
      ",\"pages-per-second\":", Num(pages_per_second), "}",
      ",\"cpu-throttle-percentage\":", cpu_throttle_percentage,
      ",\"rounds\":", rounds, ",\"channels\":", channels,
      ",\"converged\":", converged ? "true" : "false",
      ",\"verify\":\"", verify, "\"",
      ",\"audit\":{\"ran\":", audit.ran ? "true" : "false",
      ",\"ms\":", Num(audit.ms), ",\"bytes\":", audit.bytes,
      ",\"ms-per-gib\":",
      Num(audit.bytes > 0 ? audit.ms / (static_cast<double>(audit.bytes) / (1 << 30)) : 0),
      ",\"untracked-pages\":", audit.untracked_pages,
      ",\"first-addrs\":[", addrs, "]}",
      ",\"downtime-breakdown\":{\"final-round-ms\":",
      Num(downtime_breakdown.final_round_ms),
      ",\"device-state-ms\":", Num(downtime_breakdown.device_state_ms),
      ",\"verify-ms\":", Num(downtime_breakdown.verify_ms),
      ",\"completion-ms\":", Num(downtime_breakdown.completion_ms),
      ",\"expected-ms\":", Num(downtime_breakdown.expected_ms), "}",
      ",\"compression\":{\"codec\":\"", compression.codec, "\",\"level\":", compression.level,
      ",\"pages\":", compression.bytes_in / 4096,
      ",\"compressed-batches\":", compression.compressed_batches,
      ",\"incompressible-batches\":", compression.incompressible_batches,
      ",\"skipped-batches\":", compression.skipped_batches,
      ",\"bytes-in\":", compression.bytes_in, ",\"compressed-size\":", compression.bytes_out,
      ",\"compression-rate\":", Num(compression.ratio()),
      ",\"busy-ms\":", Num(compression.busy_ms),
      ",\"busy-rate\":", Num(total_time_ms > 0 ? compression.busy_ms / total_time_ms : 0), "}",
      ",\"round-stats\":[", rounds_json, "]}");
}

}  // namespace livemig
