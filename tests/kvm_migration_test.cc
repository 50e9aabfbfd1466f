// A live migration of the tiny KVM guest (tools/vmm) over 127.0.0.1 with
// each KVM dirty source: the receiver's bytes equal guest memory at the
// pause, and a VM built from what was received continues the counter. And
// the other side of the promise: without a KVM source the guest's writes
// are invisible to the engine (verify=full fails naming them, the default
// audit counts them), and a cut connection leaves the source running with
// every page dirty again, after which a retry is exact.
#include <memory>
#include <string>
#include <vector>

#include "core/dirty_sources/dirty_source.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fault_proxy.h"
#include "migration/testing/migration_harness.h"
#include "tools/vmm/kvm_vm.h"
#include "tools/vmm/resume.h"
#include "tools/vmm/testing/kvm_test_util.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::AnyOf;
using vmm::KvmVm;
using vmm::TrackerKind;
using vmm::testing::MakeMemory;
using vmm::testing::WaitFor;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMemory = 32 * kMiB;

ReceiverOptions ReceiverAt(const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(20);
  options.accept_timeout = absl::Seconds(30);
  return options;
}

// A 2-vCPU counter guest writing 64 MiB/s, plus a device thread.
vmm::KvmVmOptions Guest(TrackerKind kind) {
  vmm::KvmVmOptions options;
  options.vcpus = 2;
  options.pattern.pattern = vmm::Pattern::kCounter;
  options.pattern.pages_per_second = 64 * kMiB / 4096;
  options.device_bytes_per_second = 1 * kMiB;
  if (kind == TrackerKind::kRing) options.dirty_ring_entries = 4096;
  return options;
}

class KvmMigration : public ::testing::TestWithParam<TrackerKind> {
 protected:
  void SetUp() override {
    LIVEMIG_SKIP_WITHOUT_KVM();
    memory_ = MakeMemory({kMemory});
    ASSERT_NE(memory_, nullptr);
    ASSERT_OK_AND_ASSIGN(vm_, KvmVm::Boot(*memory_, Guest(GetParam())));
    ASSERT_OK_AND_ASSIGN(source_, vmm::MakeTracker(*vm_, *memory_, GetParam()));
    ASSERT_OK(vm_->Start());
    // The guest is really running before the migration starts.
    ASSERT_TRUE(WaitFor([&] { return vm_->pages_granted() >= 2000; }, "2000 pages"));
  }
  void TearDown() override {
    source_.reset();
    vm_.reset();
  }

  SenderOptions Options(const Endpoint& to) {
    SenderOptions options;
    options.destination = to;
    options.io_timeout = absl::Seconds(20);
    options.dirty_sources = {source_.get()};
    options.on_limit = SenderOptions::OnLimit::kForce;
    return options;
  }

  // Migrates to a fresh receiver and checks bytes and the resumed guest.
  void MigrateAndCheck(const std::string& dir) {
    auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(TempDir(dir)));
    ASSERT_NE(receiver, nullptr);
    Sender sender(Options(receiver->receiver->endpoint()));
    ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(*memory_, *vm_));
    ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
    ASSERT_TRUE(vm_->paused());
    // Byte for byte what the paused guest holds.
    ExpectSameMemory(*memory_, got.memory);
    EXPECT_EQ(stats.audit.untracked_pages, 0u);
    const vmm::CounterCheck at_pause = vmm::CheckCounterMemory(*vm_);
    ASSERT_TRUE(at_pause.held) << at_pause.detail;
    // The destination continues the guest from exactly there.
    vmm::ResumeOptions resume;
    resume.min_progress = 2000;
    ASSERT_OK_AND_ASSIGN(vmm::ResumeResult result,
                         vmm::ResumeAndCheck(got.memory, got.device_state, resume));
    EXPECT_TRUE(result.invariant_held) << result.detail;
    EXPECT_EQ(result.counter_at_pause, at_pause.progress);
    EXPECT_GE(result.counter_after, at_pause.progress + 2000);
  }

  std::unique_ptr<GuestMemory<AtomicBitmap>> memory_;
  std::unique_ptr<KvmVm> vm_;
  std::unique_ptr<DirtySource> source_;
};

TEST_P(KvmMigration, ReceiverHoldsMemoryAtPauseAndTheResumedGuestContinues) {
  MigrateAndCheck("kvm_migration");
}

TEST_P(KvmMigration, ACutConnectionLeavesTheGuestRunningAllDirtyAndARetryIsExact) {
  // Every page dirty before the attempt: the failure must give back every
  // bit the attempt harvested.
  memory_->region(0).bitmap().SetAddrRange(0, kMemory);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("kvm_cut")));
  ASSERT_NE(receiver, nullptr);
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.offset = 2 * kMiB;  // Inside round 0 (the guest wrote >= 8 MiB).
  fault.client_to_server = true;
  ASSERT_OK_AND_ASSIGN(auto proxy, FaultProxy::Start(receiver->receiver->endpoint(), fault));
  {
    Sender sender(Options(proxy->endpoint()));
    EXPECT_THAT(sender.Migrate(*memory_, *vm_),
                AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                      StatusIs(absl::StatusCode::kDataLoss)));
    EXPECT_EQ(sender.last_stats().status, "failed");
  }
  EXPECT_FALSE(receiver->Join().ok());
  proxy.reset();
  receiver.reset();
  EXPECT_FALSE(vm_->paused());
  EXPECT_EQ(memory_->region(0).bitmap().CountDirty(), kMemory / 4096);
  // Still running on the source.
  const uint64_t granted = vm_->pages_granted();
  ASSERT_TRUE(WaitFor([&] { return vm_->pages_granted() >= granted + 2000; },
                      "the source guest running after the failure"));
  ASSERT_OK(vm_->health());
  MigrateAndCheck("kvm_retry");
}

// Delegates to a KVM source but fails its Collect() once the VM is paused:
// a failure in the final, paused round.
class FailWhenPaused : public DirtySource {
 public:
  FailWhenPaused(DirtySource& inner, const KvmVm& vm) : inner_(inner), vm_(vm) {}
  const char* name() const override { return inner_.name(); }
  absl::Status Start() override { return inner_.Start(); }
  absl::Status Collect() override {
    if (vm_.paused()) return absl::InternalError("injected: KVM collect failed");
    return inner_.Collect();
  }
  void Stop() override { inner_.Stop(); }

 private:
  DirtySource& inner_;
  const KvmVm& vm_;
};

TEST_P(KvmMigration, AFailureWhilePausedResumesTheKvmGuestAndARetryIsExact) {
  memory_->region(0).bitmap().SetAddrRange(0, kMemory);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("kvm_paused_fail")));
  ASSERT_NE(receiver, nullptr);
  FailWhenPaused failing(*source_, *vm_);
  SenderOptions options = Options(receiver->receiver->endpoint());
  options.dirty_sources = {&failing};
  {
    Sender sender(options);
    EXPECT_THAT(sender.Migrate(*memory_, *vm_),
                StatusIsWithMessage(absl::StatusCode::kInternal, "injected"));
    EXPECT_GT(sender.last_stats().downtime_ms, 0) << "the guest was never paused";
  }
  EXPECT_FALSE(receiver->Join().ok());
  receiver.reset();
  EXPECT_FALSE(vm_->paused());
  EXPECT_EQ(memory_->region(0).bitmap().CountDirty(), kMemory / 4096);
  const uint64_t granted = vm_->pages_granted();
  ASSERT_TRUE(WaitFor([&] { return vm_->pages_granted() >= granted + 2000; },
                      "the resumed source guest running"));
  ASSERT_OK(vm_->health());
  MigrateAndCheck("kvm_paused_retry");
}

INSTANTIATE_TEST_SUITE_P(
    EachKvmSource, KvmMigration,
    ::testing::Values(TrackerKind::kLog, TrackerKind::kLogManual, TrackerKind::kRing),
    [](const ::testing::TestParamInfo<TrackerKind>& info) -> std::string {
      switch (info.param) {
        case TrackerKind::kLog: return "KvmLog";
        case TrackerKind::kLogManual: return "KvmLogManual";
        case TrackerKind::kRing: return "KvmRing";
      }
      return "Unknown";
    });

// Without a KVM source only the device's writes (tracked API) are seen.
class UntrackedGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    LIVEMIG_SKIP_WITHOUT_KVM();
    memory_ = MakeMemory({kMemory});
    ASSERT_NE(memory_, nullptr);
    ASSERT_OK_AND_ASSIGN(vm_, KvmVm::Boot(*memory_, Guest(TrackerKind::kLog)));
    ASSERT_OK(vm_->Start());
    ASSERT_TRUE(WaitFor([&] { return vm_->pages_granted() >= 2000; }, "2000 pages"));
  }
  absl::StatusOr<MigrationStats> Migrate(SenderOptions::Verify verify,
                                         std::unique_ptr<ReceiverThread>* receiver) {
    *receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                      ReceiverAt(TempDir("kvm_untracked")));
    SenderOptions options;
    options.destination = (*receiver)->receiver->endpoint();
    options.io_timeout = absl::Seconds(20);
    options.verify = verify;
    // verify=full re-hashes all memory in the pause; under a sanitizer
    // that alone exceeds the default 300 ms, and the stall rule would give
    // up: this test is about what the audit finds, not about convergence.
    options.downtime_limit = absl::Seconds(30);
    options.on_limit = SenderOptions::OnLimit::kForce;
    // Long enough that the guest writes behind the engine's back: two
    // pre-copy rounds at least.
    options.on_round = [this](const MigrationStats& stats) {
      if (stats.round_stats.back().final) return;  // The guest is paused.
      const uint64_t granted = vm_->pages_granted();
      WaitFor([&] { return vm_->pages_granted() >= granted + 500; }, "guest writes");
    };
    Sender sender(options);
    return sender.Migrate(*memory_, *vm_);
  }
  std::unique_ptr<GuestMemory<AtomicBitmap>> memory_;
  std::unique_ptr<KvmVm> vm_;
};

TEST_F(UntrackedGuest, VerifyFullFailsWithDataLossNamingThePagesAndResumesTheGuest) {
  std::unique_ptr<ReceiverThread> receiver;
  EXPECT_THAT(Migrate(SenderOptions::Verify::kFull, &receiver),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "changed without being marked dirty"));
  (void)receiver->Join();
  EXPECT_FALSE(vm_->paused());
}

TEST_F(UntrackedGuest, TheDefaultAuditCountsAndNamesThePagesTheGuestWrote) {
  std::unique_ptr<ReceiverThread> receiver;
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, Migrate(SenderOptions::Verify::kSent, &receiver));
  ASSERT_OK(receiver->Join().status());
  EXPECT_TRUE(stats.audit.ran);
  EXPECT_GT(stats.audit.untracked_pages, 0u);
  ASSERT_FALSE(stats.audit.first_addrs.empty());
  // The guest's stores land in the workload; KVM's own writes of accessed
  // and dirty bits land in the guest's page tables. Nothing else.
  const uint64_t tables = vm_->layout().base + vmm::kPml4Offset;
  const uint64_t tables_end = vm_->layout().base + vmm::kPdOffset + vmm::kMaxPds * 4096;
  for (uint64_t addr : stats.audit.first_addrs) {
    EXPECT_TRUE(addr >= vm_->layout().workload_gpa || (addr >= tables && addr < tables_end))
        << "an untracked page at 0x" << std::hex << addr
        << " is neither workload nor page table";
  }
}

}  // namespace
}  // namespace livemig
