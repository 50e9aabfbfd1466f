// End-to-end verification (migration/page_hashes.h, verification.h,
// source_audit.h) with a real Sender and Receiver: what each verification
// mode catches, and that every failure leaves the source running with its
// pages dirty and the destination with nothing published.
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/wire/compression.h"

namespace livemig {
namespace {

using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kPage = 4096;
// Guest memory: 4 MiB at 0 and 4 MiB at 1 GiB, random content, no writers
// (each test makes exactly the writes it is about).
constexpr uint64_t kSecondRegion = uint64_t{1} << 30;
constexpr uint64_t kTotalPages = 2 * 4 * kMiB / kPage;
// The page the tests write: region 1, page 100.
constexpr uint64_t kPageInRegion = 100;
constexpr uint64_t kPageAddr = kSecondRegion + kPageInRegion * kPage;

std::unique_ptr<FakeVm> TwoRegionVm(Fill fill = Fill::kRandom) {
  auto vm = FakeVm::Create({{0, 4 * kMiB, "", 0}, {kSecondRegion, 4 * kMiB, "", 0}},
                           fill, 11);
  EXPECT_TRUE(vm.ok()) << vm.status();
  if (!vm.ok()) return nullptr;
  // Every page dirty before the attempt: a failed attempt must give every
  // harvested bit back.
  for (size_t r = 0; r < (*vm)->memory().num_regions(); ++r) {
    (*vm)->memory().region(r).bitmap().SetAddrRange(0, 4 * kMiB);
  }
  return std::move(*vm);
}

SenderOptions Options(const Endpoint& to, SenderOptions::Verify verify) {
  SenderOptions options;
  options.destination = to;
  options.channels = 2;
  options.io_timeout = absl::Seconds(10);
  options.verify = verify;
  return options;
}

ReceiverOptions ReceiverAt(const std::string& root) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(10);
  options.accept_timeout = absl::Seconds(20);
  return options;
}

// Writes one byte of `addr`'s page after round 0, between rounds (the
// channels are idle): tracked (marked dirty) or through the raw pointer.
std::function<void(const MigrationStats&)> WriteAfterRound0(const FakeVm& vm, uint64_t addr,
                                                           bool tracked) {
  return [&vm, addr, tracked](const MigrationStats& stats) {
    if (stats.rounds != 1) return;
    if (tracked) {
      ASSERT_OK(vm.memory().WriteObj<uint8_t>(GuestAddress(addr), 0x5a));
      return;
    }
    const auto& region = vm.memory().region(1);
    region.region().as_ptr()[addr - region.start_addr().value] ^= 0xff;
  };
}

// The source after a failed attempt: running (resumed if it was paused) and
// every page dirty again.
void ExpectSourceRestored(const FakeVm& vm, int resumes) {
  EXPECT_FALSE(vm.paused());
  EXPECT_EQ(vm.resumes(), resumes);
  uint64_t dirty = 0;
  for (size_t r = 0; r < vm.memory().num_regions(); ++r) {
    dirty += vm.memory().region(r).bitmap().CountDirty();
  }
  EXPECT_EQ(dirty, kTotalPages);
}

// The attempt fails on both ends with DataLoss naming `named`, the source is
// restored (resumed once: the failure came in the paused final round), and
// nothing is left under the receiver's `root`.
void ExpectDataLossNaming(Sender& sender, FakeVm& vm, std::unique_ptr<ReceiverThread> receiver,
                          const std::string& root, const std::string& named) {
  EXPECT_THAT(sender.Migrate(vm.memory(), vm),
              StatusIsWithMessage(absl::StatusCode::kDataLoss, named));
  EXPECT_THAT(receiver->Join(), StatusIsWithMessage(absl::StatusCode::kDataLoss, named));
  ExpectSourceRestored(vm, /*resumes=*/1);
  receiver.reset();
  EXPECT_THAT(std::vector<std::filesystem::path>(std::filesystem::directory_iterator(root),
                                                 std::filesystem::directory_iterator()),
              IsEmpty());
}

// The tests of the page-hash path run uncompressed (random memory) and with
// each codec (text memory, so the batches do travel compressed: the hashes
// are those of the uncompressed pages).
class EndToEndVerificationCodecs : public ::testing::TestWithParam<wire::Codec> {
 protected:
  wire::Codec codec() const { return GetParam(); }
  std::unique_ptr<FakeVm> Vm() const {
    return TwoRegionVm(codec() == wire::Codec::kNone ? Fill::kRandom : Fill::kText);
  }
  SenderOptions OptionsFor(const Endpoint& to, SenderOptions::Verify verify) const {
    SenderOptions options = Options(to, verify);
    options.compression.codec = codec();
    return options;
  }
};

INSTANTIATE_TEST_SUITE_P(Codecs, EndToEndVerificationCodecs,
                         ::testing::Values(wire::Codec::kNone, wire::Codec::kZstd,
                                           wire::Codec::kLz4),
                         [](const ::testing::TestParamInfo<wire::Codec>& info) {
                           return std::string(wire::CodecName(info.param));
                         });

TEST_P(EndToEndVerificationCodecs, SentModeMigratesExactlyAndTheAuditFindsNothing) {
  auto vm = Vm();
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("e2e_sent")));
  SenderOptions options =
      OptionsFor(receiver->receiver->endpoint(), SenderOptions::Verify::kSent);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/true);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_TRUE(got.verified);
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(stats.verify, "sent");
  EXPECT_TRUE(stats.audit.ran);
  EXPECT_EQ(stats.audit.bytes, kTotalPages * kPage);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
  EXPECT_EQ(stats.downtime_breakdown.verify_ms, 0);
  if (codec() != wire::Codec::kNone) {
    EXPECT_GT(stats.compression.compressed_batches, 0u);
    EXPECT_EQ(got.compressed_batches, stats.compression.compressed_batches);
  }
}

// A page that the receiver's mapping changed between landing and being
// hashed (memory corruption on the destination) fails the migration in the
// paused final round: the source resumes, nothing is published.
TEST_P(EndToEndVerificationCodecs, PageChangedInTheReceiversMappingFailsNamingTheRegionAndPage) {
  auto vm = Vm();
  ASSERT_NE(vm, nullptr);
  const std::string root = TempDir("e2e_landed");
  ReceiverOptions receiver_options = ReceiverAt(root);
  receiver_options.anonymous_regions_as_files = true;  // So "published" is visible.
  std::atomic<int> landings{0};
  receiver_options.test_after_landing = [&landings](uint32_t region, uint64_t first,
                                                    uint8_t* data, size_t bytes) {
    const uint64_t pages = bytes / kPage;
    if (region != 1 || kPageInRegion < first || kPageInRegion >= first + pages) return;
    // Its second landing is the final round's (written after round 0).
    if (landings.fetch_add(1) == 1) data[(kPageInRegion - first) * kPage + 7] ^= 0x01;
  };
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  SenderOptions options =
      OptionsFor(receiver->receiver->endpoint(), SenderOptions::Verify::kSent);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/true);
  Sender sender(options);
  ExpectDataLossNaming(sender, *vm, std::move(receiver), root,
                       "region 1 page 100 (guest 0x40064000) of round 1 did not land as sent");
  EXPECT_EQ(landings.load(), 2);
}

// A page the sender recorded as sent but never put on the wire is caught at
// completion and named after the receiver asked for the chunk's hashes.
TEST_P(EndToEndVerificationCodecs, PageTheSenderSkippedFailsNamingTheRegionAndPage) {
  auto vm = Vm();
  ASSERT_NE(vm, nullptr);
  const std::string root = TempDir("e2e_skipped");
  ReceiverOptions receiver_options = ReceiverAt(root);
  receiver_options.anonymous_regions_as_files = true;
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), receiver_options);
  SenderOptions options =
      OptionsFor(receiver->receiver->endpoint(), SenderOptions::Verify::kSent);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/true);
  std::atomic<int> sends{0};
  options.test_drop_page = [&sends](uint32_t region, uint64_t page) {
    // Its second sending: the final round's version never leaves.
    return region == 1 && page == kPageInRegion && sends.fetch_add(1) == 1;
  };
  Sender sender(options);
  ExpectDataLossNaming(sender, *vm, std::move(receiver), root,
                       "region 1 (guest 0x40000000, 4194304 bytes) does not hold what the "
                       "source sent: page 100 (guest 0x40064000) differs");
}

// The guest writes a page after the sender hashed it, before it went out
// (the hook runs there). Uncompressed, pages go out straight from guest
// memory, so the page lands torn; the write marked it dirty, so round 1 sends
// it again and the destination ends exact. Compressed, the sender sent its
// copy: nothing tears, and round 1 sends the new version all the same.
TEST_P(EndToEndVerificationCodecs, AGuestWriteBetweenAPagesHashAndItsSendLosesNothing) {
  auto vm = Vm();
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("e2e_torn")));
  SenderOptions options =
      OptionsFor(receiver->receiver->endpoint(), SenderOptions::Verify::kSent);
  std::atomic<bool> written{false};
  options.test_drop_page = [&](uint32_t region, uint64_t page) {
    if (region == 1 && page == kPageInRegion && !written.exchange(true)) {
      EXPECT_OK(vm->memory().WriteObj<uint8_t>(GuestAddress(kPageAddr), 0x5a));
    }
    return false;
  };
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_TRUE(written.load());
  EXPECT_TRUE(got.verified);
  ExpectSameMemory(vm->memory(), got.memory);
  EXPECT_EQ(got.torn_pages, codec() == wire::Codec::kNone ? 1u : 0u);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
}

// The same write behind the tracker's back (never marked dirty, so never
// sent again): the torn page fails the migration when the final round ends,
// before the handover, even with verify=off (which sends no digests). From a
// copy, the destination would have held the old version without a word.
TEST(EndToEndVerification, AnUntrackedWriteThatTearsAPageFailsEvenWithVerifyOff) {
  auto vm = TwoRegionVm();
  ASSERT_NE(vm, nullptr);
  const std::string root = TempDir("e2e_torn_untracked");
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), ReceiverAt(root));
  SenderOptions options = Options(receiver->receiver->endpoint(), SenderOptions::Verify::kOff);
  std::atomic<bool> written{false};
  options.test_drop_page = [&](uint32_t region, uint64_t page) {
    if (region == 1 && page == kPageInRegion && !written.exchange(true)) {
      vm->memory().region(1).region().as_ptr()[kPageInRegion * kPage + 9] ^= 0xff;
    }
    return false;
  };
  // What the sender hashes, and what lands after the write.
  std::vector<uint8_t> page(kPage);
  std::memcpy(page.data(), vm->memory().region(1).region().as_ptr() + kPageInRegion * kPage, kPage);
  const uint64_t sent = HashPage(page.data());
  page[9] ^= 0xff;
  const uint64_t landed = HashPage(page.data());
  Sender sender(options);
  ExpectDataLossNaming(sender, *vm, std::move(receiver), root,
                       absl::StrCat("region 1 page 100 (guest 0x40064000) of round 0 did not "
                                    "land as sent: hash 0x", absl::Hex(landed),
                                    ", the source sent 0x", absl::Hex(sent),
                                    ", and it was not sent again (1 page like it)"));
}

// A write behind the tracker's back: verify=full re-hashes the paused source
// before the handover and fails naming the page; the guest resumes.
TEST(EndToEndVerification, FullModeFailsOnAnUntrackedWriteBeforeTheHandover) {
  auto vm = TwoRegionVm();
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("e2e_full")));
  SenderOptions options = Options(receiver->receiver->endpoint(), SenderOptions::Verify::kFull);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/false);
  Sender sender(options);
  EXPECT_THAT(
      sender.Migrate(vm->memory(), *vm),
      StatusIsWithMessage(absl::StatusCode::kDataLoss,
                          "verify=full: 1 page changed without being marked dirty: region 1 "
                          "page 100 (guest 0x40064000)"));
  EXPECT_THAT(receiver->Join(), StatusIs(absl::StatusCode::kDataLoss));
  ExpectSourceRestored(*vm, /*resumes=*/1);
  EXPECT_EQ(sender.last_stats().audit.untracked_pages, 1u);
  EXPECT_GT(sender.last_stats().downtime_breakdown.verify_ms, 0);
  // The failed attempt's stats cover it whole: everything it sent, and the
  // pause (which at least held the re-hash).
  EXPECT_GE(sender.last_stats().transferred, kTotalPages * kPage);
  EXPECT_GE(sender.last_stats().downtime_ms, sender.last_stats().downtime_breakdown.verify_ms);
  EXPECT_GE(sender.last_stats().total_time_ms, sender.last_stats().downtime_ms);
}

// The same write with verify=sent: the migration succeeds (the destination
// holds the version sent in round 0) and the audit names exactly that page.
TEST(EndToEndVerification, SentModeSucceedsAndTheAuditReportsTheUntrackedPage) {
  auto vm = TwoRegionVm();
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("e2e_audit")));
  SenderOptions options = Options(receiver->receiver->endpoint(), SenderOptions::Verify::kSent);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/false);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_TRUE(got.verified);
  EXPECT_EQ(stats.status, "completed");
  EXPECT_EQ(stats.audit.untracked_pages, 1u);
  EXPECT_THAT(stats.audit.first_addrs, ::testing::ElementsAre(kPageAddr));
  EXPECT_THAT(stats.ToJson(), HasSubstr("\"untracked-pages\":1,\"first-addrs\":[\"0x40064000\"]"));
  // Exactly that page differs between source and destination.
  const uint8_t* src = vm->memory().region(1).region().as_ptr();
  const uint8_t* dst = got.memory.region(1).region().as_ptr();
  for (uint64_t p = 0; p < 4 * kMiB / kPage; ++p) {
    EXPECT_EQ(std::memcmp(src + p * kPage, dst + p * kPage, kPage) != 0, p == kPageInRegion)
        << "page " << p;
  }
}

TEST(EndToEndVerification, OffModeSendsNoDigestsAndRunsNoAudit) {
  auto vm = TwoRegionVm();
  ASSERT_NE(vm, nullptr);
  auto receiver = ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0),
                                        ReceiverAt(TempDir("e2e_off")));
  SenderOptions options = Options(receiver->receiver->endpoint(), SenderOptions::Verify::kOff);
  options.on_round = WriteAfterRound0(*vm, kPageAddr, /*tracked=*/false);
  Sender sender(options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, sender.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(receiver->Join()));
  EXPECT_FALSE(got.verified);
  EXPECT_EQ(stats.verify, "off");
  EXPECT_FALSE(stats.audit.ran);
  EXPECT_EQ(stats.audit.untracked_pages, 0u);
}

}  // namespace
}  // namespace livemig
