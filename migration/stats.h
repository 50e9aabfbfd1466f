// File: migration/stats.h
//
// MigrationStats: what a migration measured, with at least the RAM fields of
// QEMU's `query-migrate` (same names in ToJson()), one record per round and a
// downtime breakdown. A plain value; not synchronized.
#ifndef LIVEMIG_MIGRATION_STATS_H_
#define LIVEMIG_MIGRATION_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace livemig {

struct RoundStats {
  uint32_t round = 0;
  uint64_t dirty_pages = 0;       // Pages this round sent (harvested).
  uint64_t zero_pages = 0;
  uint64_t bytes = 0;             // Bytes written to the sockets.
  double duration_ms = 0;
  double bandwidth_bytes_per_s = 0;
  uint64_t dirtied_during_round = 0;  // Pages found dirty after it.
  double expected_downtime_ms = 0;    // Estimate made after the round.
  int throttle_percent = 0;
  bool final = false;  // The switchover round, sent with the guest paused.
};

// Where a live round stands, between round ends (SenderOptions::on_progress):
// enough for a progress bar. A plain value.
struct MigrationProgress {
  uint32_t round = 0;
  uint64_t round_pages = 0;       // Pages this round sends (harvested).
  uint64_t round_pages_sent = 0;  // Of those, handed to the sockets so far.
  uint64_t transferred = 0;       // Bytes written so far, all rounds.
  uint64_t total = 0;             // Guest memory size in bytes.
  double elapsed_ms = 0;          // Since Migrate() began.
  double round_bytes_per_s = 0;   // This round's rate so far.
};

// Where the pause (Pause() to the destination's commit confirmation) went.
struct DowntimeBreakdown {
  double final_round_ms = 0;   // Final harvest + sending it.
  double device_state_ms = 0;  // DeviceState() + sending it.
  double verify_ms = 0;        // verify=full: re-hashing the paused source memory.
  // Digests, completion frame, the destination's check (and flush when it is
  // durable), the handover.
  double completion_ms = 0;
  // What the switchover rule expected for the parts above, before Pause().
  double expected_ms = 0;
};

// The source audit (verify=sent, after the commit; verify=full, before the
// handover): pages whose memory differs from the last version sent, i.e.
// written without being marked dirty.
struct AuditStats {
  bool ran = false;
  double ms = 0;                       // Re-hashing all source memory.
  uint64_t bytes = 0;                  // Memory re-hashed.
  uint64_t untracked_pages = 0;
  std::vector<uint64_t> first_addrs;   // Guest addresses of the first few.
};

// Page-batch compression (SenderOptions::compression), over all channels.
// ToJson(): "compression":{"codec", "level", "pages" (sent compressed),
// "compressed-batches", "incompressible-batches" (tried, sent raw),
// "skipped-batches" (sent raw untried: back-off), "bytes-in",
// "compressed-size", "compression-rate" (bytes-in / compressed-size),
// "busy-ms" (time in the codec), "busy-rate" (busy-ms / total-time)}.
struct CompressionStats {
  std::string codec = "none";  // none, zstd or lz4
  int level = 0;               // zstd level, lz4 acceleration (0: none)
  uint64_t compressed_batches = 0;
  uint64_t incompressible_batches = 0;
  uint64_t skipped_batches = 0;
  uint64_t bytes_in = 0;   // Page bytes of the batches sent compressed.
  uint64_t bytes_out = 0;  // Their compressed size.
  double busy_ms = 0;      // Summed over the channels' threads.
  // bytes_in / bytes_out; 0 when nothing was compressed.
  double ratio() const {
    return bytes_out > 0 ? static_cast<double>(bytes_in) / static_cast<double>(bytes_out) : 0;
  }
};

struct MigrationStats {
  // "completed", "failed", "cancelled", or "in-doubt" (the handover was sent
  // but never confirmed: see Sender).
  std::string status = "none";
  // A failed attempt left the guest paused: in doubt, or VmControl::Resume()
  // failed (the error says why). Otherwise a failed attempt resumed it.
  bool guest_paused = false;
  double total_time_ms = 0;      // total-time
  double downtime_ms = 0;        // downtime (Pause() to the commit confirmation)
  double setup_time_ms = 0;      // setup-time (connect, hello, region table)
  double expected_downtime_ms = 0;  // expected-downtime (last estimate)
  uint64_t transferred = 0;      // transferred: bytes written, all frames
  uint64_t remaining = 0;        // remaining: dirty bytes left
  uint64_t total = 0;            // total: guest memory size in bytes
  uint64_t duplicate = 0;        // duplicate: zero pages (sent as runs)
  uint64_t normal = 0;           // normal: pages sent with their bytes
  uint64_t normal_bytes = 0;     // normal-bytes
  double dirty_pages_rate = 0;   // dirty-pages-rate: pages/s, last round
  double mbps = 0;               // mbps: megabits/s over the whole run
  uint64_t dirty_sync_count = 0; // dirty-sync-count: harvests
  double pages_per_second = 0;   // pages-per-second, last round
  int cpu_throttle_percentage = 0;  // cpu-throttle-percentage, final
  uint32_t rounds = 0;
  uint32_t channels = 0;
  bool converged = false;        // false: switched over by force
  std::string verify = "sent";   // SenderOptions::verify: sent, full or off
  AuditStats audit;
  std::vector<RoundStats> round_stats;
  DowntimeBreakdown downtime_breakdown;
  CompressionStats compression;

  // One JSON object on one line.
  std::string ToJson() const;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_STATS_H_
