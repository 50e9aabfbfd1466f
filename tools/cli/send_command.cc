#include "tools/cli/send_command.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/dirty_sources/uffd_write_tracker.h"
#include "core/guest_memory.h"
#include "migration/json_escape.h"
#include "migration/protocol.h"
#include "migration/sender.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/compression.h"
#include "tools/cli/connection_flags.h"
#include "tools/cli/exit_status.h"
#include "tools/cli/interrupt.h"
#include "tools/cli/kvm_guest.h"
#include "tools/cli/tracker_flags.h"
#include "tools/cli/units.h"
#include "tools/cli/workload.h"

namespace livemig::cli {
namespace {

constexpr uint64_t kPage = kMigrationPageSize;

void PrintProgress(const MigrationStats& s, bool tty) {
  const RoundStats& r = s.round_stats.back();
  const std::string line = absl::StrFormat(
      "round %u: sent %.0f%% of memory, %s, dirty rate %s, remaining %s, est. downtime %.0f ms%s",
      r.round, s.total ? 100.0 * s.transferred / s.total : 0.0,
      FormatRate(r.bandwidth_bytes_per_s).c_str(),
      FormatRate(s.dirty_pages_rate * kPage).c_str(),
      FormatBytes(static_cast<double>(s.remaining)).c_str(), r.expected_downtime_ms,
      s.cpu_throttle_percentage ? absl::StrCat(", throttle ", s.cpu_throttle_percentage, "%")
                                      .c_str()
                                : "");
  if (tty) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

// The engine's stats JSON plus what the workload did (pages it dirtied and
// for how long), so dirty-rate estimates can be checked against the truth.
std::string SendJson(const MigrationStats& stats, const Workload& workload,
                     const WorkloadSpec& spec, double workload_seconds,
                     const KvmGuest* guest) {
  std::string json = stats.ToJson();
  if (guest != nullptr) {
    json.pop_back();  // The closing brace.
    absl::StrAppend(&json, ",\"vm\":", guest->Json(), "}");
    return json;
  }
  json.pop_back();  // The closing brace.
  const double pages = static_cast<double>(workload.pages_written());
  absl::StrAppend(&json, ",\"workload\":{\"spec\":\"",
                  JsonEscape(WorkloadToString(spec)),
                  "\",\"pages-written\":", workload.pages_written(),
                  ",\"seconds\":", absl::StrFormat("%.3f", workload_seconds),
                  ",\"achieved-bytes-per-s\":",
                  absl::StrFormat("%.0f", workload_seconds > 0
                                              ? pages * kPage / workload_seconds
                                              : 0.0),
                  "}}");
  return json;
}

}  // namespace

int RunSend(const SendFlags& flags) {
  absl::StatusOr<Endpoint> to = EndpointFromFlags("connect", flags.connect, flags.unix_path, flags.fds);
  if (!to.ok()) return Usage(to.status());
  absl::StatusOr<WorkloadSpec> spec = ParseWorkload(flags.workload);
  if (!spec.ok()) {
    return Usage(absl::InvalidArgumentError(absl::StrCat("--workload: ", spec.status().message())));
  }
  SenderOptions options;
  options.destination = *to;
  const bool over_fds = to->kind == Endpoint::Kind::kFd;
  const int channels = flags.channels != 0 ? flags.channels
                       : over_fds          ? static_cast<int>(to->fds.size())
                                           : 2;
  if (channels < 1 || channels > 64) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--channels=", channels, ": expected 1 to 64")));
  }
  if (over_fds && static_cast<size_t>(channels) != to->fds.size()) {
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--channels=", channels, " with --fd=", flags.fds, ": one socket per channel")));
  }
  for (int fd : over_fds ? to->fds : std::vector<int>()) {
    if (absl::Status usable = Connection::FromFd(fd).status(); !usable.ok()) {
      return Usage(absl::InvalidArgumentError(absl::StrCat("--fd: ", usable.message())));
    }
  }
  options.channels = static_cast<uint32_t>(channels);
  if (flags.downtime_ms <= 0) {
    return Usage(absl::InvalidArgumentError("--downtime-ms must be positive"));
  }
  options.downtime_limit = absl::Milliseconds(flags.downtime_ms);
  if (flags.max_rounds < 1) {
    return Usage(absl::InvalidArgumentError("--max-rounds must be at least 1"));
  }
  options.max_rounds = static_cast<uint32_t>(flags.max_rounds);
  {
    const double timeout = flags.timeout_s;
    if (!(timeout >= 0) || !std::isfinite(timeout)) {
      return Usage(absl::InvalidArgumentError(absl::StrCat(
          "--timeout-s=", timeout, ": expected 0 (none) or a finite number of seconds")));
    }
    options.timeout = timeout > 0 ? absl::Seconds(timeout) : absl::InfiniteDuration();
  }
  const std::string& on_timeout = flags.on_timeout;
  if (on_timeout == "force") {
    options.on_limit = SenderOptions::OnLimit::kForce;
  } else if (on_timeout != "cancel") {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--on-timeout=", on_timeout, ": expected cancel or force")));
  }
  options.auto_converge = flags.auto_converge;
  if (flags.stall_rounds < 0) {
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--stall-rounds=", flags.stall_rounds, ": expected 0 or more")));
  }
  options.stall_rounds = static_cast<uint32_t>(flags.stall_rounds);
  {
    const std::string& steps = flags.throttle_steps;
    const std::vector<std::string> parts = absl::StrSplit(steps, ',');
    int values[3] = {0, 0, 0};
    bool ok = parts.size() == 3;
    for (size_t i = 0; ok && i < 3; ++i) {
      ok = absl::SimpleAtoi(parts[i], &values[i]) && values[i] >= 1 && values[i] <= 99;
    }
    if (!ok || values[0] > values[2]) {
      return Usage(absl::InvalidArgumentError(absl::StrCat(
          "--throttle-steps=", steps,
          ": expected INITIAL,INCREMENT,MAX, each 1 to 99, INITIAL <= MAX")));
    }
    options.throttle_initial = values[0];
    options.throttle_increment = values[1];
    options.throttle_max = values[2];
  }
  if (!flags.max_bandwidth.empty()) {
    absl::StatusOr<double> rate = ParseRate(flags.max_bandwidth);
    if (!rate.ok()) {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--max-bandwidth: ", rate.status().message())));
    }
    if (*rate >= 0x1p64) {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--max-bandwidth=", flags.max_bandwidth, ": too large")));
    }
    // 0 is no cap; a fraction of a byte per second is 1, which the check
    // of the lowest rate below refuses (it became no cap at all).
    options.max_bandwidth =
        *rate == 0 ? 0 : std::max<uint64_t>(1, static_cast<uint64_t>(*rate));
  }
  if (!flags.compress.empty()) {
    absl::StatusOr<wire::CompressionSpec> compress = wire::ParseCompressionSpec(flags.compress);
    if (!compress.ok()) {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--compress=", compress.status().message())));
    }
    options.compression = *compress;
  }
  {
    absl::StatusOr<absl::Duration> io_timeout = IoTimeoutFromFlag(flags.io_timeout_s);
    if (!io_timeout.ok()) return Usage(io_timeout.status());
    options.io_timeout = *io_timeout;
  }
  if (!(flags.max_pause_s >= 0) || flags.max_pause_s > 86400) {
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--max-pause-s=", flags.max_pause_s, ": expected 0 (none) to 86400 seconds")));
  }
  options.max_pause =
      flags.max_pause_s > 0 ? absl::Seconds(flags.max_pause_s) : absl::InfiniteDuration();
  if (const uint64_t lowest = LowestMaxBandwidth(options.io_timeout, options.channels);
      options.max_bandwidth > 0 && options.max_bandwidth < lowest) {
    const bool shared = options.channels > 1;
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--max-bandwidth=", flags.max_bandwidth, ": below ", lowest, " bytes/s no page goes out",
        shared ? absl::StrCat(" on each of --channels=", options.channels) : "",
        " within a quarter of --io-timeout-s=", flags.io_timeout_s, "; give more",
        shared ? ", fewer channels" : "", ", or a longer --io-timeout-s")));
  }
  {
    const std::string& verify = flags.verify;
    if (verify == "sent") {
      options.verify = SenderOptions::Verify::kSent;
    } else if (verify == "full") {
      options.verify = SenderOptions::Verify::kFull;
    } else if (verify == "off") {
      options.verify = SenderOptions::Verify::kOff;
    } else {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--verify=", verify, ": expected sent, full or off")));
    }
  }
  // --vm=kvm: a KVM guest brings its own memory and writes it itself.
  std::optional<vmm::KvmVmSpec> kvm_spec;
  if (!flags.vm.empty()) {
    if (!flags.guest_memory.memory.empty() || !flags.guest_memory.regions.empty() ||
        flags.workload != "idle") {
      return Usage(absl::InvalidArgumentError(
          "--vm=kvm brings its own memory (size=) and writer (pattern=): drop --memory, "
          "--region and --workload"));
    }
    absl::StatusOr<vmm::KvmVmSpec> parsed = vmm::ParseKvmVmSpec(flags.vm);
    if (!parsed.ok()) {
      return Usage(parsed.status());  // Its messages begin with "--vm: ".
    }
    kvm_spec = *parsed;
  }
  absl::StatusOr<Tracker> tracker = TrackerFromFlag(flags.tracker, kvm_spec.has_value());
  if (!tracker.ok()) return Usage(tracker.status());
  if (*tracker == Tracker::kUffd) {
    if (absl::Status why = UffdWriteTracker::Probe(); !why.ok()) {
      return Usage(absl::Status(why.code(), absl::StrCat("--tracker=uffd: ", why.message())));
    }
  }
  {
    auto tls = SourceTlsFromFlags(flags.tls_dir, flags.tls_hostname, *to);
    if (!tls.ok()) return Usage(tls.status());
    options.tls = *tls;
  }
  // Before filling (seconds for GiBs): is anybody there (and, with TLS, is
  // it the destination named, signed by our CA)? The probe sends no Hello,
  // so a receiver drops it like any silent stranger.
  bool probed = false;
  auto probe = [&]() -> absl::Status {
    probed = true;
    if (over_fds) return absl::OkStatus();  // Checked above; nothing to dial.
    absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Connect(*to, options.io_timeout);
    if (!conn.ok() || options.tls == nullptr) return conn.status();
    return (*conn)->StartTls(*options.tls, options.io_timeout);
  };
  GuestMemoryFlags memory_flags = flags.guest_memory;
  if (kvm_spec.has_value()) {
    memory_flags.memory = absl::StrCat(kvm_spec->size);
    // The counter pattern starts from zeroed pages (its invariant counts
    // passes); the others write anywhere, so their RAM starts as a real
    // guest's does: holding data, each page costing its bytes to send.
    memory_flags.fill =
        kvm_spec->options.pattern.pattern == vmm::Pattern::kCounter ? "zero" : "random";
  }
  if (const uint64_t declared = DeclaredBytes(memory_flags);
      spec->kind == WorkloadSpec::Kind::kHotset && declared > 0 && spec->hot_bytes > declared) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--workload=", flags.workload, ": its hot set is larger than the guest's ",
                     FormatBytes(static_cast<double>(declared)))));
  }
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory =
      BuildMemory(memory_flags, &options.file_names, probe);
  if (!memory.ok()) {
    // A --memory/--region value that cannot be used is bad usage; no
    // receiver, or a mapping that failed, is not.
    return !probed && (absl::IsInvalidArgument(memory.status()) ||
                       absl::IsNotFound(memory.status()))
               ? Usage(memory.status())
               : Fail(memory.status());
  }

  std::optional<uint64_t> untracked_write;
  if (!flags.test_untracked_write.empty()) {
    absl::StatusOr<uint64_t> addr = ParseSize(flags.test_untracked_write);
    if (!addr.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--test-untracked-write: ", addr.status().message())));
    }
    untracked_write = *addr;
  }
  // Declared before the Sender that borrows them, so they outlive it.
  std::unique_ptr<KvmGuest> guest;
  if (kvm_spec.has_value()) {
    absl::StatusOr<std::unique_ptr<KvmGuest>> booted =
        KvmGuest::Boot(*memory, *kvm_spec, *tracker);
    if (!booted.ok()) {
      return absl::IsFailedPrecondition(booted.status())
                 ? Usage(absl::Status(booted.status().code(),
                                      absl::StrCat("--vm: ", booted.status().message())))
                 : Fail(booted.status());
    }
    guest = std::move(*booted);
    options.dirty_sources = guest->sources();
  }
  std::unique_ptr<UffdWriteTracker> uffd;
  if (*tracker == Tracker::kUffd && guest == nullptr) {
    uffd = std::make_unique<UffdWriteTracker>(*memory);
    options.dirty_sources = {uffd.get()};
  }
  Workload workload(*memory, *spec);
  const bool tty = ::isatty(STDERR_FILENO);
  if (tty) {  // A live line while a round's pages go out; logs get rounds only.
    options.on_progress = [](const MigrationProgress& p) {
      std::fprintf(stderr, "\r\033[Kround %u: %.0f%% of its %s sent, %s", p.round,
                   p.round_pages ? 100.0 * p.round_pages_sent / p.round_pages : 100.0,
                   FormatBytes(static_cast<double>(p.round_pages * kPage)).c_str(),
                   FormatRate(p.round_bytes_per_s).c_str());
      std::fflush(stderr);
    };
  }
  options.on_round = [tty, &memory, untracked_write](const MigrationStats& s) {
    PrintProgress(s, tty);
    // Between rounds the channels are idle: a write behind the tracker, as
    // a VMM writing through a raw pointer would make.
    if (!untracked_write.has_value() || s.rounds != 1) return;
    for (size_t r = 0; r < memory->num_regions(); ++r) {
      const GuestRegion<AtomicBitmap>& region = memory->region(r);
      const uint64_t start = region.start_addr().value;
      if (*untracked_write >= start && *untracked_write - start < region.len()) {
        region.region().as_ptr()[*untracked_write - start] ^= 0xff;
      }
    }
  };
  Sender sender(options);
  SetCancel([&sender] {
    if (!sender.Cancel()) {
      std::fprintf(stderr, "livemig: too late to cancel: the guest was already handed over\n");
    }
  });
  // A signal that came while memory was being built (no Sender to cancel
  // yet) still cancels.
  if (Interrupted()) sender.Cancel();
  VmControl* control = &workload;
  if (guest != nullptr) {
    if (absl::Status started = guest->Start(); !started.ok()) return Fail(started);
    control = &guest->vm();
  } else {
    workload.Start();
  }
  const absl::Time workload_start = absl::Now();
  std::fprintf(stderr,
               "livemig: migrating %s to %s over %d channel(s)%s, %s, tracker %s\n",
               FormatBytes(static_cast<double>(memory->total_size())).c_str(),
               to->ToString().c_str(), channels, options.tls ? " with TLS" : "",
               guest != nullptr ? guest->Describe().c_str()
                                : absl::StrCat("workload ", WorkloadToString(*spec)).c_str(),
               TrackerName(*tracker));
  absl::StatusOr<MigrationStats> stats = sender.Migrate(*memory, *control);
  // On success the workload stopped at Pause(), just before the final round.
  const double workload_seconds = absl::ToDoubleSeconds(absl::Now() - workload_start) -
                                  (stats.ok() ? stats->downtime_ms / 1000 : 0);
  SetCancel(nullptr);
  if (tty) std::fprintf(stderr, "\n");
  if (!stats.ok()) {
    const bool in_doubt = sender.last_stats().status == "in-doubt";
    workload.Stop();
    if (in_doubt) {
      std::fprintf(stderr,
                   "livemig: %s\nlivemig: the workload was NOT resumed; every page it "
                   "dirtied is still marked\n",
                   stats.status().ToString().c_str());
    } else if (sender.last_stats().guest_paused) {
      std::fprintf(stderr, "livemig: migration failed, and the source could not resume: %s\n",
                   stats.status().ToString().c_str());
    } else {
      std::fprintf(stderr,
                   "livemig: migration failed, the source kept running (workload "
                   "resumed): %s\n",
                   stats.status().ToString().c_str());
    }
    if (flags.json) {
      std::printf("%s\n",
                  SendJson(sender.last_stats(), workload, *spec, workload_seconds, guest.get())
                      .c_str());
    }
    return in_doubt ? kExitInDoubt : kExitFailed;
  }
  std::fprintf(stderr,
               "livemig: done: %u rounds, total %.0f ms, downtime %.1f ms, sent %s for %s of "
               "memory (%.2fx), %s, verified: %s\n",
               stats->rounds, stats->total_time_ms, stats->downtime_ms,
               FormatBytes(static_cast<double>(stats->transferred)).c_str(),
               FormatBytes(static_cast<double>(stats->total)).c_str(),
               stats->total ? static_cast<double>(stats->transferred) / stats->total : 0.0,
               stats->converged ? "converged" : "forced switchover",
               options.verify == SenderOptions::Verify::kOff ? "no (--verify=off)"
               : options.verify == SenderOptions::Verify::kFull
                   ? "yes (every page sent, and the paused source re-hashed)"
                   : "yes (every page sent)");
  if (const CompressionStats& z = stats->compression; z.codec != "none") {
    std::fprintf(stderr,
                 "livemig: compression %s:%d: %s of pages sent as %s (ratio %.2f) in %llu "
                 "batches, %llu raw (%llu tried, %llu skipped), %.0f ms in the codec\n",
                 z.codec.c_str(), z.level, FormatBytes(static_cast<double>(z.bytes_in)).c_str(),
                 FormatBytes(static_cast<double>(z.bytes_out)).c_str(), z.ratio(),
                 static_cast<unsigned long long>(z.compressed_batches),
                 static_cast<unsigned long long>(z.incompressible_batches + z.skipped_batches),
                 static_cast<unsigned long long>(z.incompressible_batches),
                 static_cast<unsigned long long>(z.skipped_batches), z.busy_ms);
  }
  const AuditStats& audit = stats->audit;
  if (audit.ran && options.verify == SenderOptions::Verify::kSent) {
    std::fprintf(stderr, "livemig: source audit: %s re-hashed in %.0f ms, %llu untracked pages\n",
                 FormatBytes(static_cast<double>(audit.bytes)).c_str(), audit.ms,
                 static_cast<unsigned long long>(audit.untracked_pages));
  }
  if (flags.json) {
    std::printf("%s\n",
                SendJson(*stats, workload, *spec, workload_seconds, guest.get()).c_str());
  }
  if (audit.untracked_pages > 0) {
    std::string addrs;
    for (uint64_t a : audit.first_addrs) absl::StrAppend(&addrs, addrs.empty() ? "" : ", ", "0x", absl::Hex(a));
    std::fprintf(stderr,
                 "livemig: WARNING: %llu pages were written without being marked dirty "
                 "(guest addresses %s%s): the destination holds older versions of them\n",
                 static_cast<unsigned long long>(audit.untracked_pages), addrs.c_str(),
                 audit.untracked_pages > audit.first_addrs.size() ? ", ..." : "");
    return kExitUntrackedWrites;
  }
  return kExitDone;
}

}  // namespace livemig::cli
