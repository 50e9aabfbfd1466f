// File: migration/capi/abi3_test.cc
//
// ABI 3's additions to the C ABI, from C++ over livemig.h only: page-batch
// compression (the sender's spec string, the receiver's accepted codecs, the
// figures on both sides), the receiver's preallocation and its other
// counts, and the sender's progress and round callbacks. Exact codes and
// message facts on the failure paths; round trips through the C receiver.
#include <sys/socket.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/capi/livemig.h"
#include "migration/capi/testing/c_fixtures.h"

namespace {

using ::livemig::capi_testing::CReceiver;
using ::livemig::capi_testing::Err;
using ::livemig::capi_testing::FakeVm;
using ::livemig::capi_testing::Guest;
using ::livemig::capi_testing::kOps;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A sender to 127.0.0.1:`port` with more options set by `configure`.
livemig_sender* SenderWith(uint16_t port,
                           const std::function<void(livemig_options*)>& configure) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_tcp(o, "127.0.0.1", port, err.out()), LIVEMIG_OK);
  configure(o);
  livemig_sender* s = livemig_sender_new(o, err.out());
  livemig_options_free(o);
  EXPECT_NE(s, nullptr) << err.message();
  return s;
}

void ExpectReceivedAsGuest(const livemig_received* result, const Guest& guest) {
  ASSERT_EQ(livemig_received_num_regions(result), 2u);
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(result, i, &region), LIVEMIG_OK);
    EXPECT_EQ(std::memcmp(region.host_ptr, guest.ptr[i], Guest::kSize), 0) << "region " << i;
  }
}

// ------------------------------------------------------------ Option setters

TEST(CapiCompression, SpecStringsAreLivemigSendsCompressForms) {
  livemig_options* o = livemig_options_new();
  Err err;
  for (const char* good : {"none", "zstd", "zstd:1", "zstd:19", "lz4", "lz4:65537"}) {
    EXPECT_EQ(livemig_options_set_compression(o, good, err.out()), LIVEMIG_OK) << good;
    EXPECT_TRUE(err.empty());
  }
  livemig_options_free(o);
}

TEST(CapiCompression, BadSpecIsInvalidArgumentNamingTheOptionAndTheAcceptedForms) {
  livemig_options* o = livemig_options_new();
  Err err;
  const std::string forms =
      "expected none, zstd, zstd:LEVEL (1..19), lz4 or lz4:ACCELERATION (1..65537)";
  EXPECT_EQ(livemig_options_set_compression(o, "gzip", err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "compression: \"gzip\": " + forms);
  EXPECT_EQ(livemig_options_set_compression(o, "zstd:20", err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "compression: \"zstd:20\": zstd levels are 1..19; " + forms);
  EXPECT_EQ(livemig_options_set_compression(o, "lz4:0", err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), StartsWith("compression: \"lz4:0\": lz4 accelerations are"));
  EXPECT_EQ(livemig_options_set_compression(o, " zstd", err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(livemig_options_set_compression(o, "", err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "compression: \"\": " + forms);
  EXPECT_EQ(livemig_options_set_compression(o, nullptr, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "compression: NULL");
  EXPECT_EQ(livemig_options_set_compression(nullptr, "zstd", err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  livemig_options_free(o);
}

TEST(CapiCompression, AcceptCompressionRefusesUnknownBitsNamingThem) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_accept_compression(o, LIVEMIG_ACCEPT_ZSTD | LIVEMIG_ACCEPT_LZ4,
                                                   err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_accept_compression(o, 0, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_accept_compression(o, 1u << LIVEMIG_CODEC_NONE, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(),
            "accept_compression: unknown bits 0x1 in 0x1; the codecs are "
            "LIVEMIG_ACCEPT_ZSTD (0x2) and LIVEMIG_ACCEPT_LZ4 (0x4)");
  EXPECT_EQ(livemig_options_set_accept_compression(o, 0x12, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), StartsWith("accept_compression: unknown bits 0x10 in 0x12;"));
  EXPECT_EQ(livemig_options_set_accept_compression(nullptr, 0, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  livemig_options_free(o);
}

void NoProgress(void*, const livemig_progress*) {}
void NoRound(void*, const livemig_round*) {}

TEST(CapiProgress, SetProgressRefusesAnIntervalOutOfRangeAndNullClears) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_progress(o, NoProgress, nullptr, 0, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "progress_interval_ms: must be 1 .. 86400000 ms, got 0");
  EXPECT_EQ(livemig_options_set_progress(o, NoProgress, nullptr, 86400001, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(livemig_options_set_progress(o, NoProgress, nullptr, 1, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_progress(o, nullptr, nullptr, 0, err.out()), LIVEMIG_OK)
      << "NULL fn clears, whatever the interval";
  EXPECT_EQ(livemig_options_set_round_callback(o, NoRound, nullptr, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_round_callback(o, nullptr, nullptr, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_progress(nullptr, NoProgress, nullptr, 1, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  EXPECT_EQ(livemig_options_set_round_callback(nullptr, NoRound, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(livemig_options_set_prealloc(nullptr, 1, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  livemig_options_free(o);
}

TEST(CapiStats, StatsAccessorsNameTheirNullArguments) {
  Err err;
  livemig_compression_stats c;
  EXPECT_EQ(livemig_sender_compression_stats(nullptr, &c, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "sender: NULL");
  livemig_received_stats r;
  EXPECT_EQ(livemig_received_get_stats(nullptr, &r, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "result: NULL");

  livemig_sender* s = SenderWith(7000, [](livemig_options*) {});
  EXPECT_EQ(livemig_sender_compression_stats(s, nullptr, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "stats_out: NULL");
  std::memset(&c, 0xff, sizeof c);
  ASSERT_EQ(livemig_sender_compression_stats(s, &c, err.out()), LIVEMIG_OK);
  EXPECT_EQ(c.codec, LIVEMIG_CODEC_NONE) << "before any migrate";
  EXPECT_EQ(c.level, 0);
  EXPECT_EQ(c.compressed_batches, 0u);
  EXPECT_EQ(c.compressed_bytes, 0u);
  EXPECT_EQ(c.compression_rate, 0.0);
  livemig_sender_free(s);
}

// --------------------------------------------------------- Compression runs

// Guest's regions are half a 256-byte pattern (compressible), half zero.
TEST(CapiCompression, ZstdMigrationCompressesCompressibleMemoryAndBothSidesCountIt) {
  CReceiver receiver;
  livemig_sender* s = SenderWith(receiver.port_, [](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_compression(o, "zstd:3", err.out()), LIVEMIG_OK);
  });
  Guest guest;
  FakeVm vm;
  livemig_stats stats;
  Err err;
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()), LIVEMIG_OK)
      << err.message();
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  ExpectReceivedAsGuest(receiver.result_, guest);

  livemig_compression_stats c;
  ASSERT_EQ(livemig_sender_compression_stats(s, &c, err.out()), LIVEMIG_OK);
  EXPECT_EQ(c.codec, LIVEMIG_CODEC_ZSTD);
  EXPECT_EQ(c.level, 3);
  EXPECT_GT(c.compressed_batches, 0u);
  EXPECT_GT(c.bytes_in, 0u);
  EXPECT_LT(c.compressed_bytes, c.bytes_in / 4) << "a repeating pattern shrinks a lot";
  EXPECT_DOUBLE_EQ(c.compression_rate,
                   static_cast<double>(c.bytes_in) / static_cast<double>(c.compressed_bytes));
  EXPECT_GE(c.busy_ms, 0.0);
  // Fewer bytes on the wire than the pages' bytes.
  EXPECT_LT(stats.transferred_bytes, stats.normal_pages * 4096);

  livemig_received_stats r;
  ASSERT_EQ(livemig_received_get_stats(receiver.result_, &r, err.out()), LIVEMIG_OK);
  EXPECT_EQ(r.compression, LIVEMIG_CODEC_ZSTD);
  EXPECT_EQ(r.compressed_batches, c.compressed_batches);
  EXPECT_EQ(r.raw_pages, stats.normal_pages);
  EXPECT_EQ(r.zero_pages, stats.zero_pages);
  EXPECT_EQ(r.rounds, stats.rounds);
  EXPECT_GE(r.decompress_ms, 0.0);
  livemig_sender_free(s);
}

TEST(CapiCompression, DestinationAcceptingNoCodecFailsTheSenderBeforeAnyPageNamingIt) {
  CReceiver receiver([](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_accept_compression(o, 0, err.out()), LIVEMIG_OK);
  });
  livemig_sender* s = SenderWith(receiver.port_, [](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_compression(o, "zstd", err.out()), LIVEMIG_OK);
  });
  Guest guest;
  FakeVm vm;
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_FAILED_PRECONDITION);
  EXPECT_THAT(err.message(),
              HasSubstr("asks for zstd compression; this destination accepts no compression"));
  EXPECT_EQ(stats.normal_pages, 0u);
  EXPECT_EQ(vm.pauses, 0);
  // The refused source never became a migration: the destination was still
  // waiting for one when Join() cancelled it.
  receiver.Join();
  EXPECT_EQ(receiver.rc_, LIVEMIG_CANCELLED);
  EXPECT_EQ(receiver.error_.message(), "cancelled while waiting for a source");
  livemig_sender_free(s);
}

TEST(CapiCompression, DestinationAcceptingOnlyZstdRefusesLz4AndTakesZstd) {
  CReceiver refusing([](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_accept_compression(o, LIVEMIG_ACCEPT_ZSTD, err.out()),
              LIVEMIG_OK);
  });
  livemig_sender* s = SenderWith(refusing.port_, [](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_compression(o, "lz4", err.out()), LIVEMIG_OK);
  });
  Guest guest;
  FakeVm vm;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
            LIVEMIG_FAILED_PRECONDITION);
  EXPECT_THAT(err.message(),
              HasSubstr("asks for lz4 compression; this destination accepts zstd"));
  livemig_sender_free(s);

  CReceiver taking([](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_accept_compression(o, LIVEMIG_ACCEPT_ZSTD, err.out()),
              LIVEMIG_OK);
  });
  s = SenderWith(taking.port_, [](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_compression(o, "zstd", err.out()), LIVEMIG_OK);
  });
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()), LIVEMIG_OK)
      << err.message();
  taking.Join();
  ASSERT_EQ(taking.rc_, LIVEMIG_OK) << taking.error_.message();
  ExpectReceivedAsGuest(taking.result_, guest);
  livemig_sender_free(s);
}

// ------------------------------------------------------ Receiver's figures

TEST(CapiReceiver, PreallocPopulatesEveryRegionAndReportsItsBytes) {
  for (int prealloc : {1, 0}) {
    SCOPED_TRACE(prealloc ? "prealloc" : "no prealloc");
    CReceiver receiver([prealloc](livemig_options* o) {
      Err err;
      EXPECT_EQ(livemig_options_set_prealloc(o, prealloc, err.out()), LIVEMIG_OK);
    });
    livemig_sender* s = receiver.NewSender();
    Guest guest;
    FakeVm vm;
    Err err;
    ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
              LIVEMIG_OK)
        << err.message();
    receiver.Join();
    ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
    ExpectReceivedAsGuest(receiver.result_, guest);
    livemig_received_stats r;
    ASSERT_EQ(livemig_received_get_stats(receiver.result_, &r, err.out()), LIVEMIG_OK);
    EXPECT_EQ(r.prealloc_bytes, prealloc ? 2 * Guest::kSize : 0u);
    if (!prealloc) {
      EXPECT_EQ(r.prealloc_ms, 0.0);
    }
    EXPECT_EQ(r.compression, LIVEMIG_CODEC_NONE);
    EXPECT_EQ(r.compressed_batches, 0u);
    EXPECT_EQ(r.decompress_ms, 0.0);
    livemig_sender_free(s);
  }
}

// Round 0 lands through the files a receiver with anonymous_as_files makes.
TEST(CapiReceiver, ReceivedStatsCountPagesWrittenThroughFiles) {
  char dir_template[] = "/tmp/livemig-abi3-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  CReceiver receiver([&](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_root_dir(o, dir.c_str(), 1, err.out()), LIVEMIG_OK);
  });
  livemig_sender* s = receiver.NewSender();
  Guest guest;
  FakeVm vm;
  livemig_stats stats;
  Err err;
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()), LIVEMIG_OK)
      << err.message();
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  ExpectReceivedAsGuest(receiver.result_, guest);
  livemig_received_stats r;
  ASSERT_EQ(livemig_received_get_stats(receiver.result_, &r, err.out()), LIVEMIG_OK);
  // Half of each region's 64 pages carry bytes; nothing was written again.
  EXPECT_EQ(r.raw_pages, 64u);
  EXPECT_EQ(r.pages_written_to_files, 64u);
  EXPECT_EQ(r.zero_pages, 64u);
  EXPECT_EQ(r.channels, stats.channels);
  EXPECT_GT(r.bytes_received, 64u * 4096);
  livemig_sender_free(s);
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, i, &region), LIVEMIG_OK);
    if (region.file_path != nullptr) unlink(region.file_path);
  }
  rmdir(dir.c_str());
}

// ------------------------------------------------ Progress and round reports

// One channel through a relay the test controls: source <-> relay <->
// destination over two socketpairs. Past the first `free_bytes` towards the
// destination, the relay forwards one chunk per progress report (up to
// `gated_chunks` chunks), so the sender's channel is held busy on a full
// socket until it reports: a number of reports that depends on the work
// gated, not on the machine's speed.
class GatedRelay {
 public:
  static constexpr size_t kChunk = 64 * 1024;
  GatedRelay(size_t free_bytes, int gated_chunks)
      : free_bytes_(free_bytes), gated_chunks_(gated_chunks) {
    int a[2], b[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a), 0);
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b), 0);
    source_fd = a[0];
    relay_in_ = a[1];
    relay_out_ = b[0];
    destination_fd = b[1];
    forward_ = std::thread([this] { Forward(); });
    backward_ = std::thread([this] { Copy(relay_out_, relay_in_, nullptr); });
  }
  ~GatedRelay() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    shutdown(relay_in_, SHUT_RDWR);
    shutdown(relay_out_, SHUT_RDWR);
    forward_.join();
    backward_.join();
    for (int fd : {source_fd, destination_fd, relay_in_, relay_out_}) close(fd);
  }
  // Called by the progress callback.
  void Reported() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++reports_;
    }
    cv_.notify_all();
  }
  int source_fd = -1;
  int destination_fd = -1;

 private:
  void Forward() {
    size_t forwarded = 0;
    int gated = 0;
    Copy(relay_in_, relay_out_, [&](size_t n) {
      forwarded += n;
      if (forwarded < free_bytes_ || gated >= gated_chunks_) return;
      // Wait for one more report than the chunks let through so far; a
      // generous bound only so that a broken callback fails the test.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(60), [&] { return stop_ || reports_ > gated; });
      ++gated;
    });
  }
  void Copy(int from, int to, const std::function<void(size_t)>& after_chunk) {
    std::vector<char> buf(kChunk);
    for (;;) {
      const ssize_t n = read(from, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      for (ssize_t done = 0; done < n;) {
        const ssize_t w = send(to, buf.data() + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        done += w;
      }
      if (after_chunk) after_chunk(static_cast<size_t>(n));
    }
    shutdown(to, SHUT_WR);
  }

  const size_t free_bytes_;
  const int gated_chunks_;
  int relay_in_ = -1;
  int relay_out_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  int reports_ = 0;
  bool stop_ = false;
  std::thread forward_;
  std::thread backward_;
};

struct Reports {
  GatedRelay* relay = nullptr;
  std::vector<livemig_progress> progress;
  std::vector<livemig_round> rounds;
  FakeVm* vm = nullptr;
  int progress_while_paused = 0;
};

void OnProgress(void* ud, const livemig_progress* p) {
  auto* r = static_cast<Reports*>(ud);
  r->progress.push_back(*p);
  if (r->vm->pauses > r->vm->resumes) ++r->progress_while_paused;
  r->relay->Reported();
}

void OnRound(void* ud, const livemig_round* round) {
  static_cast<Reports*>(ud)->rounds.push_back(*round);
}

TEST(CapiProgress, ReportsLiveRoundsInOrderAndRoundsEndWithTheFinalOne) {
  constexpr size_t kSize = 8 << 20;  // Far more than the sockets hold.
  void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* bytes = static_cast<uint64_t*>(p);
  uint64_t x = 88172645463325252ull;  // xorshift64: incompressible, no zero page.
  for (size_t i = 0; i < kSize / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bytes[i] = x;
  }
  livemig_memory* memory = livemig_memory_new();
  Err err;
  ASSERT_EQ(livemig_memory_add_region(memory, 0, p, kSize, err.out()), LIVEMIG_OK);

  constexpr int kGated = 6;
  GatedRelay relay(/*free_bytes=*/1 << 20, kGated);
  livemig_options* o = livemig_options_new();
  ASSERT_EQ(livemig_options_set_fds(o, &relay.destination_fd, 1, err.out()), LIVEMIG_OK);
  livemig_receiver* r = livemig_receiver_listen(o, err.out());
  ASSERT_NE(r, nullptr) << err.message();
  FakeVm vm;
  Reports reports;
  reports.relay = &relay;
  reports.vm = &vm;
  ASSERT_EQ(livemig_options_set_fds(o, &relay.source_fd, 1, err.out()), LIVEMIG_OK);
  ASSERT_EQ(livemig_options_set_progress(o, OnProgress, &reports, 1, err.out()), LIVEMIG_OK);
  ASSERT_EQ(livemig_options_set_round_callback(o, OnRound, &reports, err.out()), LIVEMIG_OK);
  livemig_sender* s = livemig_sender_new(o, err.out());
  ASSERT_NE(s, nullptr) << err.message();
  livemig_options_free(o);

  livemig_received* result = nullptr;
  int receive_rc = -1;
  Err receive_err;
  std::thread receiving(
      [&] { receive_rc = livemig_receiver_receive_one(r, &result, receive_err.out()); });
  livemig_stats stats;
  const int rc = livemig_sender_migrate(s, memory, &kOps, &vm, &stats, err.out());
  if (rc != LIVEMIG_OK) livemig_receiver_cancel(r);
  receiving.join();
  ASSERT_EQ(rc, LIVEMIG_OK) << err.message();
  ASSERT_EQ(receive_rc, LIVEMIG_OK) << receive_err.message();
  livemig_received_region region;
  ASSERT_EQ(livemig_received_region_at(result, 0, &region), LIVEMIG_OK);
  EXPECT_EQ(std::memcmp(region.host_ptr, p, kSize), 0);

  // Every round reported once, in order, the last one the final one.
  ASSERT_EQ(reports.rounds.size(), stats.rounds);
  ASSERT_GE(stats.rounds, 2u);
  for (size_t i = 0; i < reports.rounds.size(); ++i) {
    EXPECT_EQ(reports.rounds[i].round, i);
    EXPECT_EQ(reports.rounds[i].final, i + 1 == reports.rounds.size() ? 1 : 0) << "round " << i;
  }
  EXPECT_EQ(reports.rounds[0].dirty_pages, kSize / 4096);
  EXPECT_EQ(reports.rounds[0].zero_pages, 0u);
  const uint32_t final_round = reports.rounds.back().round;

  // Each gated chunk waited for a report: at least that many, all of live
  // rounds, never of the final one, never while paused, in order.
  ASSERT_GE(reports.progress.size(), static_cast<size_t>(kGated));
  EXPECT_EQ(reports.progress_while_paused, 0);
  EXPECT_EQ(reports.progress.front().round, 0u);
  EXPECT_EQ(reports.progress.front().round_pages, kSize / 4096);
  EXPECT_EQ(reports.progress.front().total_bytes, kSize);
  EXPECT_LT(reports.progress.front().round_pages_sent, kSize / 4096)
      << "the first report came while round 0 was held up";
  for (size_t i = 0; i < reports.progress.size(); ++i) {
    const livemig_progress& b = reports.progress[i];
    EXPECT_LT(b.round, final_round) << "report " << i;
    EXPECT_LE(b.round_pages_sent, b.round_pages);
    EXPECT_LE(b.transferred_bytes, stats.transferred_bytes);
    if (i == 0) continue;
    const livemig_progress& a = reports.progress[i - 1];
    EXPECT_GE(b.round, a.round) << "report " << i;
    if (a.round == b.round) {
      EXPECT_GE(b.round_pages_sent, a.round_pages_sent) << "report " << i;
    }
    EXPECT_GE(b.transferred_bytes, a.transferred_bytes) << "report " << i;
    EXPECT_GE(b.elapsed_ms, a.elapsed_ms) << "report " << i;
  }
  livemig_received_free(result);
  livemig_receiver_free(r);
  livemig_sender_free(s);
  livemig_memory_free(memory);
  munmap(p, kSize);
}

}  // namespace
