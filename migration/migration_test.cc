// End-to-end tests of the engine in one process: a Sender and a Receiver over
// loopback TCP or a Unix socket, with writer threads dirtying guest memory
// during the whole migration.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/wire/frame_io.h"
#include "migration/transport/connection.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/wire/compression.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeRegionSpec;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::TempDir;
using ::livemig::testing::WorkloadSpec;

constexpr uint64_t kMiB = 1 << 20;

// The rebuilt file holds the source file's bytes for the mapped range.
void ExpectSameFileRange(const std::string& source, const std::string& rebuilt,
                         uint64_t offset, uint64_t size) {
  std::vector<uint8_t> a(size), b(size);
  int fa = ::open(source.c_str(), O_RDONLY);
  int fb = ::open(rebuilt.c_str(), O_RDONLY);
  ASSERT_GE(fa, 0);
  ASSERT_GE(fb, 0) << rebuilt;
  ASSERT_EQ(::pread(fa, a.data(), size, offset), static_cast<ssize_t>(size));
  ASSERT_EQ(::pread(fb, b.data(), size, offset), static_cast<ssize_t>(size));
  ::close(fa);
  ::close(fb);
  EXPECT_TRUE(a == b) << source << " and " << rebuilt << " differ";
}

SenderOptions Options(const Endpoint& to, uint32_t channels) {
  SenderOptions options;
  options.destination = to;
  options.channels = channels;
  options.io_timeout = absl::Seconds(20);
  options.max_rounds = 40;
  options.downtime_limit = absl::Milliseconds(300);
  return options;
}

// Random layouts (1-3 regions, file-backed or anonymous, holes, TCP or
// Unix), fills and writer rates, `runs` times, each sent with `compression`.
void RandomizedRunsRebuildTheSourceExactly(int runs, uint64_t seed,
                                           const wire::CompressionSpec& compression) {
  std::mt19937_64 rng(seed);
  for (int run = 0; run < runs; ++run) {
    SCOPED_TRACE(absl::StrCat("run ", run));
    const std::string src_dir = TempDir(absl::StrCat("src", run));
    const std::string dst_dir = TempDir(absl::StrCat("dst", run));
    std::vector<FakeRegionSpec> specs;
    uint64_t gpa = 0;
    const int regions = 1 + static_cast<int>(rng() % 3);
    for (int r = 0; r < regions; ++r) {
      FakeRegionSpec spec;
      spec.guest_addr = gpa;
      spec.size = (1 + rng() % 6) * kMiB + (rng() % 8) * 4096;
      if (rng() % 2) {
        spec.file = absl::StrCat(src_dir, "/disk", r, ".img");
        spec.file_offset = (rng() % 4) * 64 * 1024;  // Non-zero most runs.
      }
      specs.push_back(spec);
      gpa += spec.size + (rng() % 2) * kMiB;  // Sometimes a hole.
    }
    const Fill fill = static_cast<Fill>(rng() % 4);
    ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create(specs, fill, rng()));
    const bool unix_socket = run % 4 == 3;
    // Unix socket paths are limited to 107 bytes; TEST_TMPDIR is longer.
    char sock_dir[] = "/tmp/livemig-XXXXXX";
    ASSERT_NE(::mkdtemp(sock_dir), nullptr);
    const Endpoint at = unix_socket ? Endpoint::Unix(absl::StrCat(sock_dir, "/s.sock"))
                                    : Endpoint::Tcp("127.0.0.1", 0);
    ReceiverOptions receiver_options;
    receiver_options.root_dir = dst_dir;
    receiver_options.io_timeout = absl::Seconds(20);
    receiver_options.accept_timeout = absl::Seconds(30);
    receiver_options.prealloc = run % 2 == 1;  // Every other run preallocated.
    auto receiver = ReceiverThread::Start(at, receiver_options);
    ASSERT_NE(receiver, nullptr);
    WorkloadSpec work;
    work.writers = 2;
    work.pages_per_second = 2000 + rng() % 20000;
    work.seed = rng();
    vm->StartWorkload(work);
    SenderOptions options = Options(receiver->receiver->endpoint(), 1 + rng() % 4);
    options.compression = compression;
    for (size_t r = 0; r < specs.size(); ++r) {
      options.file_names.push_back(specs[r].file.empty() ? "" : absl::StrCat("disk", r, ".img"));
    }
    Sender sender(options);
    absl::StatusOr<MigrationStats> stats = sender.Migrate(vm->memory(), *vm);
    ASSERT_OK(stats);
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
    EXPECT_TRUE(vm->paused());
    EXPECT_EQ(stats->status, "completed");
    EXPECT_EQ(got.device_state, "device-state-v1");
    EXPECT_EQ(got.prealloc_bytes, receiver_options.prealloc ? vm->memory().total_size() : 0);
    ExpectSameMemory(vm->memory(), got.memory);
    for (size_t r = 0; r < specs.size(); ++r) {
      if (specs[r].file.empty()) continue;
      ExpectSameFileRange(specs[r].file, got.files[r], specs[r].file_offset, specs[r].size);
    }
    EXPECT_EQ(got.compression, compression.codec);
    EXPECT_EQ(got.compressed_batches, stats->compression.compressed_batches);
    receiver.reset();  // Closes the listener (and removes the socket file).
    std::filesystem::remove_all(sock_dir);
  }
}

TEST(Migration, RandomizedRunsRebuildTheSourceExactlyWhileWritersRun) {
  RandomizedRunsRebuildTheSourceExactly(20, 20261126, {});
}

// The representative end-to-end tests again with each codec (and level).
class CompressedMigration : public ::testing::TestWithParam<wire::CompressionSpec> {};

INSTANTIATE_TEST_SUITE_P(
    Codecs, CompressedMigration,
    ::testing::Values(wire::CompressionSpec{wire::Codec::kZstd, 1},
                      wire::CompressionSpec{wire::Codec::kZstd, 3},
                      wire::CompressionSpec{wire::Codec::kLz4, 1}),
    [](const ::testing::TestParamInfo<wire::CompressionSpec>& info) {
      return absl::StrCat(wire::CodecName(info.param.codec), info.param.level);
    });

TEST_P(CompressedMigration, RandomizedRunsRebuildTheSourceExactlyWhileWritersRun) {
  RandomizedRunsRebuildTheSourceExactly(5, 20261202, GetParam());
}

TEST_P(CompressedMigration, CompressibleMemoryTravelsCompressedAndConvergesExactly) {
  const std::string dst = TempDir("compressed_slow");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kText, 3));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  vm->StartWorkload({2, 5000, 0, 9});
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.compression = GetParam();
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  const CompressionStats& z = stats.compression;
  EXPECT_EQ(z.codec, wire::CodecName(GetParam().codec));
  EXPECT_EQ(z.level, GetParam().level);
  // Round 0 alone is 16 batches of 256 text pages, each shrinking.
  EXPECT_GE(z.compressed_batches, 16u);
  EXPECT_EQ(z.incompressible_batches, 0u);
  EXPECT_GT(z.ratio(), 2.0);
  EXPECT_GE(z.bytes_in, 16 * kMiB);
  // What went on the wire is the compressed pages, not their bytes.
  EXPECT_LT(stats.transferred, stats.normal_bytes - z.bytes_in + z.bytes_out + kMiB);
  EXPECT_EQ(got.compression, GetParam().codec);
  EXPECT_EQ(got.compressed_batches, z.compressed_batches);
  EXPECT_GT(got.decompress_ms, 0);
}

TEST_P(CompressedMigration, RandomMemoryIsSentRawAndTheChannelsBackOff) {
  const std::string dst = TempDir("compressed_random");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 6));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.compression = GetParam();
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  const CompressionStats& z = stats.compression;
  EXPECT_EQ(z.compressed_batches, 0u);
  EXPECT_EQ(got.compressed_batches, 0u);
  // 16 batches over 2 channels: each channel tried, then skipped some.
  EXPECT_GE(z.incompressible_batches, 2u);
  EXPECT_GE(z.skipped_batches, 2u);
  EXPECT_EQ(z.incompressible_batches + z.skipped_batches, 16u);  // Every RAW batch.
  EXPECT_GE(stats.transferred, 16 * kMiB);
}

TEST(Migration, SlowWriterConvergesUnderTheDowntimeLimit) {
  const std::string dst = TempDir("slow");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 32 * kMiB, "", 0}}, Fill::kMixed, 3));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  vm->StartWorkload({2, 5000, 0, 9});
  Sender sender(Options(receiver->receiver->endpoint(), 2));
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_TRUE(stats.converged);
  EXPECT_LE(stats.expected_downtime_ms, 300);
  EXPECT_GE(stats.rounds, 2u);
  ExpectSameMemory(vm->memory(), got.memory);
}

// A writer faster than a capped link: no convergence within the round limit.
TEST(Migration, FastWriterWithCancelFailsAndLeavesTheSourceRunningAndDirty) {
  const std::string dst = TempDir("fast_cancel");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 4));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  vm->StartWorkload({2, 20000, 0, 5});  // ~160 MB/s of distinct pages.
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.max_bandwidth = 20 * 1000 * 1000;  // 20 MB/s.
  options.max_rounds = 4;
  options.stall_rounds = 0;
  options.downtime_limit = absl::Milliseconds(10);
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm), StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kAborted));
  EXPECT_FALSE(vm->paused());
  EXPECT_GT(vm->memory().region(0).bitmap().CountDirty(), 0u);
  EXPECT_EQ(sender.last_stats().status, "failed");
}

TEST(Migration, FastWriterWithForceCompletesExactly) {
  const std::string dst = TempDir("fast_force");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 6));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  vm->StartWorkload({2, 20000, 0, 7});
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.max_bandwidth = 20 * 1000 * 1000;
  options.max_rounds = 3;
  options.stall_rounds = 0;
  options.downtime_limit = absl::Milliseconds(10);
  options.on_limit = SenderOptions::OnLimit::kForce;
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_FALSE(stats.converged);
  EXPECT_EQ(stats.rounds, 4u);  // 3 live rounds + the forced final one.
  ExpectSameMemory(vm->memory(), got.memory);
}

TEST(Migration, AutoConvergeThrottlesInStepsAndConverges) {
  const std::string dst = TempDir("autoconverge");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 8));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  vm->StartWorkload({2, 20000, 0, 9});
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.max_bandwidth = 40 * 1000 * 1000;
  options.auto_converge = true;
  options.max_rounds = 60;
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  const std::vector<int> throttles = vm->throttles();
  ASSERT_GE(throttles.size(), 2u);
  EXPECT_EQ(throttles[0], 20);
  if (throttles.size() > 2) {
    EXPECT_EQ(throttles[1], 30);
  }
  EXPECT_EQ(throttles.back(), 0);  // Reset when the migration ends.
  EXPECT_TRUE(stats.converged);
  ExpectSameMemory(vm->memory(), got.memory);
}

TEST(Migration, CancelFromTheSenderResumesTheVmAndKeepsPagesDirty) {
  const std::string dst = TempDir("cancel");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 10));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  // Mark everything dirty before: a failed attempt must give the bits back.
  vm->memory().region(0).bitmap().SetAddrRange(0, 16 * kMiB);
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.max_bandwidth = 8 * 1000 * 1000;  // Slow enough to cancel mid-round.
  Sender sender(options);
  std::atomic<bool> took{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    took.store(sender.Cancel());
  });
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm), StatusIs(absl::StatusCode::kCancelled));
  canceller.join();
  EXPECT_TRUE(took.load());
  EXPECT_THAT(receiver->Join(),
              StatusIsWithMessage(absl::StatusCode::kCancelled,
                                  "peer aborted: migration cancelled by the source"));
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), 16 * kMiB / 4096);
  EXPECT_EQ(sender.last_stats().status, "cancelled");
  // Cut in round 0: what it sent is counted all the same (8 MB/s for 0.3 s).
  EXPECT_GT(sender.last_stats().transferred, 0u);
  EXPECT_GT(sender.last_stats().total_time_ms, 0);
}

// Cancel() while the paused source waits for the receiver's VERIFIED (a
// durable receiver still flushing): the migration ends with Cancelled at
// once, not after io_timeout, and the guest resumes.
TEST(Migration, CancelWhileWaitingForVerifiedResumesTheVmPromptly) {
  const std::string dst = TempDir("cancel_verified");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 13));
  std::atomic<bool> in_flush{false}, sender_returned{false}, waited_out{false};
  ReceiverOptions receiver_options;
  receiver_options.root_dir = dst;
  receiver_options.io_timeout = absl::Seconds(60);
  receiver_options.durable = true;
  receiver_options.test_on_step = [&](const char* step) {
    if (std::string(step) != "flushed") return;
    in_flush.store(true);
    // Hold VERIFIED back until the sender gave up (30 s: far beyond
    // "promptly", far below the 60 s io_timeout it must not wait for).
    for (int i = 0; i < 3000 && !sender_returned.load(); ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    waited_out.store(!sender_returned.load());
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  SenderOptions options = Options(receiver->receiver->endpoint(), 2);
  options.io_timeout = absl::Seconds(60);
  Sender sender(options);
  std::thread canceller([&] {
    while (!in_flush.load()) absl::SleepFor(absl::Milliseconds(1));
    sender.Cancel();
  });
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm), StatusIs(absl::StatusCode::kCancelled));
  sender_returned.store(true);
  canceller.join();
  EXPECT_THAT(receiver->Join(),
              StatusIsWithMessage(absl::StatusCode::kCancelled,
                                  "peer aborted: migration cancelled by the source"));
  EXPECT_FALSE(waited_out.load()) << "the sender waited for VERIFIED despite Cancel()";
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->resumes(), 1);
  EXPECT_EQ(sender.last_stats().status, "cancelled");
}

// A Cancel() that comes before Migrate() (e.g. a signal while the VMM was
// still setting up) ends that attempt, and only that one.
TEST(Migration, CancelBeforeMigrateEndsTheNextAttemptOnly) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 1 * kMiB, "", 0}}, Fill::kRandom, 14));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("cancel_early"));
  Sender sender(Options(receiver->receiver->endpoint(), 1));
  EXPECT_TRUE(sender.Cancel());  // Kept for the next Migrate().
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kCancelled, "cancelled by the source"));
  EXPECT_EQ(sender.last_stats().status, "cancelled");
  EXPECT_FALSE(vm->paused());
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));  // The request was used up.
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
}

// From the handover on the guest may be the destination's: Cancel() says it
// will not take effect, and the migration completes (the next one is not
// affected either).
TEST(Migration, CancelAfterTheHandoverIsRefusedAndTheMigrationCompletes) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 2 * kMiB, "", 0}}, Fill::kRandom, 15));
  Sender* sender_ptr = nullptr;
  std::atomic<int> answers{0};
  std::atomic<bool> refused{false};
  ReceiverOptions receiver_options;
  receiver_options.root_dir = TempDir("cancel_late");
  receiver_options.io_timeout = absl::Seconds(20);
  receiver_options.test_on_step = [&](const char* step) {
    // The sender sent its handover and waits for COMMITTED.
    if (std::string(step) != "handover") return;
    refused.store(!sender_ptr->Cancel());
    answers.fetch_add(1);
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  Sender sender(Options(receiver->receiver->endpoint(), 1));
  sender_ptr = &sender;
  ASSERT_OK(sender.Migrate(vm->memory(), *vm).status());
  ASSERT_OK(receiver->Join().status());
  EXPECT_EQ(answers.load(), 1);
  EXPECT_TRUE(refused.load());
  EXPECT_TRUE(vm->paused());  // Handed over: the destination owns the guest.
  EXPECT_EQ(sender.last_stats().status, "completed");
}

// Strangers at the door while a real 8-channel migration connects: a Hello
// of another migration (claiming channel 3), and a crowd of silent
// connections. The real one is matched by its id and completes exactly.
TEST(Migration, StrayAndIdleConnectionsDoNotDisturbARealMigration) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 8 * kMiB, "", 0}}, Fill::kRandom, 15));
  ReceiverOptions receiver_options;
  receiver_options.root_dir = TempDir("strays");
  receiver_options.io_timeout = absl::Seconds(20);
  receiver_options.accept_timeout = absl::Seconds(60);
  receiver_options.handshake_timeout = absl::Milliseconds(500);
  receiver_options.max_pending_handshakes = 16;
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  const Endpoint at = receiver->receiver->endpoint();
  std::vector<std::unique_ptr<Connection>> idle;
  for (int i = 0; i < 40; ++i) {
    ASSERT_OK_AND_ASSIGN(auto c, Connection::Connect(at, absl::Seconds(5)));
    idle.push_back(std::move(c));
  }
  ASSERT_OK_AND_ASSIGN(auto stray, Connection::Connect(at, absl::Seconds(5)));
  ASSERT_OK(wire::WriteFrame(*stray, wire::FrameType::kHello,
                             MakeHello(proto::ROLE_SOURCE, 3, 8, std::string(24, 'f')),
                             absl::Seconds(5)));
  SenderOptions options = Options(at, 8);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_EQ(got.channels, 8u);
  ExpectSameMemory(vm->memory(), got.memory);
}

// A source that keeps the receiver busy past its session timeout (here a
// slow link) is cut off: both ends fail with the reason, the guest runs on.
TEST(Migration, SessionTimeoutEndsAMigrationThatTakesTooLong) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 16));
  ReceiverOptions receiver_options;
  receiver_options.root_dir = TempDir("session_timeout");
  receiver_options.io_timeout = absl::Seconds(20);
  receiver_options.session_timeout = absl::Milliseconds(300);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  SenderOptions options = Options(receiver->receiver->endpoint(), 1);
  options.max_bandwidth = 1000 * 1000;  // 4 MiB take > 4 s.
  options.batch_pages = 16;
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "did not finish within the session timeout of 300ms"));
  EXPECT_THAT(receiver->Join(),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "session timeout"));
  EXPECT_FALSE(vm->paused());
}

// A VmControl whose device state is announced as huge: the switchover rule
// counts it as pending, so an idle guest can still not converge.
class HeavyDeviceVm : public VmControl {
 public:
  explicit HeavyDeviceVm(FakeVm& vm) : vm_(vm) {}
  absl::Status Pause() override { return vm_.Pause(); }
  absl::Status Resume() override { return vm_.Resume(); }
  uint64_t DeviceStateSizeHint() override { return uint64_t{1} << 40; }

 private:
  FakeVm& vm_;
};

// A VmControl that cannot make its device state (the attempt fails in the
// pause) and then cannot resume either: the error says the guest stays
// paused, and so does the stat, instead of passing for a resumed source.
class WedgedVm : public VmControl {
 public:
  WedgedVm(FakeVm& vm, bool can_resume) : vm_(vm), can_resume_(can_resume) {}
  absl::Status Pause() override { return vm_.Pause(); }
  absl::Status Resume() override {
    return can_resume_ ? vm_.Resume() : absl::InternalError("vCPU thread gone");
  }
  absl::StatusOr<std::string> DeviceState() override {
    return absl::InternalError("device model wedged");
  }

 private:
  FakeVm& vm_;
  const bool can_resume_;
};

TEST(Migration, AResumeThatFailsAfterAFailedPauseIsReported) {
  const std::string dst = TempDir("wedged");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 14));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  WedgedVm wedged(*vm, /*can_resume=*/false);
  Sender sender(Options(receiver->receiver->endpoint(), 1));
  EXPECT_THAT(sender.Migrate(vm->memory(), wedged),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "device model wedged; the guest could not be resumed and stays "
                                  "paused: INTERNAL: vCPU thread gone"));
  EXPECT_FALSE(receiver->Join().ok());
  EXPECT_TRUE(vm->paused());
  EXPECT_EQ(sender.last_stats().status, "failed");
  EXPECT_TRUE(sender.last_stats().guest_paused);
  // The same failure where the guest does resume says nothing of the kind.
  ASSERT_OK(vm->Resume());
  auto receiver2 = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("wedged2"));
  WedgedVm resumable(*vm, /*can_resume=*/true);
  Sender again(Options(receiver2->receiver->endpoint(), 1));
  absl::StatusOr<MigrationStats> failed = again.Migrate(vm->memory(), resumable);
  EXPECT_THAT(failed, StatusIsWithMessage(absl::StatusCode::kInternal, "device model wedged"));
  EXPECT_THAT(failed.status().message(), ::testing::Not(::testing::HasSubstr("resumed")));
  (void)receiver2->Join();
  EXPECT_FALSE(vm->paused());
  EXPECT_FALSE(again.last_stats().guest_paused);
}

TEST(Migration, DeviceStateSizeCountsAsPendingForSwitchover) {
  const std::string dst = TempDir("heavy_device");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 12));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  SenderOptions options = Options(receiver->receiver->endpoint(), 1);
  options.max_rounds = 2;
  HeavyDeviceVm heavy(*vm);
  Sender sender(options);
  // Idle: nothing is pending after round 0, so no later round could help.
  EXPECT_THAT(sender.Migrate(vm->memory(), heavy),
              StatusIsWithMessage(absl::StatusCode::kAborted,
                                  "nothing is left to send, but the pause's fixed part"));
  EXPECT_FALSE(receiver->Join().ok());
  EXPECT_EQ(sender.last_stats().rounds, 1u);
  EXPECT_GT(sender.last_stats().expected_downtime_ms, 300);
}

// A destination that answers the first Hello late (here: it starts
// accepting 600 ms after the source connected, as `livemig receive
// --region` does while it populates its memory) must not make every pause
// look 1.2 s longer: the round acknowledgements bound the round trip too.
// Before they did, this idle guest failed "the pause's fixed part ...
// exceeds the downtime limit of 300 ms".
TEST(Migration, ALateFirstHelloDoesNotInflateThePauseEstimate) {
  const std::string dst = TempDir("late_hello");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 13));
  ReceiverOptions receiver_options;
  receiver_options.root_dir = dst;
  receiver_options.io_timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Receiver> receiver,
                       Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), receiver_options));
  SenderOptions options = Options(receiver->endpoint(), 1);
  options.max_rounds = 3;
  Sender sender(options);
  absl::Status sent = absl::UnknownError("not run");
  std::thread source([&] { sent = sender.Migrate(vm->memory(), *vm).status(); });
  // The source's connection waits in the listen backlog meanwhile.
  absl::SleepFor(absl::Milliseconds(600));
  absl::StatusOr<ReceivedMigration> got = receiver->ReceiveOne();
  source.join();
  ASSERT_OK(sent);
  ASSERT_OK(got.status());
  ExpectSameMemory(vm->memory(), got->memory);
  EXPECT_LT(sender.last_stats().downtime_breakdown.expected_ms, 300);
}

// Channels over sockets a manager connected and handed over (QEMU's "fd:"),
// one per channel; a count that does not match is refused before anything.
TEST(Migration, MigratesOverHandedOverSocketsOnePerChannel) {
  const std::string dst = TempDir("fd_endpoint");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 21));
  std::vector<int> source_fds, destination_fds;
  for (int i = 0; i < 2; ++i) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    source_fds.push_back(sv[0]);
    destination_fds.push_back(sv[1]);
  }
  auto receiver = ReceiverThread::Start(Endpoint::Fds(destination_fds), dst);
  ASSERT_NE(receiver, nullptr);
  SenderOptions wrong = Options(Endpoint::Fds(source_fds), 3);
  EXPECT_THAT(Sender(wrong).Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "has 2 descriptors for 3 channels"));
  Sender sender(Options(Endpoint::Fds(source_fds), 2));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm).status());
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(got.channels, 2u);
  for (int fd : source_fds) ::close(fd);
  for (int fd : destination_fds) ::close(fd);
}

// A VMM with many devices sends named sections; they arrive in order, each
// with its id and format version. No section is called "vmm", so the
// single-blob device_state stays empty.
class ManyDevicesVm : public VmControl {
 public:
  explicit ManyDevicesVm(FakeVm& vm) : vm_(vm) {}
  absl::Status Pause() override { return vm_.Pause(); }
  absl::Status Resume() override { return vm_.Resume(); }
  absl::StatusOr<std::vector<DeviceSection>> DeviceSections() override {
    return std::vector<DeviceSection>{
        {"vcpu0", 2, "rip=0x1000"}, {"ioapic", 1, std::string(70000, '\x07')}, {"rtc", 5, ""}};
  }

 private:
  FakeVm& vm_;
};

TEST(Migration, NamedDeviceSectionsArriveInOrder) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 1 * kMiB, "", 0}}, Fill::kRandom, 22));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("sections"));
  ManyDevicesVm devices(*vm);
  Sender sender(Options(receiver->receiver->endpoint(), 1));
  ASSERT_OK(sender.Migrate(vm->memory(), devices).status());
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ASSERT_OK_AND_ASSIGN(std::vector<DeviceSection> sent, devices.DeviceSections());
  EXPECT_EQ(got.device_sections, sent);
  EXPECT_EQ(got.device_state, "");
}

// Migrates `vm` over 2 channels to a receiver that lends `memory` for its
// one region; returns what it received, the receiver gone.
absl::StatusOr<ReceivedMigration> MigrateIntoVmmMemory(FakeVm& vm, const std::string& dir,
                                                       ProvidedMemory memory) {
  ReceiverOptions receiver_options;
  receiver_options.root_dir = TempDir(dir);
  receiver_options.io_timeout = absl::Seconds(20);
  receiver_options.region_memory =
      [memory](const RegionDescription&) -> absl::StatusOr<ProvidedMemory> { return memory; };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  Sender sender(Options(receiver->receiver->endpoint(), 2));
  absl::Status sent = sender.Migrate(vm.memory(), vm).status();
  absl::StatusOr<ReceivedMigration> got = std::move(receiver->Join());
  if (!sent.ok()) return sent;
  return got;
}

// The destination VMM brings its own memory (a memfd it could share with a
// vhost-user backend), holding garbage: ReceiveOne() returns that mapping,
// every page as the source had it, zero pages included.
TEST(Migration, ReceivesIntoMemoryTheDestinationVmmProvides) {
  constexpr uint64_t kSize = 8 * kMiB;
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kSize, "", 0}}, Fill::kMixed, 23));
  const int memfd = ::memfd_create("guest-ram", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  ASSERT_EQ(::ftruncate(memfd, kSize), 0);
  void* ram = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  ASSERT_NE(ram, MAP_FAILED);
  std::memset(ram, 0xee, kSize);
  {
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got,
                         MigrateIntoVmmMemory(*vm, "provided", ProvidedMemory{ram, kSize}));
    EXPECT_EQ(got.memory.region(0).region().as_ptr(), ram);
    EXPECT_TRUE(got.verified);
    ExpectSameMemory(vm->memory(), got.memory);
  }
  // Still the VMM's, still holding the guest after the receiver is gone.
  EXPECT_EQ(std::memcmp(ram, vm->memory().region(0).region().as_ptr(), kSize), 0);
  ::munmap(ram, kSize);
  ::close(memfd);
}

// The same memfd, lent with its descriptor: round 0 writes it with pwrite
// (no page of the mapping is faulted in by the receiver, and pages the memfd
// does not hold yet are not cleared first), the garbage it held is
// overwritten page for page, zero pages included, and the result is exact.
TEST(Migration, RoundZeroLandsThroughTheFileOfTheVmmsMemory) {
  constexpr uint64_t kSize = 8 * kMiB;
  constexpr uint64_t kOffset = 2 * kMiB;  // The region starts inside the file.
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kSize, "", 0}}, Fill::kMixed, 24));
  const int memfd = ::memfd_create("guest-ram", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  ASSERT_EQ(::ftruncate(memfd, kOffset + kSize), 0);
  uint8_t* file = static_cast<uint8_t*>(
      ::mmap(nullptr, kOffset + kSize, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
  ASSERT_NE(file, MAP_FAILED);
  std::memset(file, 0xee, kOffset + kSize / 2);  // Half garbage, half holes.
  uint8_t* ram = file + kOffset;
  {
    ASSERT_OK_AND_ASSIGN(
        ReceivedMigration got,
        MigrateIntoVmmMemory(*vm, "provided_fd", ProvidedMemory{ram, kSize, memfd, kOffset}));
    EXPECT_EQ(got.memory.region(0).region().as_ptr(), ram);
    EXPECT_TRUE(got.verified);
    EXPECT_EQ(got.pages_written_to_files, got.raw_pages);
    EXPECT_GT(got.raw_pages, 0u);
    ExpectSameMemory(vm->memory(), got.memory);
  }
  EXPECT_EQ(std::memcmp(ram, vm->memory().region(0).region().as_ptr(), kSize), 0);
  // The bytes before the region's offset are the VMM's, untouched.
  EXPECT_EQ(file[0], 0xee);
  EXPECT_EQ(file[kOffset - 1], 0xee);
  ::munmap(file, kOffset + kSize);
  ::close(memfd);
}

TEST(Migration, UnreachableReceiverIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kMiB, "", 0}}, Fill::kZero, 1));
  SenderOptions options = Options(Endpoint::Tcp("127.0.0.1", 1), 1);
  options.io_timeout = absl::Seconds(2);
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(vm->paused());
}

// Round 0 writes the pages of regions the receiver created as files through
// the files (internal/file_landing.h); anonymous destination memory and later
// rounds land through the mapping. Either way the result is exact.
TEST(Migration, RoundZeroLandsThroughTheFilesTheReceiverCreated) {
  const std::string src = TempDir("landing_src");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 2 * kMiB, absl::StrCat(src, "/a.img"), 0},
                                                {4 * kMiB, 1 * kMiB, "", 0}},
                                               Fill::kRandom, 11));
  for (bool anonymous_as_files : {false, true}) {
    SCOPED_TRACE(anonymous_as_files ? "anonymous as files" : "anonymous mapped");
    ReceiverOptions ropts;
    ropts.root_dir = TempDir(absl::StrCat("landing_dst", anonymous_as_files));
    ropts.anonymous_regions_as_files = anonymous_as_files;
    ropts.io_timeout = absl::Seconds(20);
    auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ropts);
    SenderOptions options = Options(receiver->receiver->endpoint(), 2);
    options.on_round = [&](const MigrationStats& s) {  // One page for round 1.
      if (s.rounds == 1) ASSERT_OK(vm->memory().WriteObj<uint8_t>(GuestAddress(8192), 3));
    };
    Sender sender(options);
    ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
    ExpectSameMemory(vm->memory(), got.memory);
    ASSERT_GE(stats.rounds, 2u);
    const uint64_t file_pages = 2 * kMiB / 4096 + (anonymous_as_files ? kMiB / 4096 : 0);
    EXPECT_EQ(got.pages_written_to_files, file_pages);
    EXPECT_GT(got.raw_pages, got.pages_written_to_files);  // Round 1's page.
    // The table as the VMM sees it (destination_memory.h), as rebuilt.
    ASSERT_EQ(got.regions.size(), 2u);
    EXPECT_EQ(got.regions[0].backing, RegionDescription::Backing::kFile);
    EXPECT_EQ(got.regions[0].file_path, "region-0.mem");
    EXPECT_EQ(got.regions[0].size, 2 * kMiB);
    EXPECT_EQ(got.regions[1].index, 1u);
    EXPECT_EQ(got.regions[1].guest_addr, 4 * kMiB);
    EXPECT_EQ(got.regions[1].backing, anonymous_as_files ? RegionDescription::Backing::kFile
                                                         : RegionDescription::Backing::kAnonymous);
    ASSERT_OK(vm->Resume());
  }
}

TEST(Migration, ZeroPagesTravelAsRunsNotBytes) {
  const std::string dst = TempDir("zero");
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 8 * kMiB, "", 0}}, Fill::kZero, 1));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), dst);
  Sender sender(Options(receiver->receiver->endpoint(), 2));
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_EQ(stats.duplicate, 8 * kMiB / 4096);
  EXPECT_EQ(stats.normal, 0u);
  EXPECT_LT(stats.transferred, 64 * 1024u);
  ExpectSameMemory(vm->memory(), got.memory);
}

}  // namespace
}  // namespace livemig
