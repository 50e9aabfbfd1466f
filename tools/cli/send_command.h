// File: tools/cli/send_command.h
//
// `livemig send`: builds guest memory from --memory/--region/--fill
// (guest_memory_flags.h), starts the built-in --workload on it (workload.h),
// and migrates it to the receiver at --connect or --unix with the Sender,
// printing one progress line per round to stderr (rewritten in place on a
// terminal) and a summary at the end; with --json, the final stats as one
// JSON object on stdout, whether the migration succeeded or not.
//
// Every flag is checked, and the receiver probed with a bare connection,
// before memory is filled (seconds for GiBs). SIGINT/SIGTERM (interrupt.h)
// cancel the migration, also while memory is being built.
//
// Exit status (exit_status.h):
//   2  a flag it cannot use (including a --region file that does not exist),
//      found before anything was sent;
//   1  the migration failed: no receiver, a mapping that failed, an error
//      or cancellation mid-migration (the workload was resumed), or a bad
//      --test-untracked-write (testing only, checked after the probe);
//   3  the handover is in doubt: the receiver may own the guest, so the
//      workload was stopped, not resumed, and every page it dirtied is still
//      marked;
//   4  migrated, but the source audit found pages written without being
//      marked dirty (named on stderr): the destination holds older versions;
//   0  done.
//
// Thread safety: one RunSend per process (it owns the interrupt.h callback
// while it runs).
#ifndef LIVEMIG_TOOLS_CLI_SEND_COMMAND_H_
#define LIVEMIG_TOOLS_CLI_SEND_COMMAND_H_

#include <cstdint>
#include <string>

#include "tools/cli/guest_memory_flags.h"

namespace livemig::cli {

// The values of the send flags, as given (main() reads them; see --help for
// their meaning). No field is validated before RunSend.
struct SendFlags {
  std::string connect;              // --connect
  std::string unix_path;            // --unix
  std::string fds;                  // --fd: "N[,N...]"; empty: none.
  GuestMemoryFlags guest_memory;    // --memory, --region..., --fill
  std::string workload;             // --workload
  int32_t channels = 0;             // --channels; 0 means 2.
  int32_t downtime_ms = 0;          // --downtime-ms
  int32_t max_rounds = 0;           // --max-rounds
  double timeout_s = 600;           // --timeout-s; 0 means none.
  std::string on_timeout;           // --on-timeout
  bool auto_converge = false;       // --auto-converge
  int32_t stall_rounds = 0;         // --stall-rounds
  std::string throttle_steps;       // --throttle-steps
  std::string max_bandwidth;        // --max-bandwidth; empty: none.
  std::string compress;             // --compress; empty or "none": none.
  double io_timeout_s = 0;          // --io-timeout-s
  double max_pause_s = 60;          // --max-pause-s; 0 means none.
  std::string verify;               // --verify
  bool json = false;                // --json
  std::string vm;                   // --vm; empty: the built-in workload.
  std::string tracker;              // --tracker; empty: the default.
  std::string tls_dir;              // --tls-dir; empty: plaintext.
  std::string tls_hostname;         // --tls-hostname; empty: --connect's host.
  std::string test_untracked_write; // --test-untracked-write; empty: none.
};

// Runs the command; returns its exit status.
int RunSend(const SendFlags& flags);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_SEND_COMMAND_H_
