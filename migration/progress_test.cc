// What a VMM's progress display sees: on_round for every round (the final,
// paused one reported after the pause) and on_progress while a live round's
// pages are on their way.
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

TEST(Progress, OnRoundReportsEveryRoundAndTheFinalOneAfterThePause) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 8 * kMiB, "", 0}}, Fill::kRandom, 7));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("rounds"));
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  struct Call {
    uint32_t rounds;
    bool final;
    bool paused;
    std::string status;
  };
  std::vector<Call> calls;
  options.on_round = [&](const MigrationStats& s) {
    calls.push_back({s.rounds, s.round_stats.back().final, vm->paused(), s.status});
    // One tracked write after round 0: round 1 is live, the final is round 2.
    if (s.rounds == 1) ASSERT_OK(vm->memory().WriteObj<uint8_t>(GuestAddress(4096), 1));
  };
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  ASSERT_EQ(calls.size(), stats.rounds);
  for (size_t i = 0; i + 1 < calls.size(); ++i) {
    EXPECT_EQ(calls[i].rounds, i + 1);
    EXPECT_FALSE(calls[i].final);
    EXPECT_FALSE(calls[i].paused) << "a live round is reported while the guest runs";
  }
  // The final round: reported once the migration completed, never in the
  // pause (the guest stays paused on the source: the destination owns it).
  EXPECT_EQ(calls.back().rounds, stats.rounds);
  EXPECT_TRUE(calls.back().final);
  EXPECT_EQ(calls.back().status, "completed");
  EXPECT_TRUE(stats.round_stats.back().final);
  EXPECT_NE(stats.ToJson().find("\"final\":true"), std::string::npos);
}

// A link capped at 16 MB/s makes round 0 of 8 MiB last at least half a
// second (the limiter is never ahead of its rate), so a 10 ms interval must
// report it several times, whatever the machine's speed.
TEST(Progress, OnProgressReportsLiveRoundsWhileTheirPagesAreSent) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 8 * kMiB, "", 0}}, Fill::kRandom, 8));
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), TempDir("progress"));
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  options.max_bandwidth = 16 * 1000 * 1000;
  options.progress_interval = absl::Milliseconds(10);
  std::vector<MigrationProgress> reports;
  bool reported_paused = false;
  options.on_progress = [&](const MigrationProgress& p) {
    reports.push_back(p);
    reported_paused = reported_paused || vm->paused();
  };
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK(receiver->Join().status());
  EXPECT_FALSE(reported_paused);
  ASSERT_GE(reports.size(), 5u);
  EXPECT_EQ(reports.front().round, 0u);
  EXPECT_EQ(reports.front().round_pages, 8 * kMiB / 4096);
  EXPECT_EQ(reports.front().total, 8 * kMiB);
  for (size_t i = 1; i < reports.size(); ++i) {
    const MigrationProgress& a = reports[i - 1];
    const MigrationProgress& b = reports[i];
    EXPECT_LE(b.round_pages_sent, b.round_pages);
    EXPECT_GE(b.transferred, a.transferred);
    EXPECT_GT(b.elapsed_ms, a.elapsed_ms);
    if (a.round == b.round) {
      EXPECT_GE(b.round_pages_sent, a.round_pages_sent);
    }
    EXPECT_LT(b.round, stats.rounds - 1) << "the final round is never reported";
  }
  // Round 0's pages went out while it was being reported: some, not all at
  // the first report (the cap spreads them over half a second).
  EXPECT_LT(reports.front().round_pages_sent, reports.front().round_pages);
  EXPECT_GT(reports.back().transferred, 0u);
  EXPECT_LE(reports.back().transferred, stats.transferred);
}

}  // namespace
}  // namespace livemig
