// File: tools/cli/receive_command.h
//
// `livemig receive`: listens on --listen or --unix and rebuilds every
// incoming migration's regions as files under --dir (file-backed regions at
// their source names, anonymous ones as region-<index>.mem). After each
// completed migration, once its files are flushed, it writes manifest.json
// (manifest.h) beside them and prints what it received to stderr (and the
// manifest on stdout with --json); before each migration it removes the
// previous manifest. A failed migration removes its partial files and is
// reported on stderr (with --json also as {"status":"failed",...} on
// stdout); the receiver then waits for the next source, unless --once.
// With --prealloc every region is made resident before the first page is
// accepted; --json then adds "prealloc":{"ms":..,"bytes":..} to the line
// (not to manifest.json).
//
// Exit status (exit_status.h): 2 for a flag it cannot use, including a --dir
// it cannot create or write; 1 when it cannot listen or publish the
// manifest, when a signal stops it (interrupt.h: SIGINT/SIGTERM cancel the
// migration or the wait for one), or, with --once, when the migration
// failed; 0 after one completed migration with --once. Without --once it
// runs until a signal.
//
// Thread safety: one RunReceive per process (it owns the interrupt.h
// callback while it runs).
#ifndef LIVEMIG_TOOLS_CLI_RECEIVE_COMMAND_H_
#define LIVEMIG_TOOLS_CLI_RECEIVE_COMMAND_H_

#include <cstdint>
#include <string>
#include <vector>

namespace livemig::cli {

// The values of the receive flags, as given (main() reads them; see --help
// for their meaning). No field is validated before RunReceive.
struct ReceiveFlags {
  std::string listen;      // --listen
  std::string unix_path;   // --unix
  std::string fds;         // --fd: "N[,N...]" (one migration, then exit).
  std::string dir;         // --dir
  int32_t channels = 0;    // --channels: the most accepted; 0 means 64.
  double io_timeout_s = 0; // --io-timeout-s
  double session_timeout_s = 0;  // --session-timeout-s: 0 for none.
  bool json = false;       // --json
  bool once = false;       // --once
  bool durable = false;    // --durable
  bool prealloc = false;   // --prealloc
  // --region (repeatable): the destination's own memory, made before a
  // source connects (prepared_memory.h); empty: made when the table comes.
  std::vector<std::string> regions;
  std::string tls_dir;     // --tls-dir; empty: plaintext.
  std::string resume_vm;   // --resume-vm: a duration ("1s"); empty: no.
  bool test_hang_after_commit = false;  // --test-hang-after-commit: until a signal
};

// Runs the command; returns its exit status.
int RunReceive(const ReceiveFlags& flags);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_RECEIVE_COMMAND_H_
