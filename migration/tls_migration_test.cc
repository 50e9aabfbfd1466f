// Migrations over mutual TLS (SenderOptions::tls, ReceiverOptions::tls):
// exact over every channel, and every wrong peer refused with its reason
// before any region exists on the destination.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/transport/tls_context.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::MakeTestCerts;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::livemig::testing::TestCerts;
using ::testing::IsEmpty;

constexpr uint64_t kMiB = 1 << 20;

class TlsMigration : public ::testing::Test {
 protected:
  void SetUp() override {
    auto certs = MakeTestCerts(TempDir("tls_migration_certs"));
    if (!certs.ok()) GTEST_SKIP() << "no test certificates: " << certs.status();
    certs_ = *certs;
    auto vm = FakeVm::Create({{0, 8 * kMiB, "", 0}, {1ull << 30, 4 * kMiB, "", 0}},
                             Fill::kMixed, 3);
    ASSERT_OK(vm.status());
    vm_ = std::move(*vm);
    root_ = TempDir("tls_migration_root");
  }

  std::unique_ptr<ReceiverThread> StartReceiver(bool tls, absl::Duration accept_timeout) {
    ReceiverOptions options;
    options.root_dir = root_;
    options.io_timeout = absl::Seconds(10);
    options.accept_timeout = accept_timeout;
    options.anonymous_regions_as_files = true;  // So "nothing created" is visible.
    if (tls) {
      auto context = TlsContext::ForDestination(certs_.good);
      EXPECT_OK(context.status());
      if (context.ok()) options.tls = *context;
    }
    return ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), options);
  }

  SenderOptions SourceOptions(const ReceiverThread& receiver, const std::string& dir,
                              const std::string& hostname) {
    SenderOptions options;
    options.destination = receiver.receiver->endpoint();
    options.channels = 4;
    options.io_timeout = absl::Seconds(10);
    if (!dir.empty()) {
      auto context = TlsContext::ForSource(dir, hostname);
      EXPECT_OK(context.status());
      if (context.ok()) options.tls = *context;
    }
    return options;
  }

  std::vector<std::filesystem::path> Created() const {
    return {std::filesystem::directory_iterator(root_), std::filesystem::directory_iterator()};
  }

  TestCerts certs_;
  std::unique_ptr<FakeVm> vm_;
  std::string root_;
};

TEST_F(TlsMigration, IsExactOverEveryChannelWhileTheGuestWrites) {
  auto receiver = StartReceiver(/*tls=*/true, absl::Seconds(20));
  Sender sender(SourceOptions(*receiver, certs_.good, "127.0.0.1"));
  vm_->StartWorkload({.writers = 1, .pages_per_second = 2000, .hot_bytes = 0, .seed = 9});
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm_->memory(), *vm_));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm_->memory(), got.memory);
  EXPECT_TRUE(got.verified);
  EXPECT_EQ(got.channels, 4u);
  EXPECT_EQ(stats.channels, 4u);
}

// The rogue source is refused in its TLS handshake: no Hello was read, no
// region made, and the destination goes on waiting for a real source.
TEST_F(TlsMigration, ASourceTheCaDidNotSignIsRefusedAndARealOneStillMigrates) {
  auto receiver = StartReceiver(/*tls=*/true, absl::Seconds(20));
  Sender rogue(SourceOptions(*receiver, certs_.rogue, "127.0.0.1"));
  EXPECT_THAT(rogue.Migrate(vm_->memory(), *vm_),
              StatusIsWithMessage(absl::StatusCode::kUnauthenticated,
                                  "the peer refused this side's certificate"));
  EXPECT_THAT(Created(), IsEmpty());
  Sender real(SourceOptions(*receiver, certs_.good, "localhost"));
  ASSERT_OK(real.Migrate(vm_->memory(), *vm_).status());
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  ExpectSameMemory(vm_->memory(), got.memory);
}

TEST_F(TlsMigration, ASourceRefusesADestinationThatIsNotTheNamedHost) {
  auto receiver = StartReceiver(/*tls=*/true, absl::Seconds(2));
  Sender sender(SourceOptions(*receiver, certs_.good, "migrate.example"));
  EXPECT_THAT(sender.Migrate(vm_->memory(), *vm_),
              StatusIsWithMessage(absl::StatusCode::kUnauthenticated, "hostname mismatch"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(Created(), IsEmpty());
}

TEST_F(TlsMigration, APlaintextSourceIsToldTheDestinationRequiresTls) {
  auto receiver = StartReceiver(/*tls=*/true, absl::Seconds(2));
  Sender sender(SourceOptions(*receiver, "", ""));
  EXPECT_THAT(sender.Migrate(vm_->memory(), *vm_),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "this destination requires TLS"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(Created(), IsEmpty());
}

TEST_F(TlsMigration, ATlsSourceToAPlaintextDestinationSaysItDoesNotSpeakTls) {
  auto receiver = StartReceiver(/*tls=*/false, absl::Seconds(2));
  Sender sender(SourceOptions(*receiver, certs_.good, "127.0.0.1"));
  EXPECT_THAT(sender.Migrate(vm_->memory(), *vm_),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "the peer does not speak TLS 1.3"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(Created(), IsEmpty());
}

}  // namespace
}  // namespace livemig
