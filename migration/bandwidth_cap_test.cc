// A bandwidth cap never starves the receiver: each batch is small enough to
// go out within a quarter of the io_timeout (internal/rate_limiter.h), and a
// cap too low for even one page in that time is refused before connecting.
// Without a cap, a slow link is waited for as long as its bytes move.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/internal/rate_limiter.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/fault_proxy.h"
#include "migration/testing/migration_harness.h"

namespace livemig {
namespace {

using ::livemig::migration_internal::PacedBatchPages;
using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::TempDir;
using ::testing::HasSubstr;

constexpr uint32_t kPage = 4096;

TEST(PacedBatchPages, UncappedOrFastLinksKeepTheConfiguredBatch) {
  EXPECT_EQ(PacedBatchPages(0, absl::Seconds(30), 256, kPage), 256u);
  EXPECT_EQ(PacedBatchPages(125'000'000, absl::Seconds(30), 256, kPage), 256u);
  EXPECT_EQ(PacedBatchPages(100, absl::InfiniteDuration(), 256, kPage), 256u);
}

// The lowest cap the sender (and the CLI, through LowestMaxBandwidth) names
// is exactly where CheckPacedRate stops refusing: 4096 bytes in 7.5 s.
TEST(CheckPacedRate, TheLowestCapNamedIsTheLowestAccepted) {
  EXPECT_EQ(LowestMaxBandwidth(absl::Seconds(30)), 547u);
  EXPECT_EQ(LowestMaxBandwidth(absl::Seconds(2)), 8192u);
  EXPECT_EQ(LowestMaxBandwidth(absl::InfiniteDuration()), 1u);
  EXPECT_EQ(LowestMaxBandwidth(absl::Seconds(30), 4), 4 * 547u);  // A page per channel.
  for (absl::Duration timeout : {absl::Seconds(30), absl::Seconds(2), absl::Seconds(7)}) {
    const uint64_t lowest = LowestMaxBandwidth(timeout);
    EXPECT_OK(migration_internal::CheckPacedRate(lowest, timeout, kPage));
    EXPECT_THAT(migration_internal::CheckPacedRate(lowest - 1, timeout, kPage),
                ::livemig::testing::StatusIsWithMessage(
                    absl::StatusCode::kInvalidArgument,
                    absl::StrCat("give at least ", lowest, " bytes/s")));
  }
}

TEST(PacedBatchPages, ASlowCapShrinksTheBatchToAQuarterOfTheTimeout) {
  // 128 KB/s for 0.5 s: 64000 bytes, 15 whole pages.
  EXPECT_EQ(PacedBatchPages(128'000, absl::Seconds(2), 256, kPage), 15u);
  // 35 KB/s (the cap that made a 1 MiB batch 30 s of silence): 64 pages.
  EXPECT_EQ(PacedBatchPages(35'000, absl::Seconds(30), 256, kPage), 64u);
  // Never below one page.
  EXPECT_EQ(PacedBatchPages(1, absl::Seconds(30), 256, kPage), 1u);
}

// The limiter charges a batch to the one after it: after a batch of the
// configured 128 pages (512 KiB) at 200 KB/s, the next waited 2.6 s before
// its first byte, and the receiver (io_timeout 2 s) gave up with
// DeadlineExceeded. Paced, every batch goes out within 0.5 s of the last,
// whatever the machine's speed (the limiter never runs ahead of its rate).
TEST(BandwidthCap, ASlowCapStillMigratesWithinBothSidesIoTimeouts) {
  constexpr uint64_t kPages = 264;  // Two configured batches and a bit.
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, kPages * kPage, "", 0}}, Fill::kRandom, 12));
  auto receiver =
      ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("slow_cap"), absl::Seconds(2));
  ASSERT_NE(receiver, nullptr);
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  options.batch_pages = 128;
  options.max_bandwidth = 200'000;
  options.io_timeout = absl::Seconds(2);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.round_stats.front().dirty_pages, kPages);
  // The cap held: all but the last batch (at most 24 pages) at 200 KB/s,
  // less the limiter's burst of 50 ms, is 4.87 s.
  EXPECT_GE(stats.total_time_ms, 4500);
}

// A receiver (io timeout 2 s) behind a proxy that carries channel 0 at
// 1 MB/s and the others at loopback speed, and options for a 2-channel,
// uncapped source with 16-page batches and a 2 s io timeout.
struct SlowChannel0 {
  explicit SlowChannel0(std::string name) : name(std::move(name)) {}
  void Start() {
    receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir(name),
                                     absl::Seconds(2));
    ASSERT_NE(receiver, nullptr);
    FaultProxy::Fault slow;
    slow.kind = FaultProxy::Fault::Kind::kThrottle;
    slow.bytes_per_second = 1000 * 1000;
    slow.connection_index = 0;  // Channel 0 connects first.
    ASSERT_OK_AND_ASSIGN(proxy, FaultProxy::Start(receiver->receiver->endpoint(), slow));
  }
  SenderOptions Options() const {
    SenderOptions options;
    options.destination = proxy->endpoint();
    options.channels = 2;
    options.batch_pages = 16;
    options.io_timeout = absl::Seconds(2);
    return options;
  }
  std::string name;
  std::unique_ptr<ReceiverThread> receiver;
  std::unique_ptr<FaultProxy> proxy;
};

// No cap, and channel 0's link at 1 MB/s: the kernel takes the source's
// writes into the sockets long before they arrive, so the round's last
// bytes reach the destination seconds after the source wrote them -- more
// than either side's 2 s io timeout. Both sides wait while those bytes keep
// moving: the source for the round's acknowledgement (before, it failed
// "timed out after 2s" there), the destination at its round barrier.
TEST(BandwidthCap, AnUncappedSlowLinkMigratesWhileItsQueuedBytesDrain) {
  constexpr uint64_t kPages = 16 * 256;  // 16 MiB.
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, kPages * kPage, "", 0}}, Fill::kRandom, 13));
  SlowChannel0 link("slow_link");
  ASSERT_NO_FATAL_FAILURE(link.Start());
  SenderOptions options = link.Options();
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(link.receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.round_stats.front().dirty_pages, kPages);
}

// The same in the final round: the guest is paused, the source has written
// the final round into the sockets, and the destination answers the
// Completion (VERIFIED) only once it has read all of it. Before, that read
// had one io timeout and failed "timed out after 2s" while channel 0's
// link still delivered the final round; it waits within the pause budget
// (max_pause) while those bytes keep moving.
TEST(BandwidthCap, AFinalRoundStillDrainingOverASlowLinkIsWaitedForBeforeVerified) {
  constexpr uint64_t kPages = 8 * 256;  // 8 MiB, all of it sent again in the final round.
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, kPages * kPage, "", 0}}, Fill::kRandom, 15));
  SlowChannel0 link("slow_final");
  ASSERT_NO_FATAL_FAILURE(link.Start());
  SenderOptions options = link.Options();
  options.downtime_limit = absl::Seconds(60);  // Switch over after round 0.
  options.on_round = [&](const MigrationStats& s) {  // Every page again, in the final round.
    if (s.rounds != 1) return;
    for (uint64_t p = 0; p < kPages; ++p) {
      ASSERT_OK(
          vm->memory().WriteObj<uint8_t>(GuestAddress(p * kPage), static_cast<uint8_t>(p)));
    }
  };
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(link.receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  ASSERT_EQ(stats.round_stats.size(), 2u);
  EXPECT_TRUE(stats.round_stats.back().final);
  EXPECT_EQ(stats.round_stats.back().dirty_pages, kPages);
}

// The channels take turns at the one limiter: with 8 channels at 1 MB/s,
// batches sized for the whole cap (61 pages within a quarter of the 1 s io
// timeout) left each channel 1.75 s between its batches, and the
// destination (io_timeout 1 s) failed "timed out after 1s" on a channel
// while the cap held. Sized for each channel's share, every channel's next
// batch comes within a quarter of the timeout.
TEST(BandwidthCap, ManyChannelsUnderOneCapEachHearFromTheSourceWithinTheIoTimeout) {
  constexpr uint64_t kPages = 1200;  // ~2.5 batches per channel, sized for the whole cap.
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, kPages * kPage, "", 0}}, Fill::kRandom, 14));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("shared_cap"),
                                        absl::Seconds(1));
  ASSERT_NE(receiver, nullptr);
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  options.channels = 8;
  options.max_bandwidth = 1'000'000;
  options.io_timeout = absl::Seconds(1);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.round_stats.front().dirty_pages, kPages);
  EXPECT_EQ(stats.channels, 8u);
}

TEST(BandwidthCap, ACapTooLowForOnePagePerChannelIsRefusedNamingTheChannels) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kPage, "", 0}}, Fill::kRandom, 13));
  SenderOptions options;
  options.destination = Endpoint::Tcp("127.0.0.1", 1);  // Never reached.
  options.channels = 4;
  options.max_bandwidth = 2000;  // Enough for one channel (547), not for four.
  Sender sender(options);
  const absl::StatusOr<MigrationStats> stats = sender.Migrate(vm->memory(), *vm);
  ASSERT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << stats.status();
  EXPECT_THAT(stats.status().message(),
              HasSubstr("max_bandwidth (2000 bytes/s) cannot send one 4096-byte page on each "
                        "of 4 channels within a quarter of the io_timeout (30s); give at least "
                        "2188 bytes/s, fewer channels, or a longer io_timeout"));
}

TEST(BandwidthCap, ACapTooLowForOnePagePerQuarterTimeoutIsRefusedBeforeConnecting) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kPage, "", 0}}, Fill::kRandom, 13));
  SenderOptions options;
  options.destination = Endpoint::Tcp("127.0.0.1", 1);  // Never reached.
  options.channels = 1;
  options.max_bandwidth = 100;
  Sender sender(options);
  const absl::StatusOr<MigrationStats> stats = sender.Migrate(vm->memory(), *vm);
  ASSERT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << stats.status();
  EXPECT_THAT(stats.status().message(), HasSubstr("max_bandwidth (100 bytes/s)"));
  EXPECT_THAT(stats.status().message(), HasSubstr("within a quarter of the io_timeout (30s)"));
  EXPECT_THAT(stats.status().message(), HasSubstr("at least 547 bytes/s"));
  EXPECT_FALSE(vm->paused());
}

}  // namespace
}  // namespace livemig
