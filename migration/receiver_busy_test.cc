// A destination busy with one migration answers every other source at once,
// "busy", instead of leaving it unanswered in the listen backlog (where it
// timed out, and its dead connection was then taken for the next migration).
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
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
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

ReceiverOptions Options(const std::string& root, absl::Duration accept_timeout) {
  ReceiverOptions options;
  options.root_dir = TempDir(root);
  options.io_timeout = absl::Seconds(20);
  options.accept_timeout = accept_timeout;
  options.anonymous_regions_as_files = true;
  return options;
}

SenderOptions To(const Endpoint& at, absl::Duration io_timeout) {
  SenderOptions o;
  o.destination = at;
  o.io_timeout = io_timeout;
  return o;
}

TEST(ReceiverBusy, ASecondSourceIsToldTheDestinationIsBusyAndTheFirstCompletes) {
  // An accept timeout shorter than the migration: the refuser is not bound by it.
  ReceiverOptions options = Options("receiver_busy", absl::Seconds(1));
  Endpoint at;
  absl::Status second = absl::UnknownError("not run");
  absl::Duration second_took;
  // Inside the first migration (its pages verified, the source paused and
  // waiting for the handover), a second source tries.
  options.test_on_step = [&](const char* step) {
    if (std::string(step) != "verified") return;
    absl::SleepFor(absl::Milliseconds(1500));  // Past the accept timeout.
    absl::StatusOr<std::unique_ptr<FakeVm>> vm =
        FakeVm::Create({{0, 1 * kMiB, "", 0}}, Fill::kRandom, 2);
    ASSERT_OK(vm.status());
    Sender sender(To(at, absl::Seconds(15)));
    const absl::Time start = absl::Now();
    second = sender.Migrate((*vm)->memory(), **vm).status();
    second_took = absl::Now() - start;
    EXPECT_FALSE((*vm)->paused());
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  at = receiver->receiver->endpoint();
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(at, absl::Seconds(20)));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_THAT(second, StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                          "the destination is busy with another migration"));
  // Answered, not left to its io timeout.
  EXPECT_LT(second_took, absl::Seconds(10));
}

// Once COMMITTED is written the source is done: a source that comes during
// the flush waits for the next ReceiveOne() instead of being refused.
TEST(ReceiverBusy, ASourceThatComesDuringTheFlushIsTakenNext) {
  ReceiverOptions options = Options("receiver_next", absl::Seconds(20));
  Endpoint at;
  std::thread next;
  absl::Status next_result = absl::UnknownError("not run");
  std::unique_ptr<FakeVm> next_vm;
  options.test_on_step = [&](const char* step) {
    // The first migration's commit (the second one commits too).
    if (std::string(step) != "committed" || next_vm != nullptr) return;
    absl::StatusOr<std::unique_ptr<FakeVm>> vm =
        FakeVm::Create({{0, 1 * kMiB, "", 0}}, Fill::kRandom, 2);
    ASSERT_OK(vm.status());
    next_vm = std::move(*vm);
    next = std::thread([&] {
      Sender sender(To(at, absl::Seconds(20)));
      next_result = sender.Migrate(next_vm->memory(), *next_vm).status();
    });
    absl::SleepFor(absl::Milliseconds(300));  // It connects before the flush ends.
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  at = receiver->receiver->endpoint();
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(at, absl::Seconds(20)));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));
  ASSERT_OK(receiver->Join().status());
  absl::StatusOr<ReceivedMigration> second = receiver->receiver->ReceiveOne();
  ASSERT_TRUE(next.joinable());
  next.join();
  EXPECT_OK(next_result);
  ASSERT_OK(second.status());
  ExpectSameMemory(next_vm->memory(), second->memory);
}

}  // namespace
}  // namespace livemig
