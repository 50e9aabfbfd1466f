// When the receiver's copy reaches the disk, relative to what it tells the
// source: by default after the commit (the flush is outside the source's
// pause, ReceiveOne() still returns only after it); with `durable` before it
// answers VERIFIED. Checked by the order of events, not by timing.
#include <atomic>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
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
using ::testing::_;
using ::testing::ElementsAre;

constexpr uint64_t kMiB = 1 << 20;

// Steps the receiver reports, and whether the sender's Migrate() had
// returned when each happened.
struct Log {
  std::mutex mu;
  std::vector<std::string> steps;
  std::vector<bool> sender_done_at;
  std::atomic<bool> sender_done{false};
};

std::unique_ptr<ReceiverThread> StartReceiver(const std::string& root, bool durable, Log& log) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(20);
  options.accept_timeout = absl::Seconds(20);
  options.anonymous_regions_as_files = true;
  options.durable = durable;
  options.test_on_step = [&log, durable](const char* step) {
    const std::string s = step;
    if (s == "flushed" && !durable) {
      // The source must be done (it read COMMITTED) without waiting for
      // this flush: wait for it, long enough for any machine.
      for (int i = 0; i < 2000 && !log.sender_done.load(); ++i) {
        absl::SleepFor(absl::Milliseconds(10));
      }
    }
    std::lock_guard<std::mutex> lock(log.mu);
    log.steps.push_back(s);
    log.sender_done_at.push_back(log.sender_done.load());
  };
  return ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
}

// Migrates 8 MiB of random memory to a receiver (durable or not) that logs
// its steps into `log`, and checks the copy.
void MigrateLogged(bool durable, Log& log, const std::string& root) {
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 8 * kMiB, "", 0}}, Fill::kRandom, 5));
  auto receiver = StartReceiver(root, durable, log);
  SenderOptions options;
  options.destination = receiver->receiver->endpoint();
  options.io_timeout = absl::Seconds(20);
  Sender sender(options);
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));
  log.sender_done.store(true);
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_TRUE(std::filesystem::exists(root + "/region-0.mem"));
}

TEST(Durability, ByDefaultTheReceiverFlushesAfterTheSourceHasLetGo) {
  Log log;
  ASSERT_NO_FATAL_FAILURE(MigrateLogged(/*durable=*/false, log, TempDir("durability_default")));
  EXPECT_THAT(log.steps, ElementsAre("verified", "handover", "committed", "flushed"));
  // The flush happened after the sender had returned: it never waited.
  // (Whether the sender has read COMMITTED when "committed" is logged is a
  // race, and not the point.)
  EXPECT_THAT(log.sender_done_at, ElementsAre(false, false, _, true));
}

TEST(Durability, DurableReceiverFlushesBeforeItAnswersVerified) {
  Log log;
  ASSERT_NO_FATAL_FAILURE(MigrateLogged(/*durable=*/true, log, TempDir("durability_durable")));
  EXPECT_THAT(log.steps, ElementsAre("flushed", "verified", "handover", "committed"));
  EXPECT_THAT(log.sender_done_at, ElementsAre(false, false, false, _));
}

}  // namespace
}  // namespace livemig
