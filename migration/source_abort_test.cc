// File: migration/source_abort_test.cc
//
// A source that stops on its own (its Cancel(), its pre-copy timeout
// cutting a round) tells the destination why: every channel finishes the
// frame it is writing, channel 0 carries an Abort, and only then do the
// connections close (protocol.h). The destination's error is the source's
// reason, not a closed connection; the source keeps its guest running with
// every dirty bit.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/stats.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/fault_proxy.h"
#include "migration/testing/migration_harness.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/transport/tls_context.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPages = 16 * kMiB / 4096;

// 16 MiB of random memory, every page dirty, and a source whose round 0
// takes at least 2 s (8 MB/s), so that it is stopped in the middle of it.
struct Slow {
  std::unique_ptr<FakeVm> vm;
  std::unique_ptr<ReceiverThread> receiver;
  SenderOptions options;
};

Slow SlowMigration(const std::string& name, std::shared_ptr<const TlsContext> source_tls = nullptr,
                   std::shared_ptr<const TlsContext> destination_tls = nullptr,
                   absl::Duration destination_io_timeout = absl::Seconds(20)) {
  Slow slow;
  auto vm = FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 21);
  EXPECT_TRUE(vm.ok()) << vm.status();
  slow.vm = std::move(*vm);
  slow.vm->memory().region(0).bitmap().SetAddrRange(0, 16 * kMiB);
  ReceiverOptions receiver_options;
  receiver_options.root_dir = TempDir(name);
  receiver_options.io_timeout = destination_io_timeout;
  receiver_options.tls = std::move(destination_tls);
  slow.receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  slow.options.destination = slow.receiver->receiver->endpoint();
  slow.options.channels = 2;
  slow.options.io_timeout = absl::Seconds(20);
  slow.options.max_bandwidth = 8 * 1000 * 1000;
  slow.options.tls = std::move(source_tls);
  return slow;
}

void ExpectSourceRunningAndDirty(const FakeVm& vm) {
  EXPECT_FALSE(vm.paused());
  EXPECT_EQ(vm.memory().region(0).bitmap().CountDirty(), kPages);
}

// Cancels the migration once round 0 has handed pages to the sockets
// (counted in pages, not in time), and expects the destination to be told.
void ExpectACancelMidRoundZeroReachesTheDestination(Slow& slow) {
  Sender* sender_ptr = nullptr;
  std::atomic<bool> took{false};
  slow.options.progress_interval = absl::Milliseconds(1);
  slow.options.on_progress = [&sender_ptr, &took](const MigrationProgress& progress) {
    if (progress.round == 0 && progress.round_pages_sent > 0 && !took.load()) {
      took.store(sender_ptr->Cancel());
    }
  };
  Sender sender(slow.options);
  sender_ptr = &sender;
  EXPECT_THAT(
      sender.Migrate(slow.vm->memory(), *slow.vm),
      StatusIsWithMessage(absl::StatusCode::kCancelled, "migration cancelled by the source"));
  EXPECT_TRUE(took.load());
  // Before: "peer closed the connection", or a truncated frame.
  EXPECT_THAT(slow.receiver->Join(),
              StatusIsWithMessage(absl::StatusCode::kCancelled,
                                  "peer aborted: migration cancelled by the source"));
  ExpectSourceRunningAndDirty(*slow.vm);
  EXPECT_EQ(sender.last_stats().status, "cancelled");
}

TEST(SourceAbort, ACancelInTheMiddleOfARoundReachesTheDestinationAsItsReason) {
  Slow slow = SlowMigration("cancel_mid_round");
  ExpectACancelMidRoundZeroReachesTheDestination(slow);
}

// Gives `slow` a pre-copy timeout of 1 s, which cuts round 0, and expects
// the destination to be told why.
void ExpectTheTimeoutReachesTheDestination(Slow& slow) {
  slow.options.timeout = absl::Seconds(1);
  slow.options.on_limit = SenderOptions::OnLimit::kCancel;
  Sender sender(slow.options);
  EXPECT_THAT(sender.Migrate(slow.vm->memory(), *slow.vm),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "round 0 had not ended"));
  EXPECT_THAT(slow.receiver->Join(),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "peer aborted: did not converge within the 1s timeout"));
  ExpectSourceRunningAndDirty(*slow.vm);
  EXPECT_EQ(sender.last_stats().status, "failed");
}

TEST(SourceAbort, AGivenUpRoundReachesTheDestinationAsTheTimeout) {
  Slow slow = SlowMigration("timeout_mid_round");  // Round 0 takes >= 2 s.
  ExpectTheTimeoutReachesTheDestination(slow);
}

// The same through a proxy throttled at 1 MB/s (every connection, or only
// the `connection`-th: channel i connects i-th).
void ExpectTheTimeoutOverAThrottledLinkReachesTheDestination(Slow& slow, uint32_t batch_pages,
                                                             int connection = -1) {
  FaultProxy::Fault slow_link;
  slow_link.kind = FaultProxy::Fault::Kind::kThrottle;
  slow_link.bytes_per_second = 1000 * 1000;
  slow_link.connection_index = connection;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<FaultProxy> proxy,
                       FaultProxy::Start(slow.options.destination, slow_link));
  slow.options.destination = proxy->endpoint();
  slow.options.max_bandwidth = 0;  // The link is the limit.
  slow.options.batch_pages = batch_pages;
  ExpectTheTimeoutReachesTheDestination(slow);
}

// A link slower than a batch per grace (1 MB/s, 1 MiB batches): the frames
// under way still finish, as their bytes keep moving, and the Abort follows.
// (With a grace counted from the stop alone, channel 0 was cut mid-frame and
// the destination saw a closed connection.)
TEST(SourceAbort, OverASlowLinkTheTimeoutStillReachesTheDestination) {
  Slow slow = SlowMigration("timeout_slow_link");
  ExpectTheTimeoutOverAThrottledLinkReachesTheDestination(slow, 256);
}

// Only channel 0 is slow, and the destination's io timeout (2 s) is shorter
// than the data queued ahead of channel 0's end: channel 1 finishes its part
// of round 0 at once and waits at the round barrier while channel 0's bytes
// keep arriving, then the Abort behind them (64 KiB frames: the one under
// way ends soon). With the barrier's timeout counted from channel 1's
// arrival, the destination failed after 2 s with "other channels did not
// finish round 0 within 2s", every channel still moving.
TEST(SourceAbort, AChannelStillArrivingPastTheIoTimeoutIsWaitedForAndTheReasonArrives) {
  Slow slow = SlowMigration("timeout_slow_channel0", nullptr, nullptr, absl::Seconds(2));
  ExpectTheTimeoutOverAThrottledLinkReachesTheDestination(slow, 16, /*connection=*/0);
}

TEST(SourceAbort, ACancelOverTlsReachesTheDestinationAsItsReason) {
  auto certs = testing::MakeTestCerts(TempDir("source_abort_certs"));
  if (!certs.ok()) GTEST_SKIP() << "no test certificates: " << certs.status();
  auto destination = TlsContext::ForDestination(certs->good);
  auto source = TlsContext::ForSource(certs->good, "127.0.0.1");
  ASSERT_TRUE(destination.ok()) << destination.status();
  ASSERT_TRUE(source.ok()) << source.status();
  Slow slow = SlowMigration("cancel_tls", *source, *destination);
  ExpectACancelMidRoundZeroReachesTheDestination(slow);
}

}  // namespace
}  // namespace livemig
