// How the sender drives dirty sources (core/dirty_sources/dirty_source.h)
// through a real migration: started before round 0, collected before every
// harvest (also in the paused final round), stopped when the attempt ends,
// and a source's failure fails the attempt with the source named and the
// source VM restored.
#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dirty_sources/dirty_source.h"
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
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::ElementsAre;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPages = 4 * kMiB / kPage;

// A source standing for a hypervisor: the test writes guest memory through
// the raw pointer (invisible to the tracked API) and tells the source, which
// reports the page at its next Collect. Records every call.
class ScriptedSource : public DirtySource {
 public:
  explicit ScriptedSource(const GuestMemory<AtomicBitmap>& memory) : memory_(memory) {}

  const char* name() const override { return "scripted"; }
  absl::Status Start() override {
    Record("start");
    return start_error_;
  }
  absl::Status Collect() override {
    Record("collect");
    std::lock_guard<std::mutex> lock(mu_);
    if (!collect_error_.ok()) return collect_error_;
    if (!collect_error_once_.ok()) {
      // As a kernel that had handed its log over (and cleared it) when the
      // call failed: what it held is gone.
      written_.clear();
      return std::exchange(collect_error_once_, absl::OkStatus());
    }
    for (uint64_t page : written_) memory_.region(0).bitmap().MarkPageOf(page * kPage);
    written_.clear();
    return absl::OkStatus();
  }
  void Stop() override { Record("stop"); }

  // A write the tracked API does not see, reported by the next Collect.
  void WriteBehindTheApi(uint64_t page, uint8_t value) {
    memory_.region(0).region().as_ptr()[page * kPage + 3] = value;
    std::lock_guard<std::mutex> lock(mu_);
    written_.push_back(page);
  }
  void FailStart(absl::Status status) { start_error_ = std::move(status); }
  void FailCollect(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    collect_error_ = std::move(status);
  }
  // The next Collect fails and loses what the source held; later ones work.
  void FailCollectOnceLosingItsPages(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    collect_error_once_ = std::move(status);
  }
  std::vector<std::string> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  // Calls with consecutive "collect"s folded into one.
  std::vector<std::string> phases() const {
    std::vector<std::string> out;
    for (const std::string& c : calls()) {
      if (out.empty() || out.back() != c || c != "collect") out.push_back(c);
    }
    return out;
  }
  int count(std::string_view what) const {
    int n = 0;
    for (const std::string& c : calls()) n += c == what;
    return n;
  }

 private:
  void Record(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(std::move(what));
  }

  const GuestMemory<AtomicBitmap>& memory_;
  absl::Status start_error_;
  mutable std::mutex mu_;
  absl::Status collect_error_;      // Guarded by mu_.
  absl::Status collect_error_once_;  // Guarded by mu_.
  std::vector<uint64_t> written_;   // Guarded by mu_.
  std::vector<std::string> calls_;  // Guarded by mu_.
};

std::unique_ptr<FakeVm> OneRegionVm() {
  auto vm = FakeVm::Create({{0, 4 * kMiB, "", 0}}, Fill::kRandom, 5);
  EXPECT_TRUE(vm.ok()) << vm.status();
  return vm.ok() ? std::move(*vm) : nullptr;
}

ReceiverOptions ReceiverAt(const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(10);
  options.accept_timeout = absl::Seconds(20);
  return options;
}

SenderOptions Options(const Endpoint& to, DirtySource* source) {
  SenderOptions options;
  options.destination = to;
  options.io_timeout = absl::Seconds(10);
  options.dirty_sources = {source};
  return options;
}

uint64_t DirtyPages(const FakeVm& vm) { return vm.memory().region(0).bitmap().CountDirty(); }

TEST(DirtySources, WritesOnlyASourceSawReachTheDestinationAndTheAuditFindsNone) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  ScriptedSource source(vm->memory());
  auto receiver =
      ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir("sources_exact")));
  SenderOptions options = Options(receiver->receiver->endpoint(), &source);
  // After round 0, in pre-copy: three pages written behind the API.
  options.on_round = [&source](const MigrationStats& stats) {
    if (stats.rounds != 1) return;
    for (uint64_t page : {7u, 8u, 900u}) source.WriteBehindTheApi(page, 0xa5);
  };
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
  // Round 1 (the final one here) sent exactly the three pages.
  ASSERT_EQ(stats.round_stats.size(), 2u);
  EXPECT_EQ(stats.round_stats[1].dirty_pages, 3u);
  // Started once before anything was collected, stopped once at the end.
  EXPECT_THAT(source.phases(), ElementsAre("start", "collect", "stop"));
  // Collected after round 0 (the dirty-volume estimate) and in the final,
  // paused round's harvest.
  EXPECT_EQ(source.count("collect"), 2);
}

TEST(DirtySources, ASourceThatCannotStartFailsTheMigrationNamingItAndIsStopped) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  ScriptedSource source(vm->memory());
  source.FailStart(absl::FailedPreconditionError("no /dev/kvm"));
  auto receiver =
      ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir("sources_start")));
  Sender sender(Options(receiver->receiver->endpoint(), &source));
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "dirty source scripted: start: no /dev/kvm"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(source.calls(), ElementsAre("start", "stop"));
  EXPECT_FALSE(vm->paused());
}

// A source that fails in the paused final round: the guest resumes, every
// page harvested during the attempt is dirty again, the source is stopped.
TEST(DirtySources, ACollectFailureInTheFinalRoundResumesTheGuestWithEveryPageDirty) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  vm->memory().region(0).bitmap().SetAddrRange(0, 4 * kMiB);
  ScriptedSource source(vm->memory());
  auto receiver =
      ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir("sources_collect")));
  SenderOptions options = Options(receiver->receiver->endpoint(), &source);
  options.on_round = [&source](const MigrationStats& stats) {
    if (stats.rounds == 1) source.FailCollect(absl::InternalError("KVM_GET_DIRTY_LOG: EIO"));
  };
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "dirty source scripted: collect: KVM_GET_DIRTY_LOG: EIO"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kInternal));
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->resumes(), 1);
  EXPECT_EQ(DirtyPages(*vm), kPages);
  EXPECT_EQ(source.count("stop"), 1);
}

// A failed attempt collects every source once more before stopping it: a
// write only the source saw since the last harvest is dirty afterwards
// (a source's Stop() may drop what it holds).
TEST(DirtySources, AWriteOnlyASourceSawBeforeAFailedAttemptStaysDirty) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  ASSERT_FALSE(vm->memory().region(0).bitmap().IsPageDirty(7));
  ScriptedSource source(vm->memory());
  auto receiver =
      ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir("sources_cancel")));
  SenderOptions options = Options(receiver->receiver->endpoint(), &source);
  Sender* sender_of_round = nullptr;
  options.on_round = [&](const MigrationStats& stats) {
    if (stats.rounds != 1) return;
    source.WriteBehindTheApi(7, 0xAB);  // After round 0's harvest.
    EXPECT_TRUE(sender_of_round->Cancel());
  };
  Sender sender(options);
  sender_of_round = &sender;
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm), StatusIs(absl::StatusCode::kCancelled));
  (void)receiver->Join();
  EXPECT_TRUE(vm->memory().region(0).bitmap().IsPageDirty(7));
  const std::vector<std::string> calls = source.calls();
  ASSERT_GE(calls.size(), 2u);
  EXPECT_EQ(calls[calls.size() - 2], "collect");
  EXPECT_EQ(calls.back(), "stop");
}

// A source that cannot collect that last time: every page is marked dirty
// (an extra is allowed, a miss is not).
TEST(DirtySources, ASourceThatCannotCollectAtTheEndOfAFailedAttemptLeavesEveryPageDirty) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(DirtyPages(*vm), 0u);
  ScriptedSource source(vm->memory());
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("sources_last_collect")));
  SenderOptions options = Options(receiver->receiver->endpoint(), &source);
  options.on_round = [&source](const MigrationStats& stats) {
    if (stats.rounds == 1) source.FailCollect(absl::InternalError("KVM_GET_DIRTY_LOG: EIO"));
  };
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "dirty source scripted: collect: KVM_GET_DIRTY_LOG: EIO"));
  (void)receiver->Join();
  EXPECT_EQ(DirtyPages(*vm), kPages);
  EXPECT_EQ(source.count("stop"), 1);
}

// A collect that fails having taken the source's log (a KVM_CLEAR_DIRTY_LOG
// failing after earlier ones re-protected pages): the pages it held are in
// no bitmap, and the last collect of the failed attempt succeeds, finding
// nothing. Every page is marked dirty instead (page 7 was lost before).
TEST(DirtySources, AFailedCollectThatLostItsPagesLeavesEveryPageDirty) {
  auto vm = OneRegionVm();
  ASSERT_NE(vm, nullptr);
  ASSERT_EQ(DirtyPages(*vm), 0u);
  ScriptedSource source(vm->memory());
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("sources_lost_collect")));
  SenderOptions options = Options(receiver->receiver->endpoint(), &source);
  options.on_round = [&source](const MigrationStats& stats) {
    if (stats.rounds != 1) return;
    source.WriteBehindTheApi(7, 0xCD);
    source.FailCollectOnceLosingItsPages(absl::InternalError("KVM_CLEAR_DIRTY_LOG: EIO"));
  };
  Sender sender(options);
  EXPECT_THAT(sender.Migrate(vm->memory(), *vm),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "dirty source scripted: collect: KVM_CLEAR_DIRTY_LOG: EIO"));
  (void)receiver->Join();
  EXPECT_TRUE(vm->memory().region(0).bitmap().IsPageDirty(7));
  EXPECT_EQ(DirtyPages(*vm), kPages);
  EXPECT_FALSE(vm->paused());
}

}  // namespace
}  // namespace livemig
