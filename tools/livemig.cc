// livemig: the command-line pair around the migration engine.
//
//   livemig receive --listen=127.0.0.1:7000 --dir=/var/lib/vm [--once] [--json]
//   livemig send --connect=127.0.0.1:7000 --memory=1GiB --workload=uniform:rate=200MB/s
//
// `send` builds guest memory (anonymous regions, or existing files mapped
// MAP_SHARED at an offset), runs a built-in workload that dirties it through
// the tracked API, and migrates it; `receive` rebuilds every region as a file
// in --dir and writes manifest.json beside them. Run either with --help.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/status_macros.h"
#include "migration/receiver.h"
#include "migration/protocol.h"
#include "migration/sender.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "tools/cli/units.h"
#include "tools/cli/workload.h"

ABSL_FLAG(std::string, listen, "", "receive: HOST:PORT to listen on");
ABSL_FLAG(std::string, unix, "", "send/receive: Unix socket path instead of TCP");
ABSL_FLAG(std::string, dir, "", "receive: directory where regions are rebuilt");
ABSL_FLAG(int32_t, channels, 0, "send: parallel connections (default 2); receive: the most "
          "accepted (default 64)");
ABSL_FLAG(bool, json, false, "print the final result as one JSON object on the last line");
ABSL_FLAG(bool, once, false, "receive: exit after one migration, its outcome as exit status");
ABSL_FLAG(std::string, connect, "", "send: HOST:PORT of the receiver");
ABSL_FLAG(std::string, memory, "", "send: one anonymous region of SIZE at guest address 0");
ABSL_FLAG(std::string, fill, "random", "send: initial content: random, zero, text or keep");
ABSL_FLAG(std::string, workload, "idle", "send: idle, uniform:rate=R, hotset:size=S,rate=R, "
          "sequential:rate=R, zipf:s=X,rate=R (add ,threads=N)");
ABSL_FLAG(int32_t, downtime_ms, 300, "send: downtime limit in milliseconds");
ABSL_FLAG(int32_t, max_rounds, 30, "send: round limit");
ABSL_FLAG(double, timeout_s, 0, "send: overall limit in seconds (0 = none)");
ABSL_FLAG(std::string, on_timeout, "cancel", "send: at the round/time limit: cancel or force");
ABSL_FLAG(bool, auto_converge, false, "send: throttle the workload when it dirties too fast");
ABSL_FLAG(int32_t, stall_rounds, 5, "send: rounds without the dirty volume shrinking before "
          "escalating (a throttle step with --auto-converge, else --on-timeout); 0 = never");
ABSL_FLAG(std::string, throttle_steps, "20,10,99", "send: auto-converge throttle "
          "INITIAL,INCREMENT,MAX in percent");
ABSL_FLAG(std::string, max_bandwidth, "", "send: bandwidth cap, e.g. 200MB/s (default none)");
ABSL_FLAG(double, io_timeout_s, 30, "deadline for every network read and write, seconds");
ABSL_FLAG(std::string, verify, "sent", "send: end-to-end verification: sent (the destination "
          "holds every page version sent; the source is audited after the commit), full "
          "(also re-hash the paused source before the handover), off");
ABSL_FLAG(bool, durable, false, "receive: flush the rebuilt files to disk before telling the "
          "source they are verified (in the source's downtime); default: flush after the commit");
ABSL_FLAG(std::string, test_untracked_write, "", "send, testing only: after round 0, change "
          "the byte at this guest address through the raw pointer, without marking it dirty");
ABSL_FLAG(bool, test_hang_after_commit, false, "receive, testing only: stop after the commit, "
          "before the flush (to test a receiver killed there)");

namespace livemig {
namespace {

constexpr uint64_t kPage = kMigrationPageSize;

// --- Signals: SIGINT/SIGTERM cancel whatever runs. ---
std::mutex g_cancel_mu;
std::function<void()> g_cancel;  // Guarded by g_cancel_mu.
std::atomic<bool> g_interrupted{false};

void SetCancel(std::function<void()> cancel) {
  std::lock_guard<std::mutex> lock(g_cancel_mu);
  g_cancel = std::move(cancel);
}

// Blocks the signals in every thread and handles them on one thread.
void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::fprintf(stderr, "\nlivemig: %s, aborting\n", strsignal(sig));
      g_interrupted.store(true);
      std::lock_guard<std::mutex> lock(g_cancel_mu);
      if (g_cancel) g_cancel();
    }
  }).detach();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "livemig: %s\n", status.ToString().c_str());
  return 1;
}

// Bad usage exits 2, as --help says (1 is "the migration failed").
int Usage(const absl::Status& status) {
  std::fprintf(stderr, "livemig: %s\n", status.ToString().c_str());
  return 2;
}

// Whether the flag holds something other than its default (this Abseil
// keeps "specified on the command line" private; giving the default value
// explicitly is harmless).
template <typename T>
bool Given(const absl::Flag<T>& flag) {
  const absl::CommandLineFlag& f = absl::GetFlagReflectionHandle(flag);
  return f.CurrentValue() != f.DefaultValue();
}

// --io-timeout-s: a finite number of seconds above 0.
absl::StatusOr<absl::Duration> IoTimeoutFromFlag() {
  const double s = absl::GetFlag(FLAGS_io_timeout_s);
  if (!(s > 0) || !std::isfinite(s)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--io-timeout-s=", s, ": expected a finite number of seconds above 0"));
  }
  return absl::Seconds(s);
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
      {"test-untracked-write", Given(FLAGS_test_untracked_write)}};
  const std::vector<std::pair<const char*, bool>> receive_only = {
      {"listen", Given(FLAGS_listen)},
      {"dir", Given(FLAGS_dir)},
      {"once", Given(FLAGS_once)},
      {"durable", Given(FLAGS_durable)},
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

absl::StatusOr<Endpoint> EndpointFromFlags(const char* tcp_flag, const std::string& tcp) {
  const std::string unix_path = absl::GetFlag(FLAGS_unix);
  if (!unix_path.empty() && !tcp.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("give either --", tcp_flag, " or --unix, not both"));
  }
  if (!unix_path.empty()) return Endpoint::Unix(unix_path);
  if (tcp.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, "=HOST:PORT or --unix=PATH is required"));
  }
  absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(tcp);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, ": ", endpoint.status().message()));
  }
  return endpoint;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
      continue;
    }
    out += c;
  }
  return out;
}

// --------------------------------------------------------------- receive ---

std::string ManifestJson(const ReceivedMigration& got) {
  std::string regions;
  for (size_t i = 0; i < got.regions.size(); ++i) {
    const proto::RegionInfo& info = got.regions[i];
    if (!regions.empty()) regions += ",";
    absl::StrAppend(
        &regions, "{\"index\":", info.index(), ",\"guest_addr\":", info.guest_addr(),
        ",\"size\":", info.size(), ",\"file\":\"", JsonEscape(got.files[i]),
        "\",\"file_offset\":", info.file_offset(), ",\"page_hash_root\":\"",
        absl::Hex(got.digests[i], absl::kZeroPad16), "\"}");
  }
  return absl::StrCat("{\"status\":\"completed\",\"verified\":",
                      got.verified ? "true" : "false", ",\"regions\":[", regions,
                      "],\"stats\":{\"raw_pages\":", got.raw_pages,
                      ",\"zero_pages\":", got.zero_pages,
                      ",\"bytes_received\":", got.bytes_received,
                      ",\"rounds\":", got.rounds, ",\"channels\":", got.channels,
                      ",\"device_state_bytes\":", got.device_state.size(), "}}");
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

int Receive() {
  absl::StatusOr<Endpoint> at = EndpointFromFlags("listen", absl::GetFlag(FLAGS_listen));
  if (!at.ok()) return Usage(at.status());
  const std::string dir = absl::GetFlag(FLAGS_dir);
  if (dir.empty()) return Usage(absl::InvalidArgumentError("--dir=DIR is required"));
  const int max_channels = absl::GetFlag(FLAGS_channels);
  if (max_channels < 0 || max_channels > 64) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--channels=", max_channels, ": expected 1 to 64 (0: 64)")));
  }
  absl::StatusOr<absl::Duration> io_timeout = IoTimeoutFromFlag();
  if (!io_timeout.ok()) return Usage(io_timeout.status());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Usage(absl::InvalidArgumentError(absl::StrCat("--dir: ", ec.message())));
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--dir=", dir, ": not writable (", std::strerror(errno), ")")));
  }
  ReceiverOptions options;
  options.root_dir = dir;
  options.max_channels = max_channels > 0 ? static_cast<uint32_t>(max_channels) : 64;
  options.io_timeout = *io_timeout;
  options.anonymous_regions_as_files = true;
  // What this command writes beside the regions: never a region's name.
  options.reserved_paths = {"manifest.json", "manifest.json.tmp"};
  options.durable = absl::GetFlag(FLAGS_durable);
  if (absl::GetFlag(FLAGS_test_hang_after_commit)) {
    options.test_on_step = [](const char* step) {
      if (std::string(step) != "committed") return;
      std::fprintf(stderr, "livemig: committed; holding before the flush (testing)\n");
      while (true) absl::SleepFor(absl::Seconds(1));
    };
  }
  absl::StatusOr<std::unique_ptr<Receiver>> receiver = Receiver::Listen(*at, options);
  if (!receiver.ok()) return Fail(receiver.status());
  Receiver* r = receiver->get();
  SetCancel([r] { r->Cancel(); });
  if (g_interrupted.load()) r->Cancel();  // A signal from before SetCancel.
  std::fprintf(stderr, "livemig: listening on %s, rebuilding into %s\n",
               (*receiver)->endpoint().ToString().c_str(), dir.c_str());
  const std::string manifest_path = dir + "/manifest.json";
  while (true) {
    // The manifest says "these files are complete and on disk": it goes
    // before anything of the next migration is published, and comes back
    // only after ReceiveOne() returned, i.e. after the flush.
    if (::unlink(manifest_path.c_str()) != 0 && errno != ENOENT) {
      return Fail(absl::InternalError(
          absl::StrCat("cannot remove ", manifest_path, ": ", std::strerror(errno))));
    }
    absl::StatusOr<ReceivedMigration> got = r->ReceiveOne();
    if (!got.ok() && absl::IsCancelled(got.status()) &&
        got.status().message() == "cancelled while waiting for a source") {
      std::fprintf(stderr, "livemig: stopped while waiting for a source\n");
      return 1;
    }
    if (!got.ok()) {
      std::fprintf(stderr, "livemig: migration failed: %s (partial files removed)\n",
                   got.status().ToString().c_str());
      if (absl::GetFlag(FLAGS_json)) {
        std::printf("{\"status\":\"failed\",\"verified\":false,\"error\":\"%s\"}\n",
                    JsonEscape(got.status().ToString()).c_str());
      }
      if (absl::GetFlag(FLAGS_once) || g_interrupted.load()) return 1;
      continue;
    }
    const std::string manifest = ManifestJson(*got);
    absl::Status written = WriteFileAtomically(manifest_path, manifest);
    if (!written.ok()) return Fail(written);
    const uint64_t total = got->memory.total_size();
    std::fprintf(stderr,
                 "livemig: received %s in %u regions over %u channels, %u rounds; "
                 "%s, files flushed\n",
                 cli::FormatBytes(static_cast<double>(total)).c_str(),
                 static_cast<unsigned>(got->regions.size()), got->channels, got->rounds,
                 got->verified ? "page hashes verified" : "NOT verified (the source sent no digests)");
    // The names came from the peer: printed escaped.
    for (const std::string& f : got->files) std::fprintf(stderr, "  %s\n", PeerText(f).c_str());
    if (absl::GetFlag(FLAGS_json)) std::printf("%s\n", manifest.c_str());
    std::fflush(stdout);
    if (absl::GetFlag(FLAGS_once)) return 0;
  }
}

// ------------------------------------------------------------------ send ---

struct RegionFlag {
  uint64_t gpa = 0;
  uint64_t size = 0;
  std::string file;
  uint64_t offset = 0;
  std::string name;  // Where the receiver rebuilds it, relative to its --dir.
  std::string text;  // The flag as given, for messages.
};

absl::StatusOr<RegionFlag> ParseRegionFlag(const std::string& text) {
  RegionFlag region;
  bool have_gpa = false, have_size = false;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    auto bad = [&](const absl::Status& s) {
      return absl::InvalidArgumentError(absl::StrCat("--region=", text, ": ", kv.first, ": ",
                                                     s.message()));
    };
    if (kv.first == "gpa" || kv.first == "size" || kv.first == "offset") {
      absl::StatusOr<uint64_t> v = cli::ParseSize(kv.second);
      if (!v.ok()) return bad(v.status());
      if (kv.first == "gpa") region.gpa = *v, have_gpa = true;
      if (kv.first == "size") region.size = *v, have_size = true;
      if (kv.first == "offset") region.offset = *v;
    } else if (kv.first == "file") {
      region.file = kv.second;
    } else if (kv.first == "name") {
      region.name = kv.second;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--region=", text, ": unknown key \"", kv.first,
          "\"; expected gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]"));
    }
  }
  if (!have_gpa || !have_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--region=", text, ": gpa= and size= are required"));
  }
  if (!region.name.empty() && region.file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--region=", text, ": name= needs file= (anonymous regions are named "
                     "by the receiver)"));
  }
  if (!region.file.empty() && region.name.empty()) {
    region.name = std::filesystem::path(region.file).filename().string();
  }
  region.text = text;
  return region;
}

// Two regions the receiver would rebuild into one file must come from one
// source file (at different offsets); anything else would mix two files'
// bytes (e.g. a/guest.mem and b/guest.mem both arrive as guest.mem).
absl::Status CheckNamesAreDistinct(const std::vector<RegionFlag>& specs) {
  for (size_t i = 0; i < specs.size(); ++i) {
    for (size_t j = i + 1; j < specs.size(); ++j) {
      if (specs[i].name.empty() || specs[i].name != specs[j].name) continue;
      struct stat a, b;
      const bool same = ::stat(specs[i].file.c_str(), &a) == 0 &&
                        ::stat(specs[j].file.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
                        a.st_ino == b.st_ino;
      if (!same) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--region=", specs[j].text, " and --region=", specs[i].text,
            " would both be rebuilt as \"", specs[i].name,
            "\" from different files: give one of them name=REL"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status FillRegion(const MmapRegion<AtomicBitmap>& region, const std::string& fill,
                        uint64_t seed) {
  uint8_t* p = region.as_ptr();  // Untracked: the initial state is not dirtying.
  if (fill == "keep") return absl::OkStatus();
  if (fill == "zero") {
    if (region.file_offset().has_value()) std::memset(p, 0, region.size());
    return absl::OkStatus();
  }
  if (fill == "text") {
    static constexpr char kText[] =
        "livemig moves a running guest's memory while it keeps writing. ";
    for (uint64_t i = 0; i < region.size(); ++i) p[i] = kText[i % (sizeof(kText) - 1)];
    return absl::OkStatus();
  }
  if (fill == "random") {
    std::mt19937_64 rng(seed);
    for (uint64_t i = 0; i + 8 <= region.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(p + i, &v, 8);
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--fill=", fill, ": expected random, zero, text or keep"));
}

// Maps the regions the flags describe, calls `before_fill` (which may fail),
// then fills them: everything a flag can get wrong is found before it.
absl::StatusOr<GuestMemory<AtomicBitmap>> BuildMemory(
    const std::vector<std::string>& region_flags, std::vector<std::string>* file_names,
    const std::function<absl::Status()>& before_fill) {
  std::vector<RegionFlag> specs;
  for (const std::string& text : region_flags) {
    LIVEMIG_ASSIGN_OR_RETURN(RegionFlag r, ParseRegionFlag(text));
    specs.push_back(r);
  }
  const std::string memory = absl::GetFlag(FLAGS_memory);
  if (!memory.empty()) {
    absl::StatusOr<uint64_t> size = cli::ParseSize(memory);
    if (!size.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--memory: ", size.status().message()));
    }
    RegionFlag anonymous;
    anonymous.size = *size;
    anonymous.text = "--memory=" + memory;
    specs.push_back(anonymous);
  }
  if (specs.empty()) {
    return absl::InvalidArgumentError("give --memory=SIZE or at least one --region=...");
  }
  // Guest memory sorts its regions by address; names follow that order.
  std::sort(specs.begin(), specs.end(),
            [](const RegionFlag& a, const RegionFlag& b) { return a.gpa < b.gpa; });
  LIVEMIG_RETURN_IF_ERROR(CheckNamesAreDistinct(specs));
  std::vector<GuestRegion<AtomicBitmap>> regions;
  const std::string fill = absl::GetFlag(FLAGS_fill);
  uint64_t seed = 1;
  for (const RegionFlag& spec : specs) {
    if (spec.size == 0 || spec.size % kPage != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region size ", spec.size, " must be a non-zero multiple of 4096"));
    }
    std::optional<MmapRegion<AtomicBitmap>> mmap;
    if (spec.file.empty()) {
      LIVEMIG_ASSIGN_OR_RETURN(mmap, MmapRegion<AtomicBitmap>::Create(spec.size));
      file_names->push_back("");
    } else {
      LIVEMIG_ASSIGN_OR_RETURN(FileOffset file, FileOffset::Open(spec.file, spec.offset));
      LIVEMIG_ASSIGN_OR_RETURN(mmap, MmapRegion<AtomicBitmap>::FromFile(std::move(file), spec.size));
      file_names->push_back(spec.name);
    }
    LIVEMIG_ASSIGN_OR_RETURN(auto region, GuestRegion<AtomicBitmap>::Create(
                                              std::move(*mmap), GuestAddress(spec.gpa)));
    regions.push_back(std::move(region));
  }
  if (fill != "random" && fill != "zero" && fill != "text" && fill != "keep") {
    return absl::InvalidArgumentError(
        absl::StrCat("--fill=", fill, ": expected random, zero, text or keep"));
  }
  LIVEMIG_RETURN_IF_ERROR(before_fill());
  if (fill != "keep") {
    uint64_t total = 0;
    for (const GuestRegion<AtomicBitmap>& region : regions) total += region.len();
    std::fprintf(stderr, "livemig: filling %s of guest memory (--fill=%s)\n",
                 cli::FormatBytes(static_cast<double>(total)).c_str(), fill.c_str());
  }
  for (const GuestRegion<AtomicBitmap>& region : regions) {
    LIVEMIG_RETURN_IF_ERROR(FillRegion(region.region(), fill, seed++));
  }
  return GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

void PrintProgress(const MigrationStats& s, bool tty) {
  const RoundStats& r = s.round_stats.back();
  const std::string line = absl::StrFormat(
      "round %u: sent %.0f%% of memory, %s, dirty rate %s, remaining %s, est. downtime %.0f ms%s",
      r.round, s.total ? 100.0 * s.transferred / s.total : 0.0,
      cli::FormatRate(r.bandwidth_bytes_per_s).c_str(),
      cli::FormatRate(s.dirty_pages_rate * kPage).c_str(),
      cli::FormatBytes(static_cast<double>(s.remaining)).c_str(), r.expected_downtime_ms,
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
std::string SendJson(const MigrationStats& stats, const cli::Workload& workload,
                     const cli::WorkloadSpec& spec, double workload_seconds) {
  std::string json = stats.ToJson();
  json.pop_back();  // The closing brace.
  const double pages = static_cast<double>(workload.pages_written());
  absl::StrAppend(&json, ",\"workload\":{\"spec\":\"",
                  JsonEscape(cli::WorkloadToString(spec)),
                  "\",\"pages-written\":", workload.pages_written(),
                  ",\"seconds\":", absl::StrFormat("%.3f", workload_seconds),
                  ",\"achieved-bytes-per-s\":",
                  absl::StrFormat("%.0f", workload_seconds > 0
                                              ? pages * kPage / workload_seconds
                                              : 0.0),
                  "}}");
  return json;
}

int Send(const std::vector<std::string>& region_flags) {
  absl::StatusOr<Endpoint> to = EndpointFromFlags("connect", absl::GetFlag(FLAGS_connect));
  if (!to.ok()) return Usage(to.status());
  absl::StatusOr<cli::WorkloadSpec> spec = cli::ParseWorkload(absl::GetFlag(FLAGS_workload));
  if (!spec.ok()) {
    return Usage(absl::InvalidArgumentError(absl::StrCat("--workload: ", spec.status().message())));
  }
  SenderOptions options;
  options.destination = *to;
  const int channels = absl::GetFlag(FLAGS_channels) == 0 ? 2 : absl::GetFlag(FLAGS_channels);
  if (channels < 1 || channels > 64) {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--channels=", channels, ": expected 1 to 64")));
  }
  options.channels = static_cast<uint32_t>(channels);
  if (absl::GetFlag(FLAGS_downtime_ms) <= 0) {
    return Usage(absl::InvalidArgumentError("--downtime-ms must be positive"));
  }
  options.downtime_limit = absl::Milliseconds(absl::GetFlag(FLAGS_downtime_ms));
  if (absl::GetFlag(FLAGS_max_rounds) < 1) {
    return Usage(absl::InvalidArgumentError("--max-rounds must be at least 1"));
  }
  options.max_rounds = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_rounds));
  {
    const double timeout = absl::GetFlag(FLAGS_timeout_s);
    if (!(timeout >= 0) || !std::isfinite(timeout)) {
      return Usage(absl::InvalidArgumentError(absl::StrCat(
          "--timeout-s=", timeout, ": expected 0 (none) or a finite number of seconds")));
    }
    if (timeout > 0) options.timeout = absl::Seconds(timeout);
  }
  const std::string on_timeout = absl::GetFlag(FLAGS_on_timeout);
  if (on_timeout == "force") {
    options.on_limit = SenderOptions::OnLimit::kForce;
  } else if (on_timeout != "cancel") {
    return Usage(absl::InvalidArgumentError(
        absl::StrCat("--on-timeout=", on_timeout, ": expected cancel or force")));
  }
  options.auto_converge = absl::GetFlag(FLAGS_auto_converge);
  if (absl::GetFlag(FLAGS_stall_rounds) < 0) {
    return Usage(absl::InvalidArgumentError(absl::StrCat(
        "--stall-rounds=", absl::GetFlag(FLAGS_stall_rounds), ": expected 0 or more")));
  }
  options.stall_rounds = static_cast<uint32_t>(absl::GetFlag(FLAGS_stall_rounds));
  {
    const std::string steps = absl::GetFlag(FLAGS_throttle_steps);
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
  if (!absl::GetFlag(FLAGS_max_bandwidth).empty()) {
    absl::StatusOr<double> rate = cli::ParseRate(absl::GetFlag(FLAGS_max_bandwidth));
    if (!rate.ok()) {
      return Usage(absl::InvalidArgumentError(
          absl::StrCat("--max-bandwidth: ", rate.status().message())));
    }
    options.max_bandwidth = static_cast<uint64_t>(*rate);
  }
  {
    absl::StatusOr<absl::Duration> io_timeout = IoTimeoutFromFlag();
    if (!io_timeout.ok()) return Usage(io_timeout.status());
    options.io_timeout = *io_timeout;
  }
  {
    const std::string verify = absl::GetFlag(FLAGS_verify);
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
  // Before filling (seconds for GiBs): is anybody there? The probe sends
  // no Hello, so a receiver drops it like any silent stranger.
  bool probed = false;
  auto probe = [&]() -> absl::Status {
    probed = true;
    return Connection::Connect(*to, options.io_timeout).status();
  };
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory =
      BuildMemory(region_flags, &options.file_names, probe);
  if (!memory.ok()) {
    // A --memory/--region value that cannot be used is bad usage; no
    // receiver, or a mapping that failed, is not.
    return !probed && (absl::IsInvalidArgument(memory.status()) ||
                       absl::IsNotFound(memory.status()))
               ? Usage(memory.status())
               : Fail(memory.status());
  }

  std::optional<uint64_t> untracked_write;
  if (!absl::GetFlag(FLAGS_test_untracked_write).empty()) {
    absl::StatusOr<uint64_t> addr = cli::ParseSize(absl::GetFlag(FLAGS_test_untracked_write));
    if (!addr.ok()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--test-untracked-write: ", addr.status().message())));
    }
    untracked_write = *addr;
  }
  cli::Workload workload(*memory, *spec);
  const bool tty = ::isatty(STDERR_FILENO);
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
  SetCancel([&sender] { sender.Cancel(); });
  // A signal that came while memory was being built (no Sender to cancel
  // yet) still cancels.
  if (g_interrupted.load()) sender.Cancel();
  workload.Start();
  const absl::Time workload_start = absl::Now();
  std::fprintf(stderr, "livemig: migrating %s to %s over %d channel(s), workload %s\n",
               cli::FormatBytes(static_cast<double>(memory->total_size())).c_str(),
               to->ToString().c_str(), channels,
               cli::WorkloadToString(*spec).c_str());
  absl::StatusOr<MigrationStats> stats = sender.Migrate(*memory, workload);
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
    } else {
      std::fprintf(stderr,
                   "livemig: migration failed, the source kept running (workload "
                   "resumed): %s\n",
                   stats.status().ToString().c_str());
    }
    if (absl::GetFlag(FLAGS_json)) {
      std::printf("%s\n",
                  SendJson(sender.last_stats(), workload, *spec, workload_seconds).c_str());
    }
    return in_doubt ? 3 : 1;
  }
  std::fprintf(stderr,
               "livemig: done: %u rounds, total %.0f ms, downtime %.1f ms, sent %s for %s of "
               "memory (%.2fx), %s, verified: %s\n",
               stats->rounds, stats->total_time_ms, stats->downtime_ms,
               cli::FormatBytes(static_cast<double>(stats->transferred)).c_str(),
               cli::FormatBytes(static_cast<double>(stats->total)).c_str(),
               stats->total ? static_cast<double>(stats->transferred) / stats->total : 0.0,
               stats->converged ? "converged" : "forced switchover",
               options.verify == SenderOptions::Verify::kOff ? "no (--verify=off)"
               : options.verify == SenderOptions::Verify::kFull
                   ? "yes (every page sent, and the paused source re-hashed)"
                   : "yes (every page sent)");
  const AuditStats& audit = stats->audit;
  if (audit.ran && options.verify == SenderOptions::Verify::kSent) {
    std::fprintf(stderr, "livemig: source audit: %s re-hashed in %.0f ms, %llu untracked pages\n",
                 cli::FormatBytes(static_cast<double>(audit.bytes)).c_str(), audit.ms,
                 static_cast<unsigned long long>(audit.untracked_pages));
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", SendJson(*stats, workload, *spec, workload_seconds).c_str());
  }
  if (audit.untracked_pages > 0) {
    std::string addrs;
    for (uint64_t a : audit.first_addrs) absl::StrAppend(&addrs, addrs.empty() ? "" : ", ", "0x", absl::Hex(a));
    std::fprintf(stderr,
                 "livemig: WARNING: %llu pages were written without being marked dirty "
                 "(guest addresses %s%s): the destination holds older versions of them\n",
                 static_cast<unsigned long long>(audit.untracked_pages), addrs.c_str(),
                 audit.untracked_pages > audit.first_addrs.size() ? ", ..." : "");
    return 4;
  }
  return 0;
}

// Splits out --region (repeatable, and its value has commas) and turns
// --dashed-names into the --underscored names Abseil flags use.
std::vector<char*> PrepareArgs(int argc, char** argv, std::vector<std::string>* regions,
                               std::vector<std::string>* storage) {
  storage->reserve(argc);
  std::vector<char*> out;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (i > 0 && arg.rfind("--region", 0) == 0) {
      if (arg.rfind("--region=", 0) == 0) {
        regions->push_back(arg.substr(9));
        continue;
      }
      if (arg == "--region" && i + 1 < argc) {
        regions->push_back(argv[++i]);
        continue;
      }
    }
    if (i > 0 && arg.rfind("--", 0) == 0) {
      const size_t eq = arg.find('=');
      for (size_t j = 2; j < std::min(eq, arg.size()); ++j) {
        if (arg[j] == '-') arg[j] = '_';
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
      "  livemig receive --listen=HOST:PORT|--unix=PATH --dir=DIR [--once] [--json]\n"
      "  livemig send --connect=HOST:PORT|--unix=PATH (--memory=SIZE | "
      "--region=gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]...)\n"
      "       [--fill=random|zero|text|keep] [--workload=SPEC] [--channels=N]\n"
      "       [--downtime-ms=300] [--max-rounds=30] [--timeout-s=S] "
      "[--on-timeout=cancel|force]\n"
      "       [--auto-converge] [--throttle-steps=20,10,99] [--stall-rounds=5]\n"
      "       [--max-bandwidth=RATE] [--verify=sent|full|off] [--json]\n"
      "  livemig receive ... [--durable]\n"
      "Sizes: 4096, 0x1000, 64K, 1GiB (binary). Rates: 200MB/s (decimal), 64MiB/s.\n"
      "Exit status: 0 done; 1 failed (send: the workload was resumed); 2 bad usage;\n"
      "3 send: handover in doubt (the receiver may own the guest; not resumed);\n"
      "4 send: migrated, but the source audit found pages written without being marked\n"
      "  dirty (named on stderr): the destination holds older versions of them.");
  std::vector<std::string> regions, storage;
  std::vector<char*> args = livemig::PrepareArgs(argc, argv, &regions, &storage);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (positional.size() != 2 ||
      (std::string(positional[1]) != "send" && std::string(positional[1]) != "receive")) {
    std::fprintf(stderr, "livemig: expected one command, send or receive (see --help)\n");
    return 2;
  }
  const std::string command = positional[1];
  if (absl::Status only = livemig::CheckOnlyFlagsOf(command); !only.ok()) {
    std::fprintf(stderr, "livemig: %s\n", only.ToString().c_str());
    return 2;
  }
  livemig::StartSignalThread();
  if (command == "receive") {
    if (!regions.empty()) {
      std::fprintf(stderr, "livemig: --region is a send flag\n");
      return 2;
    }
    return livemig::Receive();
  }
  return livemig::Send(regions);
}
