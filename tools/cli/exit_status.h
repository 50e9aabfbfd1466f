// File: tools/cli/exit_status.h
//
// The exit statuses of `livemig`, as its --help promises them, and the two
// ways a command reports the error that ends it:
//
//   0  done
//   1  failed (send: the source kept running, the workload was resumed)
//   2  bad usage: a flag the command cannot use
//   3  send: handover in doubt (the receiver may own the guest; the workload
//      was not resumed)
//   4  send: migrated, but the source audit found pages written without being
//      marked dirty
//
// Thread safety: the functions write one line to stderr each.
#ifndef LIVEMIG_TOOLS_CLI_EXIT_STATUS_H_
#define LIVEMIG_TOOLS_CLI_EXIT_STATUS_H_

#include "absl/status/status.h"

namespace livemig::cli {

inline constexpr int kExitDone = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInDoubt = 3;
inline constexpr int kExitUntrackedWrites = 4;

// Prints "livemig: <status>" to stderr; returns kExitFailed.
int Fail(const absl::Status& status);

// Prints "livemig: <status>" to stderr; returns kExitUsage.
int Usage(const absl::Status& status);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_EXIT_STATUS_H_
