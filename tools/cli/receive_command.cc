#include "tools/cli/receive_command.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/status_macros.h"
#include "migration/json_escape.h"
#include "migration/protocol.h"
#include "migration/received_json.h"
#include "migration/receiver.h"
#include "migration/transport/endpoint.h"
#include "tools/cli/connection_flags.h"
#include "tools/cli/exit_status.h"
#include "tools/cli/interrupt.h"
#include "tools/cli/manifest.h"
#include "tools/cli/prepared_memory.h"
#include "tools/cli/units.h"
#include "tools/vmm/resume.h"

namespace livemig::cli {
namespace {

// --resume-vm: runs the received KVM guest and checks its invariant. The
// guest needs only to continue (one more page of progress), however fast
// the machine is; `run_for` is how long it runs at least.
struct Resumed {
  bool ok = false;
  std::string json;  // The "resume" object.
};
Resumed ResumeReceivedVm(const ReceivedMigration& got, absl::Duration run_for) {
  vmm::ResumeOptions options;
  options.run_for = run_for;
  options.min_progress = 1;
  absl::StatusOr<vmm::ResumeResult> result =
      vmm::ResumeAndCheck(got.memory, got.device_state, options);
  Resumed out;
  if (!result.ok()) {
    std::fprintf(stderr, "livemig: --resume-vm: cannot resume the guest: %s\n",
                 result.status().ToString().c_str());
    out.json = absl::StrCat("{\"invariant\":false,\"error\":\"",
                            JsonEscape(result.status().ToString()), "\"}");
    return out;
  }
  std::fprintf(stderr, "livemig: resumed the guest: %s\n", vmm::DescribeResume(*result).c_str());
  out.ok = result->invariant_held;
  out.json = absl::StrCat("{\"ran-ms\":", result->ran_ms,
                          ",\"counter-at-pause\":", result->counter_at_pause,
                          ",\"counter-after\":", result->counter_after,
                          ",\"invariant\":", result->invariant_held ? "true" : "false",
                          result->detail.empty() ? "" : ",\"detail\":\"",
                          result->detail.empty() ? "" : JsonEscape(result->detail),
                          result->detail.empty() ? "" : "\"", "}");
  return out;
}

}  // namespace

int RunReceive(const ReceiveFlags& flags) {
  absl::StatusOr<Endpoint> at = EndpointFromFlags("listen", flags.listen, flags.unix_path, flags.fds);
  if (!at.ok()) return Usage(at.status());
  const std::string& dir = flags.dir;
  if (dir.empty()) return Usage(absl::InvalidArgumentError("--dir=DIR is required"));
  const int max_channels = flags.channels;
  if (max_channels < 0 || max_channels > 64) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--channels=", max_channels, ": expected 1 to 64 (0: 64)")));
  }
  absl::StatusOr<absl::Duration> io_timeout = IoTimeoutFromFlag(flags.io_timeout_s);
  if (!io_timeout.ok()) return Usage(io_timeout.status());
  if (!(flags.session_timeout_s >= 0) || flags.session_timeout_s > 365 * 86400.0) {
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--session-timeout-s=", flags.session_timeout_s, ": expected 0 (none) to ",
        365 * 86400, " seconds")));
  }
  std::optional<absl::Duration> resume_for;
  if (!flags.resume_vm.empty()) {
    absl::Duration d;
    if (!absl::ParseDuration(flags.resume_vm, &d) || d <= absl::ZeroDuration() ||
        d == absl::InfiniteDuration()) {
      return Usage(absl::InvalidArgumentError(absl::StrCat(
          "--resume-vm=", flags.resume_vm, ": expected a duration above 0, e.g. 1s or 500ms")));
    }
    resume_for = d;
  }
  std::vector<DeclaredRegion> declared;
  for (const std::string& text : flags.regions) {
    absl::StatusOr<DeclaredRegion> region = ParseDeclaredRegion(text);
    if (!region.ok()) return Usage(region.status());
    declared.push_back(*region);
  }
  if (absl::Status fits = CheckDeclaredRegions(declared); !fits.ok()) return Usage(fits);
  if (!declared.empty() && flags.durable) {
    // --durable flushes before VERIFIED, in the source's pause; memory the
    // receiver did not make (the VMM's, here the declared files) is not
    // flushed by it, so the promise would not hold.
    return Usage(absl::InvalidArgumentError(
        "--durable cannot be combined with --region: the receiver flushes only the memory "
        "it makes itself"));
  }
  absl::StatusOr<std::shared_ptr<const TlsContext>> tls = DestinationTlsFromFlags(flags.tls_dir);
  if (!tls.ok()) return Usage(tls.status());
  // Made only once every flag is right, and removed again (if this made it
  // and it is still empty) when listening fails: bad usage leaves nothing.
  std::error_code ec;
  const bool made_dir = std::filesystem::create_directories(dir, ec);
  if (ec) return Usage(absl::InvalidArgumentError(absl::StrCat("--dir=", dir, ": ", ec.message())));
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--dir=", dir, ": not writable (", std::strerror(errno), ")")));
  }
  ReceiverOptions options;
  options.tls = *tls;
  options.root_dir = dir;
  // A source that keeps sending just within each io timeout (empty rounds,
  // say) cannot hold this receiver, and the sources it turns away as busy,
  // for ever.
  if (flags.session_timeout_s > 0) options.session_timeout = absl::Seconds(flags.session_timeout_s);
  options.max_channels = max_channels > 0 ? static_cast<uint32_t>(max_channels) : 64;
  options.io_timeout = *io_timeout;
  options.anonymous_regions_as_files = true;
  // What this command writes beside the regions: never a region's name.
  options.reserved_paths = {"manifest.json", "manifest.json.tmp"};
  options.durable = flags.durable;
  // The manifest says "these files are complete and on disk": it goes just
  // before the next migration renames its files over them (durably so with
  // --durable), and comes back only after ReceiveOne() returned, i.e. after
  // the flush. A migration that fails before its commit leaves both (unless
  // removing it failed half-way, the fsync: then the manifest is gone).
  const std::string manifest_path = dir + "/manifest.json";
  // The current migration's prepared memory takes its names at the commit
  // too, before the source is told (set before each ReceiveOne()).
  std::function<absl::Status()> commit_prepared;
  // The manifest on disk, to put back if the prepared memory cannot take
  // its names (the earlier migration's files are then given back whole).
  std::string last_manifest;
  {
    std::ifstream in(manifest_path);
    if (in) last_manifest.assign(std::istreambuf_iterator<char>(in), {});
  }
  // The files the manifest on disk lists: once a migration has completed,
  // those it does not use are removed (manifest.h, RemoveUnlisted).
  std::vector<std::string> last_files;
  if (!last_manifest.empty()) {
    absl::StatusOr<std::vector<std::string>> listed = ManifestFiles(last_manifest);
    if (listed.ok()) {
      last_files = *std::move(listed);
    } else {
      std::fprintf(stderr, "livemig: %s: %s; its files are left as they are\n",
                   manifest_path.c_str(), std::string(listed.status().message()).c_str());
    }
  }
  options.before_commit = [&manifest_path, &dir, &commit_prepared, &last_manifest,
                           durable = flags.durable] {
    LIVEMIG_RETURN_IF_ERROR(RemoveFile(manifest_path, dir, durable));
    absl::Status committed = commit_prepared ? commit_prepared() : absl::OkStatus();
    if (!committed.ok() && !last_manifest.empty()) {
      (void)WriteFileAtomically(manifest_path, last_manifest);
    }
    return committed;
  };
  // Declared memory is populated when it is made, before any source
  // connects; the receiver's own prealloc is for the memory it makes.
  options.prealloc = flags.prealloc && declared.empty();
  // The current migration's prepared memory (set before each ReceiveOne(),
  // which calls it on its own thread while this one waits).
  std::function<absl::StatusOr<ProvidedMemory>(const RegionDescription&)> lend;
  if (!declared.empty()) {
    options.region_memory = [&lend](const RegionDescription& r) { return lend(r); };
  }
  if (flags.test_hang_after_commit) {
    options.test_on_step = [](const char* step) {
      if (std::string(step) != "committed") return;
      std::fprintf(stderr, "livemig: committed; holding before the flush (testing)\n");
      while (!Interrupted()) absl::SleepFor(absl::Milliseconds(10));
    };
  }
  absl::StatusOr<std::unique_ptr<Receiver>> receiver = Receiver::Listen(*at, options);
  if (!receiver.ok()) {
    if (made_dir) std::filesystem::remove(dir, ec);  // Only if still empty.
    // A descriptor that is not a connected socket is bad usage, like a bad path.
    if (at->kind == Endpoint::Kind::kFd && absl::IsInvalidArgument(receiver.status())) {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--fd: ", receiver.status().message())));
    }
    return Fail(receiver.status());
  }
  Receiver* r = receiver->get();
  SetCancel([r] { r->Cancel(); });
  if (Interrupted()) r->Cancel();  // A signal from before SetCancel.
  std::fprintf(stderr, "livemig: listening on %s, rebuilding into %s\n",
               (*receiver)->endpoint().ToString().c_str(), dir.c_str());
  while (true) {
    // The next migration's memory, when declared: made (and populated)
    // before ReceiveOne() accepts its source, while a source that already
    // connected waits in the listen backlog.
    commit_prepared = nullptr;  // The last one's memory is gone.
    absl::StatusOr<PreparedMemory> prepared =
        PreparedMemory::Make(dir, declared, flags.prealloc);
    if (!prepared.ok()) return Fail(prepared.status());
    if (!prepared->empty()) {
      lend = prepared->Provider();
      commit_prepared = [&prepared] { return prepared->Commit(); };
      if (flags.prealloc) {
        std::fprintf(stderr, "livemig: prepared %s of destination memory in %.0f ms\n",
                     FormatBytes(static_cast<double>(prepared->populated_bytes())).c_str(),
                     prepared->populate_ms());
      }
    }
    absl::StatusOr<ReceivedMigration> got = r->ReceiveOne();
    if (!got.ok() && absl::IsCancelled(got.status()) &&
        got.status().message() == kCancelledWhileWaiting) {
      std::fprintf(stderr, "livemig: stopped while waiting for a source\n");
      return kExitFailed;
    }
    if (!got.ok()) {
      std::fprintf(stderr, "livemig: migration failed: %s (partial files removed)\n",
                   got.status().ToString().c_str());
      if (flags.json) {
        std::printf("{\"status\":\"failed\",\"verified\":false,\"error\":\"%s\"}\n",
                    JsonEscape(got.status().ToString()).c_str());
      }
      if (flags.once || at->kind == Endpoint::Kind::kFd || Interrupted()) return kExitFailed;
      continue;
    }
    if (!prepared->empty()) {
      absl::StatusOr<std::vector<std::string>> files = prepared->Flush(got->files);
      if (!files.ok()) return Fail(files.status());
      got->files = *std::move(files);
    }
    const std::string manifest = ReceivedJson(*got);
    absl::Status written = WriteFileAtomically(manifest_path, manifest);
    if (!written.ok()) return Fail(written);
    last_manifest = manifest;
    const Unlisted unlisted = RemoveUnlisted(dir, last_files, got->files);
    for (const std::string& f : unlisted.removed) {
      std::fprintf(stderr,
                   "livemig: removed %s (the earlier migration's; this one does not use it)\n",
                   PeerText(f).c_str());
    }
    for (const std::string& f : unlisted.kept) {
      std::fprintf(stderr, "livemig: left the earlier migration's %s\n", PeerText(f).c_str());
    }
    last_files = got->files;
    const uint64_t total = got->memory.total_size();
    std::fprintf(stderr,
                 "livemig: received %s in %u regions over %u channels, %u rounds; "
                 "%s, files flushed\n",
                 FormatBytes(static_cast<double>(total)).c_str(),
                 static_cast<unsigned>(got->regions.size()), got->channels, got->rounds,
                 got->verified ? "page hashes verified" : "NOT verified (the source sent no digests)");
    // The names came from the peer: printed escaped.
    for (const std::string& f : got->files) std::fprintf(stderr, "  %s\n", PeerText(f).c_str());
    Resumed resumed;
    if (resume_for.has_value()) resumed = ResumeReceivedVm(*got, *resume_for);
    if (flags.json) {
      std::string line = manifest;
      if (flags.prealloc) {
        // Declared memory: populated before the source connected.
        line.pop_back();  // The closing brace.
        absl::StrAppend(&line, ",\"prealloc\":{\"ms\":",
                        prepared->empty() ? got->prealloc_ms : prepared->populate_ms(),
                        ",\"bytes\":",
                        prepared->empty() ? got->prealloc_bytes : prepared->populated_bytes(),
                        ",\"before-connect\":", prepared->empty() ? "false" : "true", "}}");
      }
      if (resume_for.has_value()) {
        line.pop_back();
        absl::StrAppend(&line, ",\"resume\":", resumed.json, "}");
      }
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
    const bool once = flags.once || at->kind == Endpoint::Kind::kFd;
    if (resume_for.has_value() && !resumed.ok && once) return kExitFailed;
    // Handed-over sockets carry one migration.
    if (flags.once || at->kind == Endpoint::Kind::kFd) return kExitDone;
    if (Interrupted()) {  // A signal during the flush: this migration completed.
      std::fprintf(stderr, "livemig: stopped by a signal after the migration completed\n");
      return kExitFailed;
    }
  }
}

}  // namespace livemig::cli
