// File: migration/capi/abi4_test.cc
//
// ABI 4's additions to the C ABI (livemig_abi4.h), from C++ over livemig.h
// only. The sender's limits, each observed end to end over 127.0.0.1: a
// BusyVm's guest rewrites all its memory every round and announces a device
// state no pause can carry, so no run converges and each ends where its
// limit says, on any machine (the bandwidth cap is held to what its token
// bucket guarantees: a floor under each round's time). Destination memory
// lent with its memfd (round 0 through the file). The sender's stats as
// JSON, parsed. Exact codes and messages on every refusal.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/capi/livemig.h"
#include "migration/capi/testing/c_fixtures.h"
#include "migration/capi/testing/json_reader.h"

namespace {

using ::livemig::capi_testing::CReceiver;
using ::livemig::capi_testing::DeviceState;
using ::livemig::capi_testing::Err;
using ::livemig::capi_testing::FakeVm;
using ::livemig::capi_testing::Guest;
using ::livemig::capi_testing::Json;
using ::livemig::capi_testing::kOps;
using ::livemig::capi_testing::NoSuchSocket;
using ::livemig::capi_testing::Pause;
using ::livemig::capi_testing::Resume;
using ::livemig::capi_testing::SenderTo;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::StartsWith;

using Configure = std::function<void(livemig_options*)>;

// Guest's layout: per region 32 pages of bytes, then 32 zero pages.
constexpr uint64_t kRawPages = 64;
constexpr uint64_t kPages = 2 * Guest::kSize / 4096;

// A VM whose guest writes all its memory again during every round: its
// collect_dirty reports every page, so the dirty volume never shrinks. The
// switchover rule budgets its device state at `hint_bytes`; the default,
// 1 PiB, fits no pause at any bandwidth a 512 KiB guest can measure.
struct BusyVm : FakeVm {
  uint64_t hint_bytes = uint64_t{1} << 50;
  int hint_sleep_ms = 0;       // Added to the end of every live round.
  std::vector<int> throttles;  // set_throttle's arguments, in order.
};

BusyVm& Busy(void* ud) { return static_cast<BusyVm&>(*static_cast<FakeVm*>(ud)); }

int CollectAll(void*, size_t, uint64_t* words, size_t num_words, char*, size_t) {
  for (size_t i = 0; i < num_words; ++i) words[i] = ~uint64_t{0};  // 64 pages a region.
  return LIVEMIG_OK;
}
uint64_t BusyHint(void* ud) {
  BusyVm& vm = Busy(ud);
  std::this_thread::sleep_for(std::chrono::milliseconds(vm.hint_sleep_ms));
  return vm.hint_bytes;
}
void RecordThrottle(void* ud, int percent) { Busy(ud).throttles.push_back(percent); }

const livemig_vm_ops kBusyOps = {Pause,    Resume,     RecordThrottle, DeviceState,
                                 BusyHint, CollectAll, nullptr};

// The JSON by the size-query convention.
std::string StatsJson(const livemig_sender* s) {
  const size_t n = livemig_sender_stats_json(s, nullptr, 0);
  std::string json(n + 1, 'x');
  EXPECT_EQ(livemig_sender_stats_json(s, json.data(), json.size()), n);
  EXPECT_EQ(json[n], '\0');
  json.resize(n);
  return json;
}

Json Parse(const std::string& text) {
  std::string error;
  std::optional<Json> json = livemig::capi_testing::ParseJson(text, &error);
  EXPECT_TRUE(json.has_value()) << error << " in " << text;
  EXPECT_EQ(json.value_or(Json()).kind, Json::Kind::kObject);
  return json.value_or(Json());
}

struct Outcome {
  int rc = -1;
  std::string message;
  livemig_stats stats{};
  std::vector<livemig_round> rounds;  // The round callback's reports.
  std::string json;                   // livemig_sender_stats_json after it.
};

void KeepRound(void* ud, const livemig_round* r) {
  static_cast<std::vector<livemig_round>*>(ud)->push_back(*r);
}

// One migrate of `guest` to `receiver` by a sender `configure` set up; the
// receiver is joined after it.
Outcome Migrate(CReceiver& receiver, const Guest& guest, FakeVm& vm, const livemig_vm_ops& ops,
                const Configure& configure) {
  Outcome out;
  livemig_sender* s = receiver.NewSender([&](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_round_callback(o, KeepRound, &out.rounds, err.out()),
              LIVEMIG_OK);
    if (configure) configure(o);
  });
  Err err;
  out.rc = livemig_sender_migrate(s, guest.memory, &ops, &vm, &out.stats, err.out());
  out.message = err.message();
  out.json = StatsJson(s);
  livemig_sender_free(s);
  receiver.Join();
  return out;
}

Configure Limits(uint32_t max_rounds, uint64_t timeout_ms, int on_limit, uint32_t stall_rounds) {
  return [=](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_limits(o, max_rounds, timeout_ms, on_limit, err.out()),
              LIVEMIG_OK)
        << err.message();
    EXPECT_EQ(livemig_options_set_stall_rounds(o, stall_rounds, err.out()), LIVEMIG_OK);
  };
}

void ExpectReceivedAsGuest(const CReceiver& receiver, const Guest& guest) {
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  ASSERT_EQ(livemig_received_num_regions(receiver.result_), 2u);
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, i, &region), LIVEMIG_OK);
    EXPECT_EQ(std::memcmp(region.host_ptr, guest.ptr[i], Guest::kSize), 0) << "region " << i;
  }
}

// ------------------------------------------------------- Refused arguments

TEST(CapiLimits, SettersRefuseBadValuesWithInvalidArgumentNamingThem) {
  livemig_options* o = livemig_options_new();
  Err err;
  auto refused = [&](int rc, const std::string& message) {
    EXPECT_EQ(rc, LIVEMIG_INVALID_ARGUMENT) << message;
    EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
    EXPECT_EQ(err.message(), message);
  };
  refused(livemig_options_set_limits(o, 0, 0, LIVEMIG_ON_LIMIT_CANCEL, err.out()),
          "max_rounds: must be at least 1, got 0");
  refused(livemig_options_set_limits(o, 1, 86400001, LIVEMIG_ON_LIMIT_CANCEL, err.out()),
          "timeout_ms: must be 0 (none) or 1 .. 86400000 ms, got 86400001");
  for (int bad : {2, -1}) {
    refused(livemig_options_set_limits(o, 1, 0, bad, err.out()),
            "on_limit: must be LIVEMIG_ON_LIMIT_CANCEL or _FORCE (0..1), got " +
                std::to_string(bad));
  }
  refused(livemig_options_set_batch_pages(o, 0, err.out()),
          "batch_pages: must be 1 .. 16384, got 0");
  refused(livemig_options_set_batch_pages(o, LIVEMIG_MAX_BATCH_PAGES + 1, err.out()),
          "batch_pages: must be 1 .. 16384, got 16385");
  refused(livemig_options_set_auto_converge(o, 1, 0, 10, 99, err.out()),
          "throttle_initial: must be 1 .. 99, got 0");
  refused(livemig_options_set_auto_converge(o, 1, 20, 0, 99, err.out()),
          "throttle_increment: must be 1 .. 99, got 0");
  refused(livemig_options_set_auto_converge(o, 1, 20, 10, 100, err.out()),
          "throttle_max: must be 1 .. 99, got 100");
  refused(livemig_options_set_auto_converge(o, 1, 50, 10, 30, err.out()),
          "throttle_initial: 50 is above throttle_max 30");

  // The bounds themselves, "none" values, and off without looking at the steps.
  EXPECT_EQ(livemig_options_set_limits(o, 1, 86400000, LIVEMIG_ON_LIMIT_FORCE, err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_limits(o, UINT32_MAX, 0, LIVEMIG_ON_LIMIT_CANCEL, err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_batch_pages(o, LIVEMIG_MAX_BATCH_PAGES, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_auto_converge(o, 1, 99, 1, 99, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_auto_converge(o, 0, 0, 0, 500, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_max_bandwidth(o, 0, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_stall_rounds(o, 0, err.out()), LIVEMIG_OK);
  EXPECT_TRUE(err.empty());

  refused(livemig_options_set_max_bandwidth(nullptr, 1, err.out()), "options: NULL");
  refused(livemig_options_set_limits(nullptr, 1, 0, 0, err.out()), "options: NULL");
  refused(livemig_options_set_stall_rounds(nullptr, 1, err.out()), "options: NULL");
  refused(livemig_options_set_auto_converge(nullptr, 0, 0, 0, 0, err.out()), "options: NULL");
  refused(livemig_options_set_batch_pages(nullptr, 1, err.out()), "options: NULL");
  refused(livemig_options_set_region_memory_fd(nullptr, nullptr, nullptr, err.out()),
          "options: NULL");
  livemig_options_free(o);
}

// -------------------------------------------------------------- Limits run

TEST(CapiLimits, MaxRoundsOneWithCancelFailsAbortedAfterRoundZeroWithoutPausing) {
  CReceiver receiver;
  Guest guest;
  BusyVm vm;
  const Outcome run = Migrate(receiver, guest, vm, kBusyOps,
                              Limits(1, 0, LIVEMIG_ON_LIMIT_CANCEL, 0));
  EXPECT_EQ(run.rc, LIVEMIG_ABORTED);
  EXPECT_THAT(run.message, StartsWith("did not converge within 1 rounds ("));
  EXPECT_EQ(run.stats.rounds, 1u);
  EXPECT_STREQ(run.stats.status, "failed");
  EXPECT_EQ(vm.pauses, 0);
  EXPECT_EQ(vm.resumes, 0);
  ASSERT_EQ(run.rounds.size(), 1u);
  EXPECT_EQ(run.rounds[0].dirtied_during_round, kPages) << "the guest rewrote everything";
  // The destination got the abort, or Join()'s cancel came first: no result.
  EXPECT_NE(receiver.rc_, LIVEMIG_OK);
  EXPECT_EQ(receiver.result_, nullptr);
  // The JSON is the failed attempt's.
  const Json json = Parse(run.json);
  EXPECT_EQ(json["status"].string, "failed");
  EXPECT_EQ(json["rounds"].number, 1);
  EXPECT_EQ(json["round-stats"].array.size(), 1u);
}

TEST(CapiLimits, MaxRoundsWithForceSwitchesOverUnconvergedAndARefusedSetKeepsThem) {
  CReceiver receiver;
  Guest guest;
  BusyVm vm;
  const Outcome run = Migrate(receiver, guest, vm, kBusyOps, [](livemig_options* o) {
    Limits(3, 0, LIVEMIG_ON_LIMIT_FORCE, 0)(o);
    Err err;
    EXPECT_EQ(livemig_options_set_limits(o, 0, 0, LIVEMIG_ON_LIMIT_CANCEL, err.out()),
              LIVEMIG_INVALID_ARGUMENT);
  });
  ASSERT_EQ(run.rc, LIVEMIG_OK) << run.message;
  EXPECT_EQ(run.stats.converged, 0);
  EXPECT_EQ(run.stats.rounds, 4u) << "3 live rounds and the final one";
  ASSERT_EQ(run.rounds.size(), 4u);
  EXPECT_EQ(run.rounds[3].final, 1);
  EXPECT_EQ(run.rounds[3].dirty_pages, kPages);
  EXPECT_EQ(vm.pauses, 1);
  EXPECT_EQ(vm.resumes, 0);
  ExpectReceivedAsGuest(receiver, guest);
}

TEST(CapiLimits, TimeoutEndsThePreCopyPhaseWithDeadlineExceededAndZeroIsNone) {
  Guest guest;
  {
    CReceiver receiver;
    BusyVm vm;
    vm.hint_sleep_ms = 5;  // Round 0 ends past the 1 ms timeout, however fast.
    const Outcome run = Migrate(receiver, guest, vm, kBusyOps,
                                Limits(30, 1, LIVEMIG_ON_LIMIT_CANCEL, 0));
    EXPECT_EQ(run.rc, LIVEMIG_DEADLINE_EXCEEDED);
    // After round 0, or (a slow machine) while it still went out: the timeout
    // cuts a live round too ("...: round 0 had not ended ...").
    EXPECT_THAT(run.message, StartsWith("did not converge within the 1ms timeout"));
    EXPECT_LE(run.stats.rounds, 1u);
    EXPECT_EQ(vm.pauses, 0);
  }
  CReceiver receiver;
  BusyVm vm;
  vm.hint_sleep_ms = 5;
  const Outcome run = Migrate(receiver, guest, vm, kBusyOps,
                              Limits(2, 0, LIVEMIG_ON_LIMIT_CANCEL, 0));
  EXPECT_EQ(run.rc, LIVEMIG_ABORTED) << "no timeout: the round limit ends it";
  EXPECT_THAT(run.message, StartsWith("did not converge within 2 rounds ("));
  EXPECT_EQ(run.stats.rounds, 2u);
}

TEST(CapiLimits, StallRoundsEndTheMigrationByOnLimitAndZeroNeverStalls) {
  Guest guest;
  struct Case {
    Configure configure;  // Null: the defaults (5 stall rounds, 30 rounds, cancel).
    int rc;
    const char* message;
    uint32_t rounds;
  };
  const Case cases[] = {
      {Limits(30, 0, LIVEMIG_ON_LIMIT_CANCEL, 2), LIVEMIG_ABORTED,
       "dirty volume did not shrink for 2 rounds (", 3},
      {nullptr, LIVEMIG_ABORTED, "dirty volume did not shrink for 5 rounds (", 6},
      {Limits(4, 0, LIVEMIG_ON_LIMIT_CANCEL, 0), LIVEMIG_ABORTED,
       "did not converge within 4 rounds (", 4},
      {Limits(30, 0, LIVEMIG_ON_LIMIT_FORCE, 2), LIVEMIG_OK, "", 4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    CReceiver receiver;
    BusyVm vm;
    const Outcome run = Migrate(receiver, guest, vm, kBusyOps, c.configure);
    EXPECT_EQ(run.rc, c.rc) << run.message;
    EXPECT_THAT(run.message, StartsWith(c.message));
    EXPECT_EQ(run.stats.rounds, c.rounds);
    if (c.rc == LIVEMIG_OK) {
      EXPECT_EQ(run.stats.converged, 0);
      ExpectReceivedAsGuest(receiver, guest);
    }
  }
}

// The guest dirties more than half of what each round sends: a throttle
// step every second round, capped at throttle_max.
TEST(CapiLimits, AutoConvergeThrottlesInItsStepsUpToTheMaxAndResetsOnFailure) {
  Guest guest;
  {
    CReceiver receiver;
    BusyVm vm;
    const Outcome run = Migrate(receiver, guest, vm, kBusyOps, [](livemig_options* o) {
      Limits(8, 0, LIVEMIG_ON_LIMIT_CANCEL, 0)(o);
      Err err;
      EXPECT_EQ(livemig_options_set_auto_converge(o, 1, 30, 30, 70, err.out()), LIVEMIG_OK);
    });
    EXPECT_EQ(run.rc, LIVEMIG_ABORTED);
    EXPECT_THAT(run.message, StartsWith("did not converge within 8 rounds ("));
    EXPECT_THAT(vm.throttles, ElementsAre(30, 60, 70, 0));
    std::vector<int> in_effect;
    for (const livemig_round& r : run.rounds) in_effect.push_back(r.throttle_percent);
    EXPECT_THAT(in_effect, ElementsAre(0, 0, 30, 30, 60, 60, 70, 70));
  }
  CReceiver receiver;
  BusyVm vm;
  const Outcome run = Migrate(receiver, guest, vm, kBusyOps, [](livemig_options* o) {
    Limits(4, 0, LIVEMIG_ON_LIMIT_CANCEL, 0)(o);
    Err err;
    EXPECT_EQ(livemig_options_set_auto_converge(o, 1, 30, 30, 70, err.out()), LIVEMIG_OK);
    EXPECT_EQ(livemig_options_set_auto_converge(o, 0, 0, 0, 0, err.out()), LIVEMIG_OK);
  });
  EXPECT_EQ(run.rc, LIVEMIG_ABORTED);
  EXPECT_THAT(vm.throttles, IsEmpty()) << "turned off again";
}

// Compressed, each batch of pages with bytes is counted once (compressed,
// tried and sent raw, or skipped): per region 32 such pages, then 32 zero.
TEST(CapiLimits, BatchPagesIsHowManyPagesEachBatchCarries) {
  Guest guest;
  struct Case {
    uint32_t batch_pages;  // 0: the default, 256.
    uint64_t batches;
  };
  for (const Case c : {Case{1, kRawPages}, Case{8, kRawPages / 8}, Case{0, 2}}) {
    SCOPED_TRACE(c.batch_pages);
    CReceiver receiver;
    livemig_sender* s = receiver.NewSender([&](livemig_options* o) {
      Err err;
      EXPECT_EQ(livemig_options_set_compression(o, "zstd", err.out()), LIVEMIG_OK);
      if (c.batch_pages != 0) {
        EXPECT_EQ(livemig_options_set_batch_pages(o, c.batch_pages, err.out()), LIVEMIG_OK);
        EXPECT_EQ(livemig_options_set_batch_pages(o, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
      }
    });
    FakeVm vm;
    Err err;
    ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
              LIVEMIG_OK)
        << err.message();
    receiver.Join();
    ExpectReceivedAsGuest(receiver, guest);
    livemig_compression_stats z;
    ASSERT_EQ(livemig_sender_compression_stats(s, &z, err.out()), LIVEMIG_OK);
    EXPECT_EQ(z.compressed_batches + z.incompressible_batches + z.skipped_batches, c.batches);
    livemig_received_stats r;
    ASSERT_EQ(livemig_received_get_stats(receiver.result_, &r, err.out()), LIVEMIG_OK);
    EXPECT_EQ(r.compressed_batches, z.compressed_batches);
    livemig_sender_free(s);
  }
}

// Its token bucket lets each round go at most one page and a 1/20 s burst
// ahead of the cap: a floor under every round's time, which a slow machine
// only raises. The guest's 512 KiB pending at the capped rate never fit the
// 300 ms pause, so the run ends at its round limit.
TEST(CapiLimits, MaxBandwidthCapsEveryRoundAndThePauseEstimateFollows) {
  constexpr uint64_t kCap = 512 * 1024;  // About 0.5 s a round.
  CReceiver receiver;
  Guest guest;
  BusyVm vm;
  vm.hint_bytes = 0;
  const Outcome run = Migrate(receiver, guest, vm, kBusyOps, [](livemig_options* o) {
    Limits(2, 0, LIVEMIG_ON_LIMIT_FORCE, 0)(o);
    Err err;
    EXPECT_EQ(livemig_options_set_batch_pages(o, 1, err.out()), LIVEMIG_OK);
    EXPECT_EQ(livemig_options_set_max_bandwidth(o, kCap, err.out()), LIVEMIG_OK);
  });
  ASSERT_EQ(run.rc, LIVEMIG_OK) << run.message;
  EXPECT_EQ(run.stats.converged, 0);
  EXPECT_EQ(run.stats.rounds, 3u);
  ASSERT_EQ(run.rounds.size(), 3u);
  for (const livemig_round& r : run.rounds) {
    SCOPED_TRACE(r.round);
    EXPECT_EQ(r.dirty_pages, kPages);
    EXPECT_GE(r.bytes, kRawPages * 4096);
    if (r.final) continue;
    EXPECT_LE(r.bandwidth_bytes_per_s, 1.25 * kCap);
    EXPECT_GE(r.expected_downtime_ms, 1000.0 * kPages * 4096 / (1.25 * kCap));
  }
  ExpectReceivedAsGuest(receiver, guest);
}

// ------------------------------------- Destination memory with its memfd

// One memfd for both regions (region i at offset i * kSize), mapped shared,
// lent with its fd; `adjust` may change what is lent.
struct VmmRam {
  static constexpr size_t kSize = 2 * Guest::kSize;
  VmmRam() {
    fd = memfd_create("abi4-ram", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, kSize), 0);
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    base = static_cast<uint8_t*>(p);
  }
  ~VmmRam() {
    munmap(base, kSize);
    close(fd);
  }
  int fd = -1;
  uint8_t* base = nullptr;
  int calls = 0;
  int rc = LIVEMIG_OK;
  std::function<void(livemig_provided_memory*)> adjust;
};

int LendRam(void* ud, const livemig_region_info* region, livemig_provided_memory* out, char*,
            size_t) {
  auto* ram = static_cast<VmmRam*>(ud);
  ++ram->calls;
  EXPECT_EQ(out->addr, nullptr);
  EXPECT_EQ(out->size, 0u);
  EXPECT_EQ(out->fd, -1);
  EXPECT_EQ(out->file_offset, 0u);
  out->addr = ram->base + region->index * Guest::kSize;
  out->size = Guest::kSize;
  out->fd = ram->fd;
  out->file_offset = region->index * Guest::kSize;
  if (ram->adjust) ram->adjust(out);
  return ram->rc;
}

// How many of this process's descriptors are open on a memfd named `name`.
int OpenMemfds(const std::string& name) {
  int n = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (target.starts_with("/memfd:" + name + " ")) ++n;
  }
  return n;
}

Configure WithRamFd(VmmRam* ram) {
  return [ram](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_region_memory_fd(o, LendRam, ram, err.out()), LIVEMIG_OK);
  };
}

TEST(CapiReceiver, RegionMemoryFdLandsRoundZeroThroughTheVmmsMemfdAndLeavesItsFdOpen) {
  for (bool lend_fd : {true, false}) {
    SCOPED_TRACE(lend_fd ? "with its fd" : "mapping only");
    VmmRam ram;
    std::memset(ram.base + Guest::kSize, 0xAB, Guest::kSize);  // Region 1's: stale bytes.
    if (!lend_fd) ram.adjust = [](livemig_provided_memory* m) { m->fd = -1; };
    Guest guest;
    {
      CReceiver receiver(WithRamFd(&ram));
      FakeVm vm;
      const Outcome run = Migrate(receiver, guest, vm, kOps, nullptr);
      ASSERT_EQ(run.rc, LIVEMIG_OK) << run.message;
      ExpectReceivedAsGuest(receiver, guest);
      EXPECT_EQ(OpenMemfds("abi4-ram"), 1) << "receive_one closed its dup before returning";
      livemig_received_stats r;
      Err err;
      ASSERT_EQ(livemig_received_get_stats(receiver.result_, &r, err.out()), LIVEMIG_OK);
      EXPECT_EQ(r.raw_pages, kRawPages);
      EXPECT_EQ(r.pages_written_to_files, lend_fd ? kRawPages : 0u);
      for (size_t i = 0; i < 2; ++i) {
        livemig_received_region region;
        ASSERT_EQ(livemig_received_region_at(receiver.result_, i, &region), LIVEMIG_OK);
        EXPECT_EQ(region.host_ptr, ram.base + i * Guest::kSize);
        EXPECT_EQ(region.file_path, nullptr);
      }
    }  // livemig_received_free, livemig_receiver_free.
    EXPECT_EQ(ram.calls, 2);
    EXPECT_NE(fcntl(ram.fd, F_GETFD), -1) << "livemig closed only its own dup";
    // In the file, so in the mapping; region 1's zero pages no longer 0xAB.
    std::vector<uint8_t> file(VmmRam::kSize);
    ASSERT_EQ(pread(ram.fd, file.data(), file.size(), 0), static_cast<ssize_t>(file.size()));
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(std::memcmp(file.data() + i * Guest::kSize, guest.ptr[i], Guest::kSize), 0)
          << "region " << i;
      EXPECT_EQ(std::memcmp(ram.base + i * Guest::kSize, guest.ptr[i], Guest::kSize), 0);
    }
  }
}

TEST(CapiReceiver, RegionMemoryFdRefusesAFileItCannotLandInNamingTheRegionAndField) {
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  VmmRam probe;
  const int read_only =
      open(("/proc/self/fd/" + std::to_string(probe.fd)).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(read_only, 0);
  constexpr int kNotOpen = 999999;
  struct Case {
    std::function<void(livemig_provided_memory*)> adjust;
    int rc;
    std::string message;  // After "region 0: the VMM's memory: ".
  };
  const std::string ram_fd = std::to_string(probe.fd);
  const Case cases[] = {
      {[](livemig_provided_memory* m) { m->fd = -2; }, LIVEMIG_INVALID_ARGUMENT,
       "fd: -2 is not a descriptor (-1: none)"},
      {[](livemig_provided_memory* m) { m->fd = kNotOpen; }, LIVEMIG_INVALID_ARGUMENT,
       "fd: 999999 is not open"},
      {[&](livemig_provided_memory* m) { m->fd = read_only; }, LIVEMIG_INVALID_ARGUMENT,
       "fd: " + std::to_string(read_only) + " is not open for writing"},
      {[](livemig_provided_memory* m) { m->file_offset = 100; }, LIVEMIG_INVALID_ARGUMENT,
       "file_offset: 0x64 is not aligned to the page size (4096)"},
      {[](livemig_provided_memory* m) { m->file_offset = VmmRam::kSize; },
       LIVEMIG_OUT_OF_RANGE,
       "fd: " + ram_fd + " is a file of 524288 bytes, too short for size 262144 at "
       "file_offset 524288"},
      {[&](livemig_provided_memory* m) { m->fd = pipe_fds[1]; }, LIVEMIG_INVALID_ARGUMENT,
       "fd: " + std::to_string(pipe_fds[1]) + " is not a regular file"},
  };
  Guest guest;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    probe.adjust = c.adjust;  // Before the receiving thread starts.
    CReceiver receiver(WithRamFd(&probe));
    FakeVm vm;
    const Outcome run = Migrate(receiver, guest, vm, kOps, nullptr);
    EXPECT_NE(run.rc, LIVEMIG_OK);
    EXPECT_EQ(vm.pauses, 0) << "refused at the region table";
    EXPECT_EQ(receiver.rc_, c.rc);
    EXPECT_EQ(receiver.error_.message(), "region 0: the VMM's memory: " + c.message);
  }
  // A refusal of the callback's own names it.
  probe.adjust = nullptr;
  probe.rc = 99;
  CReceiver receiver(WithRamFd(&probe));
  FakeVm vm;
  Migrate(receiver, guest, vm, kOps, nullptr);
  EXPECT_EQ(receiver.rc_, LIVEMIG_UNKNOWN);
  EXPECT_EQ(receiver.error_.message(),
            "region 0: the VMM's memory: the region_memory_fd callback failed (returned 99)");
  close(read_only);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

int CountDecline(void* ud, const livemig_region_info*, void**, size_t*, char*, size_t) {
  ++*static_cast<int*>(ud);
  return LIVEMIG_OK;
}

TEST(CapiOptions, RegionMemoryAndRegionMemoryFdReplaceEachOther) {
  enum Last { kAbi2, kFd, kCleared };
  Guest guest;
  for (Last last : {kAbi2, kFd, kCleared}) {
    SCOPED_TRACE(last);
    VmmRam ram;
    int abi2_calls = 0;
    CReceiver receiver([&](livemig_options* o) {
      Err err;
      if (last == kFd) {
        EXPECT_EQ(livemig_options_set_region_memory(o, CountDecline, &abi2_calls, err.out()),
                  LIVEMIG_OK);
      }
      EXPECT_EQ(livemig_options_set_region_memory_fd(o, LendRam, &ram, err.out()), LIVEMIG_OK);
      if (last == kAbi2) {
        EXPECT_EQ(livemig_options_set_region_memory(o, CountDecline, &abi2_calls, err.out()),
                  LIVEMIG_OK);
      }
      if (last == kCleared) {
        EXPECT_EQ(livemig_options_set_region_memory(o, nullptr, nullptr, err.out()),
                  LIVEMIG_OK);
      }
    });
    FakeVm vm;
    const Outcome run = Migrate(receiver, guest, vm, kOps, nullptr);
    ASSERT_EQ(run.rc, LIVEMIG_OK) << run.message;
    ExpectReceivedAsGuest(receiver, guest);
    EXPECT_EQ(abi2_calls, last == kAbi2 ? 2 : 0);
    EXPECT_EQ(ram.calls, last == kFd ? 2 : 0);
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, 0, &region), LIVEMIG_OK);
    EXPECT_EQ(region.host_ptr == ram.base, last == kFd);
  }
}

// ------------------------------------------------------------ Stats as JSON

TEST(CapiStatsJson, TheTestsReaderTakesOneValueAndRefusesTheRest) {
  std::string error;
  const std::optional<Json> v = livemig::capi_testing::ParseJson(
      R"( {"a":[-1.5e3,true,null,"x\n\u0041"],"b":{}} )", &error);
  ASSERT_TRUE(v.has_value()) << error;
  ASSERT_EQ((*v)["a"].array.size(), 4u);
  EXPECT_EQ((*v)["a"].array[0].number, -1500);
  EXPECT_TRUE((*v)["a"].array[1].boolean);
  EXPECT_EQ((*v)["a"].array[2].kind, Json::Kind::kNull);
  EXPECT_EQ((*v)["a"].array[3].string, "x\nA");
  EXPECT_EQ((*v)["b"].kind, Json::Kind::kObject);
  for (const char* bad : {"{} x", R"({"a" 1})", "[1,]", R"("open)", R"({"a":tru})", ""}) {
    EXPECT_FALSE(livemig::capi_testing::ParseJson(bad, &error).has_value()) << bad;
  }
}

TEST(CapiStatsJson, FollowsTheSizeQueryConventionAndIsNoneBeforeAnyMigrate) {
  char buf[8];
  std::memset(buf, 'x', sizeof buf);
  EXPECT_EQ(livemig_sender_stats_json(nullptr, buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "");
  livemig_sender* s = SenderTo(NoSuchSocket());
  ASSERT_NE(s, nullptr);
  const size_t n = livemig_sender_stats_json(s, nullptr, 0);
  ASSERT_GT(n, sizeof buf);
  std::memset(buf, 'x', sizeof buf);
  EXPECT_EQ(livemig_sender_stats_json(s, buf, sizeof buf), n);
  EXPECT_STREQ(buf, "{\"statu") << "truncated to buf_size - 1, NUL-terminated";
  EXPECT_EQ(livemig_sender_stats_json(s, buf, 1), n);
  EXPECT_STREQ(buf, "");
  const std::string json = StatsJson(s);
  EXPECT_EQ(json.size(), n);
  EXPECT_EQ(json.find('\n'), std::string::npos);
  const Json none = Parse(json);
  EXPECT_EQ(none["status"].string, "none");
  EXPECT_EQ(none["rounds"].number, 0);
  EXPECT_EQ(none["ram"]["transferred"].kind, Json::Kind::kNumber);
  EXPECT_EQ(none["ram"]["transferred"].number, 0);

  // An attempt that never connected: its figures.
  Guest guest;
  FakeVm vm;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, nullptr),
            LIVEMIG_UNAVAILABLE);
  EXPECT_EQ(Parse(StatsJson(s))["status"].string, "failed");
  livemig_sender_free(s);
}

TEST(CapiStatsJson, AfterAMigrationItHoldsLivemigStatsFiguresAndEveryRound) {
  CReceiver receiver;
  Guest guest;
  BusyVm vm;  // Forced over after 2 rounds: 3 round records.
  const Outcome run =
      Migrate(receiver, guest, vm, kBusyOps, Limits(2, 0, LIVEMIG_ON_LIMIT_FORCE, 0));
  ASSERT_EQ(run.rc, LIVEMIG_OK) << run.message;
  const livemig_stats& st = run.stats;
  const Json json = Parse(run.json);
  EXPECT_EQ(json["status"].string, st.status);
  EXPECT_EQ(json["rounds"].number, st.rounds);
  EXPECT_EQ(json["channels"].number, st.channels);
  EXPECT_EQ(json["converged"].kind, Json::Kind::kBool);
  EXPECT_EQ(json["converged"].boolean, st.converged != 0);
  EXPECT_NEAR(json["total-time"].number, st.total_time_ms, 0.001);
  EXPECT_NEAR(json["downtime"].number, st.downtime_ms, 0.001);
  EXPECT_NEAR(json["setup-time"].number, st.setup_time_ms, 0.001);
  const Json& ram = json["ram"];
  EXPECT_EQ(ram["transferred"].number, st.transferred_bytes);
  EXPECT_EQ(ram["total"].number, st.total_bytes);
  EXPECT_EQ(ram["normal"].number, st.normal_pages);
  EXPECT_EQ(ram["duplicate"].number, st.zero_pages);
  EXPECT_EQ(json["audit"]["ran"].boolean, st.audit_ran != 0);
  EXPECT_EQ(json["compression"]["codec"].string, "none");
  const std::vector<Json>& rounds = json["round-stats"].array;
  ASSERT_EQ(rounds.size(), 3u);
  ASSERT_EQ(run.rounds.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(rounds[i]["round"].number, i);
    EXPECT_EQ(rounds[i]["dirty-pages"].number, run.rounds[i].dirty_pages);
    EXPECT_EQ(rounds[i]["bytes"].number, run.rounds[i].bytes);
    EXPECT_EQ(rounds[i]["final"].boolean, i == 2);
  }
  EXPECT_EQ(st.normal_pages, 3 * kRawPages) << "every round sent every page";
}

}  // namespace
