// End-to-end throughput of the migration engine against raw loopback TCP
// (`bazel run -c opt //migration:bench -- [--gib=2]`).
//
// A plain program (not Google Benchmark: one migration of GiBs is one
// sample). Prints one `name value unit` line per figure, all from one run:
//   raw_tcp_{1,2}conn          GiB over N loopback connections, 1 MiB writes
//                              (Connection::WriteAll) and 1 MiB reads
//                              (Connection::ReadExact), each carrying total/N.
//   livemig_random_{1,2}conn   Sender -> Receiver migration of an idle FakeVm
//                              with one anonymous region of random bytes:
//                              memory bytes / (total_time - setup_time), and
//                              `_round0` = memory bytes / round 0's duration.
//   raw_tcp_2conn_into_fresh_{shmem,private_thp}
//                              the same, but the readers land the bytes in a
//                              fresh mapping of the whole size (as the
//                              receiver does), shared anonymous (shmem, what
//                              RegionStore maps) or private with MADV_HUGEPAGE.
//   raw_tcp_2conn_into_prealloc_{shmem,private_thp}
//                              the same into a mapping populated first
//                              (MADV_POPULATE_WRITE, not timed), and
//                              `populate_{shmem,private_thp}` the populating
//                              alone (one thread per core).
//   raw_tcp_2conn_from_memory_into_prealloc_shmem_median
//                              the same (median of three), but the writers send consecutive
//                              MiBs of a populated source mapping of the
//                              whole size (random bytes) instead of one
//                              cached 1 MiB buffer: the copy any migration
//                              makes, with no per-page work, so the source
//                              reads its memory from DRAM as livemig must.
//   ratio_{1,2}conn            livemig (total-time based) / raw, same N.
//   ratio_2conn_{anon,shm}_prealloc
//                              their medians over raw TCP into preallocated
//                              memory of the kind, when both ran;
//                              `_vs_raw_from_memory` (shm: both shmem) over
//                              raw TCP from a source mapping.
//   livemig_random_2conn_{anon,shm}_{fresh,prealloc}_<i>
//                              random 2conn into the receiver's anonymous
//                              (THP) mappings or into files on /dev/shm:
//                              faulted in by the readers, or populated
//                              before round 0 (ReceiverOptions::prealloc);
//                              alternating,
//                              three of each, `_median`s; `_incl_setup`
//                              counts the setup time too (prealloc runs in
//                              it: the source waits for Ack{REGION_TABLE}),
//                              `_prealloc_ms` is the receiver's own figure.
//   livemig_zero_2conn         the same over all-zero memory (zero pages go as
//                              runs): effective GB/s, not link bandwidth.
//   tls_{plain,tls}_2conn      random 2conn without and with mutual TLS 1.3
//                              (certificates made with `openssl` at start),
//                              alternating, three of each; ratio_tls_2conn is
//                              the median TLS over the median plaintext.
//   compress_{random,text}_{off,zstd,lz4}_2conn
//                              random memory and text memory (FakeVm
//                              Fill::kText: compresses ~5x), unlimited,
//                              compression off / zstd:1 / lz4:1, alternating,
//                              three of each, medians; ratio_compress_* is a
//                              codec's median over off's (random: the cost of
//                              trying, which the back-off must keep small;
//                              text: the gain on a fast link), with the
//                              compression ratio and codec busy time.
//   compress_capped_text_{off,zstd,lz4}_2conn
//                              text memory over a 125 MB/s cap (a 1 Gbit/s
//                              link), one of each: total-time based.
// plus downtime_ms (and its final-round / completion parts), rounds, total
// and setup time per migration. GB is 1e9 bytes. An untimed warm-up
// migration runs first (see Main). --only=CASE runs a subset, for profiling.
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/transport/tls_context.h"
#include "migration/wire/compression.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeRegionSpec;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr absl::Duration kIoTimeout = absl::Seconds(60);

[[noreturn]] void Die(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "bench: %s: %s\n", what.c_str(), status.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> value, const std::string& what) {
  if (!value.ok()) Die(what, value.status());
  return std::move(*value);
}

void Print(const std::string& name, double value, const char* unit) {
  std::printf("%-40s %10.3f %s\n", name.c_str(), value, unit);
  std::fflush(stdout);
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Where the raw TCP readers put the bytes.
enum class Sink {
  kReusedBuffer,   // One 1 MiB buffer per reader, read into again and again.
  kFreshShmem,     // Consecutive MiBs of a fresh MAP_SHARED|MAP_ANONYMOUS
                   // mapping of `total` bytes: what the receiver does with an
                   // anonymous region (every 4 KiB page faults in recvmsg).
  kFreshPrivateThp,  // The same into MAP_PRIVATE|MAP_ANONYMOUS with
                     // MADV_HUGEPAGE (2 MiB faults where THP allows).
};

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// Populates [p, p + size) on one thread per core, 2 MiB chunks; seconds.
double Populate(uint8_t* p, uint64_t size) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<uint64_t> next{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (unsigned i = 0; i < threads; ++i) {
    workers.emplace_back([&] {
      constexpr uint64_t kChunk = 2 * kMiB;
      for (uint64_t at; (at = next.fetch_add(kChunk, std::memory_order_relaxed)) < size;) {
        if (::madvise(p + at, std::min(kChunk, size - at), MADV_POPULATE_WRITE) != 0) {
          std::perror("madvise(MADV_POPULATE_WRITE)");
          std::exit(1);
        }
      }
    });
  }
  for (auto& t : workers) t.join();
  return Seconds(std::chrono::steady_clock::now() - start);
}

// `total` bytes over `conns` loopback connections, one writer and one reader
// thread per connection; returns bytes per second (wall clock from the first
// write to the last byte read).
double RawTcp(uint64_t total, int conns, Sink sink = Sink::kReusedBuffer,
              bool populate_first = false, const uint8_t* source = nullptr) {
  auto listener =
      Check(Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)), "raw listen");
  std::vector<std::unique_ptr<Connection>> out, in;
  for (int i = 0; i < conns; ++i) {
    out.push_back(Check(Connection::Connect(listener->local_endpoint(),
                                            absl::Seconds(5)),
                        "raw connect"));
    in.push_back(Check(listener->Accept(absl::Seconds(5)), "raw accept"));
  }
  const uint64_t per_conn = total / conns;
  std::vector<uint8_t> pattern(kMiB);
  std::mt19937_64 rng(1);
  for (auto& b : pattern) b = static_cast<uint8_t>(rng());

  uint8_t* fresh = nullptr;
  if (sink != Sink::kReusedBuffer) {
    const int flags = sink == Sink::kFreshShmem ? MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE
                                                : MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void* p = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("mmap");
      std::exit(1);
    }
    if (sink == Sink::kFreshPrivateThp) (void)::madvise(p, total, MADV_HUGEPAGE);
    fresh = static_cast<uint8_t*>(p);
    if (populate_first) {
      const double s = Populate(fresh, total);
      Print(sink == Sink::kFreshShmem ? "populate_shmem" : "populate_private_thp",
            static_cast<double>(total) / s / 1e9, "GB/s");
    }
  }
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(2 * conns);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < conns; ++i) {
    threads.emplace_back([&, i] {
      for (uint64_t done = 0; done < per_conn; done += kMiB) {
        const uint8_t* from = source == nullptr ? pattern.data() : source + i * per_conn + done;
        iovec p{const_cast<uint8_t*>(from), std::min<uint64_t>(kMiB, per_conn - done)};
        absl::Status s = out[i]->WriteAll(absl::MakeConstSpan(&p, 1), kIoTimeout);
        if (!s.ok()) {
          results[2 * i] = s;
          return;
        }
      }
    });
    threads.emplace_back([&, i] {
      std::vector<uint8_t> buffer(kMiB);
      for (uint64_t done = 0; done < per_conn; done += kMiB) {
        uint8_t* to = fresh == nullptr ? buffer.data() : fresh + i * per_conn + done;
        const iovec p{to, std::min<uint64_t>(kMiB, per_conn - done)};
        absl::Status s = in[i]->ReadExact(absl::MakeConstSpan(&p, 1), kIoTimeout);
        if (!s.ok()) {
          results[2 * i + 1] = s;
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = Seconds(std::chrono::steady_clock::now() - start);
  if (fresh != nullptr) ::munmap(fresh, total);
  for (const absl::Status& s : results) {
    if (!s.ok()) Die("raw tcp", s);
  }
  return static_cast<double>(per_conn * conns) / seconds;
}

struct MigrationResult {
  double total_based = 0;   // bytes/s over total_time - setup_time
  double round0_based = 0;  // bytes/s over round 0
  double downtime_ms = 0;
  uint32_t rounds = 0;
  double total_ms = 0;
  double setup_ms = 0;
  DowntimeBreakdown breakdown;
  double audit_ms = 0;  // Source audit (sent: after the commit; full: in the pause).
  double total_incl_setup = 0;  // bytes/s over total_time (setup included)
  double prealloc_ms = 0;       // ReceivedMigration::prealloc_ms
  CompressionStats compression;
};

struct TlsPair {
  std::shared_ptr<const TlsContext> source, destination;
};

// How the destination memory is made (ReceiverOptions).
struct Destination {
  bool prealloc = false;
  bool as_files = false;  // Anonymous regions as files under root.
};

MigrationResult Migrate(FakeVm& vm, uint32_t channels, const std::string& root,
                        SenderOptions::Verify verify = SenderOptions::Verify::kSent,
                        const TlsPair& tls = {}, const Destination& destination = {},
                        const wire::CompressionSpec& compression = {},
                        uint64_t max_bandwidth = 0) {
  ReceiverOptions ropts;
  ropts.prealloc = destination.prealloc;
  ropts.anonymous_regions_as_files = destination.as_files;
  ropts.tls = tls.destination;
  ropts.root_dir = root;
  ropts.io_timeout = kIoTimeout;
  ropts.accept_timeout = absl::Seconds(60);
  std::unique_ptr<Receiver> receiver =
      Check(Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), ropts), "receiver listen");
  absl::StatusOr<ReceivedMigration> received = absl::UnknownError("not run");
  std::thread receive([&] { received = receiver->ReceiveOne(); });

  SenderOptions sopts;
  sopts.destination = receiver->endpoint();
  sopts.channels = channels;
  sopts.io_timeout = kIoTimeout;
  sopts.verify = verify;
  sopts.tls = tls.source;
  sopts.compression = compression;
  sopts.max_bandwidth = max_bandwidth;
  Sender sender(sopts);
  absl::StatusOr<MigrationStats> stats = sender.Migrate(vm.memory(), vm);
  if (!stats.ok()) receiver->Cancel();
  receive.join();
  if (!stats.ok()) Die("migrate", stats.status());
  if (!received.ok()) Die("receive", received.status());

  const double memory = static_cast<double>(vm.memory().total_size());
  MigrationResult r;
  r.total_ms = stats->total_time_ms;
  r.setup_ms = stats->setup_time_ms;
  r.total_based = memory / ((stats->total_time_ms - stats->setup_time_ms) / 1000.0);
  if (!stats->round_stats.empty()) {
    r.round0_based = memory / (stats->round_stats[0].duration_ms / 1000.0);
  }
  r.downtime_ms = stats->downtime_ms;
  r.rounds = stats->rounds;
  r.breakdown = stats->downtime_breakdown;
  r.audit_ms = stats->audit.ms;
  r.total_incl_setup = memory / (stats->total_time_ms / 1000.0);
  r.prealloc_ms = received->prealloc_ms;
  r.compression = stats->compression;
  return r;
}

void PrintMigration(const std::string& name, const MigrationResult& r, bool effective) {
  const char* unit = effective ? "GB/s (effective)" : "GB/s";
  Print(name, r.total_based / 1e9, unit);
  Print(name + "_round0", r.round0_based / 1e9, unit);
  Print(name + "_downtime_ms", r.downtime_ms, "ms");
  Print(name + "_downtime_final_round_ms", r.breakdown.final_round_ms, "ms");
  Print(name + "_downtime_verify_ms", r.breakdown.verify_ms, "ms");
  Print(name + "_downtime_completion_ms", r.breakdown.completion_ms, "ms");
  Print(name + "_audit_ms", r.audit_ms, "ms");
  Print(name + "_rounds", r.rounds, "rounds");
  Print(name + "_total_ms", r.total_ms, "ms");
  Print(name + "_setup_ms", r.setup_ms, "ms");
}

// One anonymous region at guest address 0.
FakeRegionSpec Region(uint64_t size) {
  FakeRegionSpec spec;
  spec.size = size;
  return spec;
}

int Main(int argc, char** argv) {
  double gib = 2;
  std::vector<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.rfind("--only=", 0) == 0) {
      only.emplace_back(arg.substr(7));
      continue;
    }
    if (arg.rfind("--gib=", 0) == 0) {
      char* end = nullptr;
      gib = std::strtod(argv[i] + 6, &end);
      if (end != argv[i] + 6 && *end == '\0' && gib > 0) continue;
    }
    std::fprintf(stderr, "usage: %s [--gib=N] [--only=CASE]...\n"
                 "  --gib: memory size, default 2; fractions allowed\n"
                 "  --only: raw1, raw2, raw_fresh, raw_prealloc, random1, random2, prealloc,\n"
                 "          zero, verify, tls, compress or compress_capped (for profiling;\n"
                 "          default: all)\n",
                 argv[0]);
    return 2;
  }
  // Whole MiBs, so raw TCP and the region carry exactly the same byte count.
  const uint64_t bytes = std::max<uint64_t>(
      kMiB, static_cast<uint64_t>(gib * static_cast<double>(kGiB)) / kMiB * kMiB);

  char root_template[] = "/tmp/livemig-bench-XXXXXX";
  if (::mkdtemp(root_template) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string root = root_template;
  struct RemoveRoot {
    std::string path;
    ~RemoveRoot() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } remove_root{root};

  auto run = [&](const char* name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  Print("memory_bytes", static_cast<double>(bytes), "bytes");

  double raw1 = 0, raw2 = 0;
  if (run("raw1")) {
    raw1 = RawTcp(bytes, 1);
    Print("raw_tcp_1conn", raw1 / 1e9, "GB/s");
  }
  if (run("raw2")) {
    raw2 = RawTcp(bytes, 2);
    Print("raw_tcp_2conn", raw2 / 1e9, "GB/s");
  }

  // References for the receiver's cost of landing bytes in fresh memory.
  if (run("raw_fresh")) {
    Print("raw_tcp_2conn_into_fresh_shmem",
          RawTcp(bytes, 2, Sink::kFreshShmem) / 1e9, "GB/s");
    Print("raw_tcp_2conn_into_fresh_private_thp",
          RawTcp(bytes, 2, Sink::kFreshPrivateThp) / 1e9, "GB/s");
  }

  double raw_prealloc_shmem = 0, raw_prealloc_thp = 0, raw_from_memory = 0;
  if (run("raw_prealloc")) {
    raw_prealloc_shmem = RawTcp(bytes, 2, Sink::kFreshShmem, true);
    Print("raw_tcp_2conn_into_prealloc_shmem", raw_prealloc_shmem / 1e9, "GB/s");
    raw_prealloc_thp = RawTcp(bytes, 2, Sink::kFreshPrivateThp, true);
    Print("raw_tcp_2conn_into_prealloc_private_thp", raw_prealloc_thp / 1e9, "GB/s");
    // A source of the guest's size, every page written (random, as the
    // migrations' guests are), so the writers read it from memory.
    std::vector<uint8_t> source(bytes);
    std::mt19937_64 rng(7);
    for (uint64_t at = 0; at + 8 <= bytes; at += 8) {
      const uint64_t v = rng();
      std::memcpy(source.data() + at, &v, 8);
    }
    // Three, as the migrations it is compared with: one run swung 3.4-4.4.
    std::vector<double> from_memory;
    for (int i = 0; i < 3; ++i) {
      from_memory.push_back(RawTcp(bytes, 2, Sink::kFreshShmem, true, source.data()));
    }
    std::sort(from_memory.begin(), from_memory.end());
    raw_from_memory = from_memory[1];
    Print("raw_tcp_2conn_from_memory_into_prealloc_shmem_median", raw_from_memory / 1e9,
          "GB/s");
  }

  if (run("random1") || run("random2")) {
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kRandom, 42), "fake vm (random)");
    // The same (idle, unchanged) VM serves both runs: each Migrate() starts
    // from scratch and round 0 sends every page.
    // Warm-up, not a figure: the first migration in a process pays for the
    // receiver's first touch of pages the kernel has never handed out (on
    // this VM that doubled or tripled the time of whichever case ran first);
    // later ones reuse the pages it freed, so 1conn and 2conn compare fairly.
    const MigrationResult warm = Migrate(*vm, 2, root);
    Print("warmup_random_2conn", warm.total_based / 1e9, "GB/s (discarded)");
    if (run("random1")) {
      const MigrationResult r1 = Migrate(*vm, 1, root);
      PrintMigration("livemig_random_1conn", r1, false);
      if (raw1 > 0) {
        Print("ratio_1conn", r1.total_based / raw1, "x");
        Print("ratio_1conn_round0", r1.round0_based / raw1, "x");
      }
    }
    if (run("random2")) {
      const MigrationResult r2 = Migrate(*vm, 2, root);
      PrintMigration("livemig_random_2conn", r2, false);
      if (raw2 > 0) {
        Print("ratio_2conn", r2.total_based / raw2, "x");
        Print("ratio_2conn_round0", r2.round0_based / raw2, "x");
      }
    }
  }
  if (run("prealloc")) {
    // Destination memory faulted in by the readers ("fresh") or populated
    // before round 0 (ReceiverOptions::prealloc),
    // alternating, three of each; into the receiver's private anonymous
    // (THP) mappings and into files on /dev/shm (shmem, 4 KiB pages).
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kRandom, 45), "fake vm (prealloc)");
    (void)Migrate(*vm, 2, root);  // Warm-up, as above.
    const std::string shm = absl::StrCat("/dev/shm/livemig-bench-", ::getpid());
    std::filesystem::create_directories(shm);
    struct Case {
      std::string name;
      std::string root;
      Destination destination;
    };
    const std::vector<Case> cases = {
        {"anon_fresh", root, {}},
        {"anon_prealloc", root, {.prealloc = true}},
        {"shm_fresh", shm, {.as_files = true}},
        {"shm_prealloc", shm, {.prealloc = true, .as_files = true}},
    };
    std::vector<std::vector<double>> rate(cases.size()), rate_all(cases.size()),
        pre_ms(cases.size());
    for (int i = 0; i < 3; ++i) {
      for (size_t c = 0; c < cases.size(); ++c) {
        const MigrationResult r =
            Migrate(*vm, 2, cases[c].root, SenderOptions::Verify::kSent, {}, cases[c].destination);
        rate[c].push_back(r.total_based);
        rate_all[c].push_back(r.total_incl_setup);
        pre_ms[c].push_back(r.prealloc_ms);
        const std::string name = absl::StrCat("livemig_random_2conn_", cases[c].name, "_", i);
        Print(name, r.total_based / 1e9, "GB/s");
        Print(name + "_incl_setup", r.total_incl_setup / 1e9, "GB/s");
        if (cases[c].destination.prealloc) Print(name + "_prealloc_ms", r.prealloc_ms, "ms");
      }
    }
    for (size_t c = 0; c < cases.size(); ++c) {
      for (auto* v : {&rate[c], &rate_all[c], &pre_ms[c]}) std::sort(v->begin(), v->end());
      const std::string name = absl::StrCat("livemig_random_2conn_", cases[c].name, "_median");
      Print(name, rate[c][1] / 1e9, "GB/s");
      Print(name + "_incl_setup", rate_all[c][1] / 1e9, "GB/s");
      if (cases[c].destination.prealloc) Print(name + "_prealloc_ms", pre_ms[c][1], "ms");
      // Against raw TCP into preallocated memory of the same kind.
      const double raw = cases[c].destination.as_files ? raw_prealloc_shmem : raw_prealloc_thp;
      if (cases[c].destination.prealloc && raw > 0) {
        const std::string ratio = absl::StrCat("ratio_2conn_", cases[c].name);
        Print(ratio, rate[c][1] / raw, "x");
        if (raw_from_memory > 0 && cases[c].destination.as_files) {
          Print(ratio + "_vs_raw_from_memory", rate[c][1] / raw_from_memory, "x");
        }
      }
    }
    std::error_code ec;
    std::filesystem::remove_all(shm, ec);
  }
  if (run("verify")) {
    // The idle guest's downtime per verification mode: what verify=full's
    // re-hash of all memory costs in the pause, against sent and off.
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kRandom, 43), "fake vm (verify)");
    (void)Migrate(*vm, 2, root);  // Warm-up, as above.
    for (const auto& [mode, name] :
         {std::pair{SenderOptions::Verify::kSent, "sent"},
          std::pair{SenderOptions::Verify::kFull, "full"},
          std::pair{SenderOptions::Verify::kOff, "off"}}) {
      const MigrationResult r = Migrate(*vm, 2, root, mode);
      const std::string prefix = absl::StrCat("verify_", name, "_idle_2conn");
      Print(prefix + "_downtime_ms", r.downtime_ms, "ms");
      Print(prefix + "_downtime_verify_ms", r.breakdown.verify_ms, "ms");
      Print(prefix + "_downtime_completion_ms", r.breakdown.completion_ms, "ms");
      Print(prefix + "_audit_ms", r.audit_ms, "ms");
      if (mode == SenderOptions::Verify::kFull) {
        Print(prefix + "_verify_ms_per_gib", r.breakdown.verify_ms / (bytes / double(kGiB)),
              "ms/GiB");
      }
    }
  }
  if (run("tls")) {
    auto certs = Check(testing::MakeTestCerts(root + "/certs"), "test certificates");
    TlsPair tls{Check(TlsContext::ForSource(certs.good, "127.0.0.1"), "source TLS"),
                Check(TlsContext::ForDestination(certs.good), "destination TLS")};
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kRandom, 44), "fake vm (tls)");
    (void)Migrate(*vm, 2, root);  // Warm-up, as above.
    std::vector<double> plain, secure;
    for (int i = 0; i < 3; ++i) {
      plain.push_back(Migrate(*vm, 2, root).total_based);
      secure.push_back(Migrate(*vm, 2, root, SenderOptions::Verify::kSent, tls).total_based);
      Print(absl::StrCat("tls_plain_2conn_", i), plain.back() / 1e9, "GB/s");
      Print(absl::StrCat("tls_tls_2conn_", i), secure.back() / 1e9, "GB/s");
    }
    std::sort(plain.begin(), plain.end());
    std::sort(secure.begin(), secure.end());
    Print("tls_plain_2conn_median", plain[1] / 1e9, "GB/s");
    Print("tls_tls_2conn_median", secure[1] / 1e9, "GB/s");
    Print("ratio_tls_2conn", secure[1] / plain[1], "x");
  }
  if (run("compress")) {
    for (const auto& [fill, fill_name] :
         {std::pair{Fill::kRandom, "random"}, std::pair{Fill::kText, "text"}}) {
      const std::vector<FakeRegionSpec> specs = {Region(bytes)};
      auto vm = Check(FakeVm::Create(specs, fill, 45), "fake vm (compress)");
      (void)Migrate(*vm, 2, root);  // Warm-up, as above.
      const std::pair<wire::CompressionSpec, const char*> codecs[] = {
          {{wire::Codec::kNone, 0}, "off"},
          {{wire::Codec::kZstd, 1}, "zstd"},
          {{wire::Codec::kLz4, 1}, "lz4"}};
      std::vector<double> rates[3];
      MigrationResult last[3];
      for (int i = 0; i < 3; ++i) {
        for (int c = 0; c < 3; ++c) {
          last[c] = Migrate(*vm, 2, root, SenderOptions::Verify::kSent, {}, {}, codecs[c].first);
          rates[c].push_back(last[c].total_based);
          Print(absl::StrCat("compress_", fill_name, "_", codecs[c].second, "_2conn_", i),
                rates[c].back() / 1e9, "GB/s");
        }
      }
      for (int c = 0; c < 3; ++c) {
        std::sort(rates[c].begin(), rates[c].end());
        const std::string name = absl::StrCat("compress_", fill_name, "_", codecs[c].second);
        Print(name + "_2conn_median", rates[c][1] / 1e9, "GB/s");
        if (c == 0) continue;
        Print(absl::StrCat("ratio_", name, "_2conn"), rates[c][1] / rates[0][1], "x");
        Print(name + "_compression_rate", last[c].compression.ratio(), "x");
        Print(name + "_busy_ms", last[c].compression.busy_ms, "ms");
        Print(name + "_raw_batches",
              static_cast<double>(last[c].compression.incompressible_batches +
                                  last[c].compression.skipped_batches),
              "batches");
      }
    }
  }
  if (run("compress_capped")) {
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kText, 46), "fake vm (compress capped)");
    constexpr uint64_t kCap = 125 * 1000 * 1000;  // A 1 Gbit/s link.
    for (const auto& [spec, name] : {std::pair{wire::CompressionSpec{wire::Codec::kNone, 0}, "off"},
                                     std::pair{wire::CompressionSpec{wire::Codec::kZstd, 1}, "zstd"},
                                     std::pair{wire::CompressionSpec{wire::Codec::kLz4, 1}, "lz4"}}) {
      const MigrationResult r =
          Migrate(*vm, 2, root, SenderOptions::Verify::kSent, {}, {}, spec, kCap);
      Print(absl::StrCat("compress_capped_text_", name, "_2conn_total_ms"), r.total_ms, "ms");
    }
  }
  if (run("zero")) {
    const std::vector<FakeRegionSpec> specs = {Region(bytes)};
    auto vm = Check(FakeVm::Create(specs, Fill::kZero, 42), "fake vm (zero)");
    // A guest whose RAM it zeroed itself: resident zero pages. (Untouched
    // shared anonymous memory would instead be faulted in by the zero check,
    // which measures the kernel's page allocator, not the engine.)
    const auto& region = vm->memory().region(0);
    std::memset(region.region().as_ptr(), 0, region.len());
    region.bitmap().ResetAddrRange(0, region.len());
    PrintMigration("livemig_zero_2conn", Migrate(*vm, 2, root), true);
  }
  return 0;
}

}  // namespace
}  // namespace livemig

int main(int argc, char** argv) { return livemig::Main(argc, argv); }
