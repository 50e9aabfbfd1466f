// livemig: the command-line pair around the migration engine.
//
//   livemig receive --listen=127.0.0.1:7000 --dir=/var/lib/vm [--once] [--json]
//   livemig send --connect=127.0.0.1:7000 --memory=1GiB --workload=uniform:rate=200MB/s
//
// `send` builds guest memory (anonymous regions, or existing files mapped
// MAP_SHARED at an offset), runs a built-in workload that dirties it through
// the tracked API, and migrates it; `receive` rebuilds every region as a file
// in --dir and writes manifest.json beside them. Run either with --help.
//
// This file holds the flags (defined here so that --help, which lists the
// flags of the file named like the program, shows them), the checks across
// commands and main(); the commands are tools/cli/send_command.h and
// receive_command.h.
#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/cli/exit_status.h"
#include "tools/cli/interrupt.h"
#include "tools/cli/receive_command.h"
#include "tools/cli/send_command.h"

ABSL_FLAG(std::string, listen, "", "receive: HOST:PORT to listen on");
ABSL_FLAG(std::string, unix, "", "send/receive: Unix socket path instead of TCP");
ABSL_FLAG(std::string, fd, "", "send/receive: connected stream sockets inherited from the "
          "parent, N[,N...], one per channel, instead of --connect/--listen/--unix "
          "(receive: one migration, then exit)");
ABSL_FLAG(std::string, dir, "", "receive: directory where regions are rebuilt");
ABSL_FLAG(int32_t, channels, 0, "send: parallel connections (default 2); receive: the most "
          "accepted (default 64)");
ABSL_FLAG(bool, json, false, "print the final result as one JSON object on the last line");
ABSL_FLAG(bool, once, false, "receive: exit after one migration, its outcome as exit status");
ABSL_FLAG(std::string, connect, "", "send: HOST:PORT of the receiver");
ABSL_FLAG(std::string, memory, "", "send: one anonymous region of SIZE at guest address 0");
ABSL_FLAG(std::string, fill, "",
          "send: initial content: random, zero, text or keep (default: random for anonymous "
          "memory; a file= region keeps its file's content)");
ABSL_FLAG(std::string, workload, "idle", "send: idle, uniform:rate=R, hotset:size=S,rate=R, "
          "sequential:rate=R, zipf:s=X,rate=R (add ,threads=N)");
ABSL_FLAG(int32_t, downtime_ms, 300, "send: downtime limit in milliseconds");
ABSL_FLAG(int32_t, max_rounds, 30, "send: round limit");
ABSL_FLAG(double, timeout_s, 600,
          "send: limit in seconds on the pre-copy phase, then --on-timeout applies "
          "(cancel cuts a round still going out; force lets it finish; 0 = none)");
ABSL_FLAG(std::string, on_timeout, "cancel", "send: at the round/time limit: cancel or force");
ABSL_FLAG(bool, auto_converge, false, "send: throttle the workload when it dirties too fast");
ABSL_FLAG(int32_t, stall_rounds, 5, "send: rounds without the dirty volume shrinking before "
          "escalating (a throttle step with --auto-converge, else --on-timeout); 0 = never");
ABSL_FLAG(std::string, throttle_steps, "20,10,99", "send: auto-converge throttle "
          "INITIAL,INCREMENT,MAX in percent");
ABSL_FLAG(std::string, max_bandwidth, "",
          "send: bandwidth cap, e.g. 200MB/s (default none; 0: none)");
ABSL_FLAG(std::string, compress, "none", "send: compress page batches on the channel threads: "
          "none, zstd[:LEVEL] (1..19, default 1) or lz4[:ACCELERATION] (1..65537, default 1); "
          "a batch that does not shrink is sent raw, and a channel meeting incompressible "
          "memory backs off; the receiver must accept the codec (it accepts both)");
ABSL_FLAG(double, io_timeout_s, 30, "deadline for every network read and write, seconds");
ABSL_FLAG(double, session_timeout_s, 86400,
          "receive: the longest one migration may take, seconds (0: none)");
ABSL_FLAG(double, max_pause_s, 60, "send: the longest the guest may stay paused before the "
          "handover, seconds; past it the migration fails and the guest resumes (0 = none)");
ABSL_FLAG(std::string, verify, "sent", "send: end-to-end verification: sent (the destination "
          "holds every page version sent; the source is audited after the commit), full "
          "(also re-hash the paused source before the handover), off");
ABSL_FLAG(bool, durable, false, "receive: flush the rebuilt files to disk before telling the "
          "source they are verified (in the source's downtime); default: flush after the commit");
ABSL_FLAG(bool, prealloc, false, "receive: allocate every region's memory (prefault it, on one "
          "helper thread per core) before the first page is accepted; a destination that cannot "
          "is refused up front (ResourceExhausted, naming the region and file). With --region: "
          "when that memory is made, before a source connects");
ABSL_FLAG(std::string, test_untracked_write, "", "send, testing only: after round 0, change "
          "the byte at this guest address through the raw pointer, without marking it dirty");
ABSL_FLAG(std::string, tls_dir, "", "send/receive: mutual TLS 1.3 on every channel with the "
          "certificates in DIR: ca-cert.pem, and server-cert.pem/server-key.pem (receive) "
          "or client-cert.pem/client-key.pem (send)");
ABSL_FLAG(std::string, tls_hostname, "", "send: the name the receiver's certificate must "
          "carry (default: the host of --connect; required with --unix)");
ABSL_FLAG(std::string, vm, "", "send: run a KVM guest on the migrated memory instead of the "
          "built-in workload: kvm[:vcpus=N,pattern=counter|uniform|hotset,rate=R,size=S,"
          "hot=H,device=D] (rate and device in bytes/s)");
ABSL_FLAG(std::string, resume_vm, "", "receive: after the commit, run the received KVM guest "
          "for DURATION (--resume-vm alone: 1s) and check its own invariant; exit 0 only if "
          "it held");
ABSL_FLAG(std::string, tracker, "", "send: the dirty source beside livemig's tracked API: api "
          "(only API writes), uffd (userfaultfd: every write through the page tables), "
          "kvm-log or kvm-ring (the --vm=kvm guest's writes); default: kvm-log with --vm=kvm, "
          "else api");
ABSL_FLAG(bool, test_hang_after_commit, false, "receive, testing only: after the commit, "
          "hold before the flush until a signal");

namespace livemig {
namespace {

// Whether the flag holds something other than its default (this Abseil
// keeps "specified on the command line" private; giving the default value
// explicitly is harmless).
template <typename T>
bool Given(const absl::Flag<T>& flag) {
  const absl::CommandLineFlag& f = absl::GetFlagReflectionHandle(flag);
  return f.CurrentValue() != f.DefaultValue();
}

// The flags of the other command, if any was given: "--memory is a send
// flag", so nothing given silently means nothing.
absl::Status CheckOnlyFlagsOf(const std::string& command) {
  const std::vector<std::pair<const char*, bool>> send_only = {
      {"connect", Given(FLAGS_connect)},         {"memory", Given(FLAGS_memory)},
      {"fill", Given(FLAGS_fill)},               {"workload", Given(FLAGS_workload)},
      {"downtime-ms", Given(FLAGS_downtime_ms)}, {"max-rounds", Given(FLAGS_max_rounds)},
      {"timeout-s", Given(FLAGS_timeout_s)},     {"on-timeout", Given(FLAGS_on_timeout)},
      {"auto-converge", Given(FLAGS_auto_converge)},
      {"stall-rounds", Given(FLAGS_stall_rounds)},
      {"throttle-steps", Given(FLAGS_throttle_steps)},
      {"max-bandwidth", Given(FLAGS_max_bandwidth)}, {"verify", Given(FLAGS_verify)},
      {"compress", Given(FLAGS_compress)},       {"max-pause-s", Given(FLAGS_max_pause_s)},
      {"tls-hostname", Given(FLAGS_tls_hostname)}, {"tracker", Given(FLAGS_tracker)},
      {"vm", Given(FLAGS_vm)},
      {"test-untracked-write", Given(FLAGS_test_untracked_write)}};
  const std::vector<std::pair<const char*, bool>> receive_only = {
      {"listen", Given(FLAGS_listen)},
      {"dir", Given(FLAGS_dir)},
      {"once", Given(FLAGS_once)},
      {"durable", Given(FLAGS_durable)},
      {"prealloc", Given(FLAGS_prealloc)},
      {"resume-vm", Given(FLAGS_resume_vm)},
      {"session-timeout-s", Given(FLAGS_session_timeout_s)},
      {"test-hang-after-commit", Given(FLAGS_test_hang_after_commit)}};
  const bool receive = command == "receive";
  for (const auto& [name, given] : receive ? send_only : receive_only) {
    if (given) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", name, " is a ", receive ? "send" : "receive", " flag, not a ", command, " one"));
    }
  }
  return absl::OkStatus();
}

// The flags of each command, as given; the commands check them.
cli::ReceiveFlags ReceiveFlagsFromFlags() {
  cli::ReceiveFlags f;
  f.listen = absl::GetFlag(FLAGS_listen);
  f.unix_path = absl::GetFlag(FLAGS_unix);
  f.fds = absl::GetFlag(FLAGS_fd);
  f.dir = absl::GetFlag(FLAGS_dir);
  f.channels = absl::GetFlag(FLAGS_channels);
  f.io_timeout_s = absl::GetFlag(FLAGS_io_timeout_s);
  f.session_timeout_s = absl::GetFlag(FLAGS_session_timeout_s);
  f.json = absl::GetFlag(FLAGS_json);
  f.once = absl::GetFlag(FLAGS_once);
  f.durable = absl::GetFlag(FLAGS_durable);
  f.prealloc = absl::GetFlag(FLAGS_prealloc);
  f.test_hang_after_commit = absl::GetFlag(FLAGS_test_hang_after_commit);
  f.tls_dir = absl::GetFlag(FLAGS_tls_dir);
  f.resume_vm = absl::GetFlag(FLAGS_resume_vm);
  return f;
}

cli::SendFlags SendFlagsFromFlags(const std::vector<std::string>& regions) {
  cli::SendFlags f;
  f.connect = absl::GetFlag(FLAGS_connect);
  f.unix_path = absl::GetFlag(FLAGS_unix);
  f.fds = absl::GetFlag(FLAGS_fd);
  f.guest_memory.regions = regions;
  f.guest_memory.memory = absl::GetFlag(FLAGS_memory);
  f.guest_memory.fill = absl::GetFlag(FLAGS_fill);
  f.workload = absl::GetFlag(FLAGS_workload);
  f.channels = absl::GetFlag(FLAGS_channels);
  f.downtime_ms = absl::GetFlag(FLAGS_downtime_ms);
  f.max_rounds = absl::GetFlag(FLAGS_max_rounds);
  f.timeout_s = absl::GetFlag(FLAGS_timeout_s);
  f.on_timeout = absl::GetFlag(FLAGS_on_timeout);
  f.auto_converge = absl::GetFlag(FLAGS_auto_converge);
  f.stall_rounds = absl::GetFlag(FLAGS_stall_rounds);
  f.throttle_steps = absl::GetFlag(FLAGS_throttle_steps);
  f.max_bandwidth = absl::GetFlag(FLAGS_max_bandwidth);
  f.compress = absl::GetFlag(FLAGS_compress);
  f.io_timeout_s = absl::GetFlag(FLAGS_io_timeout_s);
  f.max_pause_s = absl::GetFlag(FLAGS_max_pause_s);
  f.verify = absl::GetFlag(FLAGS_verify);
  f.json = absl::GetFlag(FLAGS_json);
  f.test_untracked_write = absl::GetFlag(FLAGS_test_untracked_write);
  f.tls_dir = absl::GetFlag(FLAGS_tls_dir);
  f.tls_hostname = absl::GetFlag(FLAGS_tls_hostname);
  f.tracker = absl::GetFlag(FLAGS_tracker);
  f.vm = absl::GetFlag(FLAGS_vm);
  return f;
}

// Splits out --region (repeatable, and its value has commas) and turns
// --dashed-names into the --underscored names Abseil flags use. Any other
// flag given twice is InvalidArgument (Abseil would keep the last one
// silently: --memory=8M --memory=16M migrated 16 MiB).
absl::StatusOr<std::vector<char*>> PrepareArgs(int argc, char** argv,
                                               std::vector<std::string>* regions,
                                               std::vector<std::string>* storage) {
  storage->reserve(argc);
  std::vector<char*> out;
  std::set<std::string> seen;
  bool value_next = false;  // The last flag takes this argument as its value.
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (value_next) {
      value_next = false;
      storage->push_back(arg);
      continue;
    }
    if (i > 0 && arg == "--") {  // Abseil's end of flags: the rest as it is.
      for (; i < argc; ++i) storage->push_back(argv[i]);
      break;
    }
    if (i > 0 && arg.rfind("--region", 0) == 0) {
      if (arg.rfind("--region=", 0) == 0) {
        regions->push_back(arg.substr(9));
        continue;
      }
      if (arg == "--region") {
        if (i + 1 == argc) return absl::InvalidArgumentError("--region needs a value");
        regions->push_back(argv[++i]);
        continue;
      }
    }
    if (i > 0 && arg == "--resume-vm") arg = "--resume-vm=1s";  // Its value is optional.
    if (i > 0 && arg.size() > 1 && arg[0] == '-') {
      // Abseil takes -name and --name, dashes or underscores, and --noname
      // for a boolean: one flag, however it is spelled.
      const size_t dashes = arg.rfind("--", 0) == 0 ? 2 : 1;
      const size_t eq = arg.find('=');
      for (size_t j = dashes; j < std::min(eq, arg.size()); ++j) {
        if (arg[j] == '-') arg[j] = '_';
      }
      std::string name = arg.substr(dashes, eq == std::string::npos ? eq : eq - dashes);
      if (absl::FindCommandLineFlag(name) == nullptr && name.rfind("no", 0) == 0 &&
          eq == std::string::npos) {
        // --noname, without a value, turns a boolean off; nothing else.
        const absl::CommandLineFlag* positive = absl::FindCommandLineFlag(name.substr(2));
        if (positive != nullptr && positive->IsOfType<bool>()) name = name.substr(2);
      }
      std::string dashed = name;
      std::replace(dashed.begin(), dashed.end(), '_', '-');
      if (!seen.insert(name).second) {
        return absl::InvalidArgumentError(absl::StrCat("--", dashed, " is given twice"));
      }
      if (eq == arg.size() - 1) {
        // An unset shell variable, say: "--tls-dir=" turned TLS off.
        return absl::InvalidArgumentError(absl::StrCat("--", dashed, "= needs a value"));
      }
      // Checked here so that bad usage exits 2 (Abseil's own parse exits 1).
      // Abseil's own flags (--help, --version, --flagfile ...) it parses itself.
      static const std::set<std::string> kAbseils = {
          "help", "helpfull", "helpshort", "helppackage", "helpon", "helpmatch", "version",
          "only_check_args", "flagfile", "fromenv", "tryfromenv", "undefok"};
      absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      if (kAbseils.count(name) != 0) {
        // As given.
      } else if (flag == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", dashed, " is not a livemig flag (see --help)"));
      } else if (eq != std::string::npos) {
        std::string error;
        if (!flag->ParseFrom(arg.substr(eq + 1), &error)) {
          return absl::InvalidArgumentError(
              absl::StrCat("--", dashed, "=", arg.substr(eq + 1), ": ", error));
        }
      } else if (!flag->IsOfType<bool>()) {
        value_next = true;  // "--name value".
      }
    }
    storage->push_back(arg);
  }
  for (std::string& s : *storage) out.push_back(s.data());
  return out;
}

}  // namespace
}  // namespace livemig

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "live migration of VM memory.\n\n"
      "  livemig receive --listen=HOST:PORT|--unix=PATH|--fd=N[,N...] --dir=DIR [--once] [--json]\n"
      "  livemig send --connect=HOST:PORT|--unix=PATH|--fd=N[,N...] (--memory=SIZE | "
      "--region=gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]...)\n"
      "       [--fill=random|zero|text|keep] [--workload=SPEC] [--channels=N]\n"
      "       [--downtime-ms=300] [--max-rounds=30] [--timeout-s=600 (0: none)] "
      "[--on-timeout=cancel|force]\n"
      "       [--auto-converge] [--throttle-steps=20,10,99] [--stall-rounds=5]\n"
      "       [--max-bandwidth=RATE] [--max-pause-s=60 (0: none)] [--verify=sent|full|off]\n"
      "       [--tracker=api|uffd] [--json]\n"
      "       [--compress=none|zstd[:LEVEL]|lz4[:ACCELERATION]]\n"
      "  livemig send --vm=kvm[:vcpus=N,pattern=counter|uniform|hotset,rate=R,size=S]\n"
      "       [--tracker=kvm-log|kvm-ring|uffd|api] ...\n"
      "  livemig receive ... [--durable] [--prealloc] [--resume-vm[=DURATION]]\n"
      "       [--region=gpa=ADDR,size=SIZE...]  the destination's memory, made (with\n"
      "       --prealloc: populated) before a source connects, as a VMM's at start-up\n"
      "  both: [--tls-dir=DIR] (send: [--tls-hostname=NAME]) for mutual TLS 1.3\n"
      "Sizes: 4096, 0x1000, 64K, 1GiB (binary). Rates: 200MB/s (decimal), 64MiB/s.\n"
      "Exit status: 0 done; 1 failed (send: the workload was resumed); 2 bad usage;\n"
      "3 send: handover in doubt (the receiver may own the guest; not resumed);\n"
      "4 send: migrated, but the source audit found pages written without being marked\n"
      "  dirty (named on stderr): the destination holds older versions of them.");
  std::vector<std::string> regions, storage;
  absl::StatusOr<std::vector<char*>> args = livemig::PrepareArgs(argc, argv, &regions, &storage);
  if (!args.ok()) {
    std::fprintf(stderr, "livemig: %s\n", std::string(args.status().message()).c_str());
    return livemig::cli::kExitUsage;
  }
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args->size()), args->data());
  if (positional.size() != 2 ||
      (std::string(positional[1]) != "send" && std::string(positional[1]) != "receive")) {
    std::fprintf(stderr, "livemig: expected one command, send or receive (see --help)\n");
    return livemig::cli::kExitUsage;
  }
  const std::string command = positional[1];
  if (absl::Status only = livemig::CheckOnlyFlagsOf(command); !only.ok()) {
    std::fprintf(stderr, "livemig: %s\n", only.ToString().c_str());
    return livemig::cli::kExitUsage;
  }
  livemig::cli::StartSignalThread();
  if (command == "receive") {
    livemig::cli::ReceiveFlags flags = livemig::ReceiveFlagsFromFlags();
    flags.regions = regions;
    return livemig::cli::RunReceive(flags);
  }
  return livemig::cli::RunSend(livemig::SendFlagsFromFlags(regions));
}
