// The receiver's commit and what surrounds it: ReceiverOptions::before_commit
// (called after the source's HANDOVER, before any rename; its error fails the
// commit and the source resumes), a Cancel() that comes too late to stop a
// migration (it stops the next ReceiveOne()), and staging files a killed
// receiver left (removed when a receiver starts on the same root).
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
namespace fs = std::filesystem;

constexpr uint64_t kMiB = 1 << 20;

ReceiverOptions Options(const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(20);
  options.accept_timeout = absl::Seconds(20);
  options.anonymous_regions_as_files = true;
  return options;
}

SenderOptions To(const Receiver& receiver) {
  SenderOptions options;
  options.destination = receiver.endpoint();
  options.io_timeout = absl::Seconds(20);
  return options;
}

TEST(ReceiverCommit, BeforeCommitRunsAfterTheHandoverAndBeforeAnyRename) {
  const std::string root = TempDir("commit_before");
  ReceiverOptions options = Options(root);
  bool final_existed = true;
  bool staged = false;
  options.before_commit = [&] {
    final_existed = fs::exists(root + "/region-0.mem");
    staged = fs::exists(root + "/region-0.mem" + kStagingSuffix);
    return absl::OkStatus();
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(*receiver->receiver));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_FALSE(final_existed);
  EXPECT_TRUE(staged);
}

// An error there fails the commit: nothing is renamed, the source is told
// and resumes its guest, the receiver fails with the error.
TEST(ReceiverCommit, ABeforeCommitErrorFailsTheCommitAndTheSourceResumes) {
  const std::string root = TempDir("commit_refused");
  ReceiverOptions options = Options(root);
  options.before_commit = [] { return absl::InternalError("cannot remove manifest.json"); };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(*receiver->receiver));
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "destination could not commit: cannot remove manifest.json"));
  EXPECT_FALSE(vm->paused());
  EXPECT_THAT(receiver->Join(), StatusIsWithMessage(absl::StatusCode::kInternal,
                                                    "cannot remove manifest.json"));
  EXPECT_FALSE(fs::exists(root + "/region-0.mem"));
  EXPECT_FALSE(fs::exists(root + "/region-0.mem" + kStagingSuffix));
}

// A Cancel() while the committed migration flushes cannot stop it (the
// destination owns the guest): that migration is returned, and the request
// stops the next ReceiveOne() at once instead of being lost.
TEST(ReceiverCommit, ACancelAfterTheCommitStopsTheNextReceiveOne) {
  ReceiverOptions options = Options(TempDir("commit_cancel"));
  std::atomic<Receiver*> self{nullptr};
  options.test_on_step = [&self](const char* step) {
    if (std::string(step) == "committed") self.load()->Cancel();
  };
  options.accept_timeout = absl::Seconds(2);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  self = receiver->receiver.get();
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(*receiver->receiver));
  ASSERT_OK(sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  // Not the accept timeout: the cancel.
  EXPECT_THAT(receiver->receiver->ReceiveOne(),
              StatusIsWithMessage(absl::StatusCode::kCancelled, kCancelledWhileWaiting));
  // Used up: the one after waits again, for its accept timeout.
  EXPECT_THAT(receiver->receiver->ReceiveOne(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

// A Cancel() before the handover reaches the source as an Abort saying so,
// not as a closed connection; the source resumes its guest.
TEST(ReceiverCommit, ACancelDuringTheRoundsTellsTheSourceWhy) {
  ReceiverOptions options = Options(TempDir("commit_cancel_rounds"));
  std::atomic<Receiver*> self{nullptr};
  std::atomic<bool> once{false};
  options.test_after_landing = [&](uint32_t, uint64_t, uint8_t*, size_t) {
    if (!once.exchange(true)) self.load()->Cancel();
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  self = receiver->receiver.get();
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 16 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(*receiver->receiver));
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kCancelled,
                                  "peer aborted: migration cancelled by the destination"));
  EXPECT_FALSE(vm->paused());
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kCancelled));
}

// A Cancel() after VERIFIED went out: the source may have sent its
// HANDOVER already, so an Abort would leave it in doubt with its guest
// paused. The HANDOVER is answered "not committed, cancelled" instead: the
// source resumes, nothing is published, and the cancel is used up.
TEST(ReceiverCommit, ACancelAfterVerifiedIsTheAnswerToTheHandoverAndTheSourceResumes) {
  const std::string root = TempDir("commit_cancel_verified");
  ReceiverOptions options = Options(root);
  std::atomic<Receiver*> self{nullptr};
  options.test_on_step = [&self](const char* step) {
    if (std::string(step) == "verified") self.load()->Cancel();
  };
  options.accept_timeout = absl::Seconds(2);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
  ASSERT_NE(receiver, nullptr);
  self = receiver->receiver.get();
  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 3));
  Sender sender(To(*receiver->receiver));
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kCancelled,
                                  "destination could not commit: migration cancelled by the "
                                  "destination"));
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(sender.last_stats().status, "failed");
  EXPECT_THAT(receiver->Join(), StatusIsWithMessage(absl::StatusCode::kCancelled,
                                                    "migration cancelled by the destination"));
  EXPECT_FALSE(fs::exists(root + "/region-0.mem"));
  EXPECT_FALSE(fs::exists(root + "/region-0.mem" + kStagingSuffix));
  // Used up by the migration it stopped: the next call waits again.
  EXPECT_THAT(receiver->receiver->ReceiveOne(), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(ReceiverCommit, ListenRemovesTheStagingFilesAKilledReceiverLeft) {
  const std::string root = TempDir("commit_stale");
  fs::create_directories(root + "/vm/a");
  const std::string outside = TempDir("commit_stale_outside") + "/target.livemig-partial";
  for (const std::string& path :
       {root + "/region-1.mem.livemig-partial", root + "/vm/a/disk.mem.livemig-partial",
        root + "/region-0.mem", outside}) {
    std::ofstream(path) << "x";
  }
  fs::create_symlink(outside, root + "/link.livemig-partial");
  fs::create_symlink(root + "/nothing", root + "/vm/dangling.livemig-partial");
  auto receiver = Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), Options(root));
  ASSERT_OK(receiver.status());
  EXPECT_FALSE(fs::exists(root + "/region-1.mem.livemig-partial"));
  EXPECT_FALSE(fs::exists(root + "/vm/a/disk.mem.livemig-partial"));
  EXPECT_TRUE(fs::exists(root + "/region-0.mem"));
  EXPECT_TRUE(fs::is_symlink(root + "/link.livemig-partial")) << "a symlink is not followed";
  EXPECT_TRUE(fs::exists(outside));
  EXPECT_TRUE(fs::is_symlink(root + "/vm/dangling.livemig-partial"));
}

// One receiver per root: a second one is refused before it touches the
// first one's staging files; once the first is gone, the next takes over.
TEST(ReceiverCommit, ASecondReceiverOnTheSameRootIsRefusedAndRemovesNothing) {
  const std::string root = TempDir("commit_second");
  auto first = Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), Options(root));
  ASSERT_OK(first.status());
  const std::string staged = root + "/region-0.mem.livemig-partial";
  std::ofstream(staged) << "in flight";
  EXPECT_THAT(Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), Options(root)).status(),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  absl::StrCat("another receiver uses ", root,
                                               " (it holds the directory's lock)")));
  EXPECT_TRUE(fs::exists(staged));
  first->reset();
  ASSERT_OK(Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), Options(root)).status());
  EXPECT_FALSE(fs::exists(staged));
}

}  // namespace
}  // namespace livemig
