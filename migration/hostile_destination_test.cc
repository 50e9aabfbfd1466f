// A hostile or broken destination against the Sender: a hand-written fake
// destination, driven over raw sockets, refuses in its acknowledgements,
// answers Hellos that are not the source's, never answers, and the source is
// cancelled while it connects. Each time the source fails with the
// destination's reason or its own (naming the channel and the step), the
// guest runs again (or stays paused exactly when the handover is in doubt),
// and every page dirty before the attempt still is. The fake destination is
// migration/testing/fake_destination.h.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/dirty_sources/dirty_source.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/sender.h"
#include "migration/testing/fake_destination.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/transport/connection.h"
#include "migration/transport/listener.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/transport/tls_context.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeDestination;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::Frame;
using ::livemig::testing::ReadAnyFrame;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::WorkloadSpec;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMemory = 1 * kMiB;
constexpr uint64_t kPages = kMemory / kMigrationPageSize;
constexpr absl::Duration kIo = ::livemig::testing::kFakeDestinationIo;

SenderOptions Options(const Endpoint& to, uint32_t live_rounds = 2) {
  SenderOptions o;
  o.destination = to;
  o.channels = 2;
  o.io_timeout = kIo;
  o.max_rounds = live_rounds;
  o.on_limit = SenderOptions::OnLimit::kForce;
  o.stall_rounds = 0;
  o.downtime_limit = absl::ZeroDuration();
  o.batch_pages = 32;
  o.migration_id = "hostile-test";
  return o;
}

std::unique_ptr<FakeVm> Vm(bool workload = true) {
  auto vm = FakeVm::Create({{0, kMemory, "", 0}}, Fill::kMixed, 5);
  EXPECT_TRUE(vm.ok()) << vm.status();
  // Every page dirty before the attempt: a failed attempt must give every
  // harvested bit back.
  (*vm)->memory().region(0).bitmap().SetAddrRange(0, kMemory);
  if (workload) {
    WorkloadSpec w;
    w.writers = 1;
    w.pages_per_second = 2000;
    (*vm)->StartWorkload(w);
  }
  return std::move(*vm);
}

// Runs Migrate on this thread while `dest` runs on another.
struct RunResult {
  absl::StatusOr<MigrationStats> result = absl::UnknownError("not run");
  absl::Duration took;
};
RunResult MigrateAgainst(Sender& sender, FakeVm& vm, std::function<void()> dest) {
  std::thread t(std::move(dest));
  RunResult r;
  const absl::Time start = absl::Now();
  r.result = sender.Migrate(vm.memory(), vm);
  r.took = absl::Now() - start;
  t.join();
  return r;
}

// A failed attempt: the guest runs again, nothing in doubt, every page that
// was dirty before it still is.
void ExpectRestored(FakeVm& vm, Sender& sender) {
  EXPECT_FALSE(vm.paused());
  EXPECT_NE(sender.last_stats().status, "in-doubt");
  EXPECT_EQ(vm.memory().region(0).bitmap().CountDirty(), kPages);
}

// ---------------------------------------------------------------------------
// A VERIFIED acknowledgement with an error status is the destination's
// refusal: no handover, its code and words, the guest resumed.
TEST(HostileDestination, AVerifiedAckWithAnErrorStatusFailsWithoutTheHandover) {
  auto vm = Vm();
  FakeDestination dest(2);
  Sender sender(Options(dest.endpoint()));
  std::atomic<bool> got_handover{false};
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.UpToCompletion().status());
    // "verification failed": status DATA_LOSS on the VERIFIED ack.
    ASSERT_OK(dest.SendAck(proto::ACK_VERIFIED, 0,
                           static_cast<int32_t>(absl::StatusCode::kDataLoss), 0,
                           "region 0 page 7 differs"));
    absl::StatusOr<Frame> f = ReadAnyFrame(dest.ch(0));
    if (f.ok() && f->type == wire::FrameType::kAck && f->ack.kind() == proto::ACK_HANDOVER) {
      got_handover = true;
    }
    dest.Close();  // It discarded its copy, as it said.
  });
  EXPECT_FALSE(got_handover) << "the sender handed over after a failed verification";
  EXPECT_THAT(run.result,
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "the destination refused the migration's verification: "
                                  "region 0 page 7 differs"));
  EXPECT_FALSE(vm->paused()) << "the guest must be resumed: the destination refused";
  EXPECT_EQ(sender.last_stats().status, "failed");
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);
  if (vm->paused()) ASSERT_OK(vm->Resume());
}

// The same for a ROUND acknowledgement: nothing more is sent.
TEST(HostileDestination, ARoundAckWithAnErrorStatusFailsWithTheDestinationsReason) {
  auto vm = Vm();
  FakeDestination dest(2);
  Sender sender(Options(dest.endpoint(), /*live_rounds=*/3));
  std::atomic<int> frames_after{0};
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.AcceptAll());
    ASSERT_OK(dest.TableAndAck());
    absl::StatusOr<proto::IterationMarker> m = dest.ReadRound();
    ASSERT_OK(m.status());
    ASSERT_OK(dest.SendAck(proto::ACK_ROUND, m->round(),
                           static_cast<int32_t>(absl::StatusCode::kResourceExhausted), 0,
                           "disk full"));
    // Whatever comes next: a conforming sender closes (or aborts).
    while (true) {
      absl::StatusOr<Frame> f = ReadAnyFrame(dest.ch(0), absl::Seconds(2));
      if (!f.ok() || f->type == wire::FrameType::kAbort) break;
      ++frames_after;
      if (f->type == wire::FrameType::kIterationMarker) break;  // Round 1 was sent.
    }
    dest.Close();
  });
  EXPECT_EQ(frames_after, 0) << "the sender went on with round 1 after a failed round ack";
  EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                              "the destination refused round 0: disk full"));
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);
}

// A destination whose Hello withdraws a feature the source cannot do
// without (zero pages; several channels) is refused at that Hello, naming
// it, before any page: nothing was harvested, every page stays dirty.
TEST(HostileDestination, AHelloWithoutZeroPagesOrMultiChannelIsRefusedNamingTheFeature) {
  struct Case {
    uint32_t channels;
    uint64_t withdrawn;
    const char* name;
  };
  for (const Case& c : {Case{1, proto::FEATURE_ZERO_PAGES, "FEATURE_ZERO_PAGES"},
                        Case{2, proto::FEATURE_MULTI_CHANNEL, "FEATURE_MULTI_CHANNEL"}}) {
    SCOPED_TRACE(c.name);
    auto vm = Vm(/*workload=*/false);
    FakeDestination dest(1);  // The sender stops at channel 0's Hello.
    SenderOptions o = Options(dest.endpoint(), 1);
    o.channels = c.channels;
    Sender sender(o);
    RunResult run = MigrateAgainst(sender, *vm, [&] {
      ASSERT_OK(dest.AcceptAll([&](uint32_t, const proto::Hello& h) {
        proto::Hello r = FakeDestination::Agree(h);
        r.set_features(r.features() & ~c.withdrawn);
        return std::optional<proto::Hello>(r);
      }));
      // What follows is the source's Abort (or nothing), never its table.
      const absl::StatusOr<Frame> next = ReadAnyFrame(dest.ch(0), absl::Seconds(2));
      EXPECT_TRUE(!next.ok() || next->type == wire::FrameType::kAbort)
          << wire::FrameTypeName(next->type);
      dest.Close();
    });
    EXPECT_THAT(run.result,
                StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                    absl::StrCat("channel 0: Hello: the destination's Hello does "
                                                 "not agree to ",
                                                 c.name)));
    ExpectRestored(*vm, sender);
  }
}

// The destination's Hello answers another migration (or channel): refused
// before the region table goes out, naming both.
TEST(HostileDestination, AHelloForAnotherMigrationOrChannelIsRefusedNamingBoth) {
  for (bool other_channel : {false, true}) {
    SCOPED_TRACE(other_channel ? "another channel" : "another migration");
    auto vm = Vm(/*workload=*/false);
    FakeDestination dest(1);
    SenderOptions o = Options(dest.endpoint(), 1);
    o.channels = 1;
    Sender sender(o);
    RunResult run = MigrateAgainst(sender, *vm, [&] {
      ASSERT_OK(dest.AcceptAll([&](uint32_t, const proto::Hello& h) {
        proto::Hello r = FakeDestination::Agree(h);
        if (other_channel) {
          r.set_channel_index(1);
          r.set_channel_count(2);
        } else {
          r.set_migration_id("someone-elses-migration");
        }
        return std::optional<proto::Hello>(r);
      }));
      // What follows is the source's Abort (or nothing), never its table.
      const absl::StatusOr<Frame> next = ReadAnyFrame(dest.ch(0), absl::Seconds(2));
      EXPECT_TRUE(!next.ok() || next->type == wire::FrameType::kAbort)
          << wire::FrameTypeName(next->type);
      dest.Close();
    });
    EXPECT_THAT(run.result,
                StatusIsWithMessage(
                    absl::StatusCode::kFailedPrecondition,
                    other_channel ? "answers for migration \"hostile-test\", channel 1 of 2; "
                                    "this is migration \"hostile-test\", channel 0 of 1"
                                  : "answers for migration \"someone-elses-migration\", channel "
                                    "0 of 1; this is migration \"hostile-test\", channel 0 of 1"));
    ExpectRestored(*vm, sender);
  }
}

// Cancel() while the sender connects to a destination that listens but
// never accepts (Unix socket, backlog full) ends the attempt long before the
// io timeout would.
TEST(HostileDestination, CancelWhileConnectingIsPrompt) {
  const std::string path = absl::StrCat("/tmp/hostile-backlog-", ::getpid(), ".sock");
  ::unlink(path.c_str());
  int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(lfd, 0), 0);
  // Fill the backlog: this connection is never accepted.
  int filler = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(filler, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);

  auto vm = Vm();
  SenderOptions o = Options(Endpoint::Unix(path));
  o.channels = 1;
  o.io_timeout = absl::Seconds(30);
  Sender sender(o);
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    EXPECT_TRUE(sender.Cancel());
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<MigrationStats> r = sender.Migrate(vm->memory(), *vm);
  const absl::Duration took = absl::Now() - start;
  canceller.join();
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(took, absl::Seconds(15)) << "Cancel() waited for the io timeout while connecting";
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);
  ::close(filler);
  ::close(lfd);
  ::unlink(path.c_str());
}

// So does Cancel() during the TLS handshake with a destination that accepts
// the TCP connection but never answers the ClientHello.
TEST(HostileDestination, CancelDuringTheTlsHandshakeIsPrompt) {
  auto certs = ::livemig::testing::MakeTestCerts(::livemig::testing::TempDir("hostile_certs"));
  if (!certs.ok()) GTEST_SKIP() << certs.status();
  auto tls = TlsContext::ForSource(certs->good, "127.0.0.1");
  ASSERT_OK(tls.status());
  auto vm = Vm();
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  ASSERT_OK(listener.status());
  SenderOptions o = Options((*listener)->local_endpoint());
  o.channels = 1;
  o.io_timeout = absl::Seconds(30);
  o.tls = *tls;
  Sender sender(o);
  std::unique_ptr<Connection> held;
  std::thread dest([&] {
    auto c = (*listener)->Accept(absl::Seconds(5));
    if (c.ok()) held = std::move(*c);  // Never reads, never answers.
  });
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    EXPECT_TRUE(sender.Cancel());
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<MigrationStats> r = sender.Migrate(vm->memory(), *vm);
  const absl::Duration took = absl::Now() - start;
  canceller.join();
  dest.join();
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(took, absl::Seconds(15)) << "Cancel() waited for the io timeout in the handshake";
  EXPECT_FALSE(vm->paused());
}

// A destination that reads the final round just fast enough for every
// write to beat the io timeout cannot keep the guest paused past max_pause:
// the attempt fails saying so, and the guest resumes.
TEST(HostileDestination, ATricklingDestinationCannotKeepTheGuestPausedPastMaxPause) {
  constexpr uint64_t kBig = 24 * kMiB;
  auto made = FakeVm::Create({{0, kBig, "", 0}}, Fill::kRandom, 9);
  ASSERT_OK(made.status());
  auto vm = std::move(*made);
  WorkloadSpec w;
  w.writers = 2;
  w.pages_per_second = 15000;
  vm->StartWorkload(w);
  FakeDestination dest(2);
  SenderOptions o = Options(dest.endpoint(), 1);
  o.io_timeout = absl::Seconds(3);
  o.max_pause = absl::Seconds(1);
  o.batch_pages = 256;
  Sender sender(o);
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.AcceptAll());
    ASSERT_OK(dest.TableAndAck());
    ASSERT_OK(dest.ReadRound().status());
    dest.trickle_ = true;              // Channel 1 from its next frame on.
    absl::SleepFor(absl::Seconds(1));  // The guest dirties most of its memory.
    ASSERT_OK(dest.SendAck(proto::ACK_ROUND, 0));
    dest.Trickle(0);  // The final round, 32 KiB every 20 ms; never answers.
    dest.Close();
  });
  EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                              "the guest stayed paused for max_pause (1s) before "
                                              "the destination verified the migration: it reads "
                                              "or answers too slowly; the guest was resumed ("));
  EXPECT_LT(sender.last_stats().downtime_ms, 3000.0) << "paused past the io timeout";
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->resumes(), 1);
}

// A destination that reads round 0 just fast enough for every write to
// beat the io timeout cannot stretch the pre-copy phase past `timeout`: with
// kCancel the round is cut, the attempt fails saying so, the guest runs on
// and every page is dirty again. (Without the cut, round 0 would finish, some
// 15 s of trickle later, and fail with the between-rounds message instead.)
TEST(HostileDestination, ATricklingDestinationCannotStretchARoundPastTheTimeout) {
  constexpr uint64_t kBig = 24 * kMiB;
  auto made = FakeVm::Create({{0, kBig, "", 0}}, Fill::kRandom, 9);
  ASSERT_OK(made.status());
  auto vm = std::move(*made);
  vm->memory().region(0).bitmap().SetAddrRange(0, kBig);
  FakeDestination dest(2);
  SenderOptions o = Options(dest.endpoint(), 5);
  o.on_limit = SenderOptions::OnLimit::kCancel;
  o.timeout = absl::Seconds(1);
  o.batch_pages = 256;
  Sender sender(o);
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.AcceptAll());
    dest.trickle_ = true;  // Both channels, from round 0's first batch on.
    ASSERT_OK(dest.TableAndAck());
    dest.Trickle(0);
    dest.Close();
  });
  EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                              "did not converge within the 1s timeout: round 0 "
                                              "had not ended (the link or the destination is too "
                                              "slow)"));
  // What trickled: about 1 s of round 0, what the sockets held, and the
  // frames under way at the cut, which finish (Connection::Interrupt).
  // Round 0 whole would be all kBig.
  EXPECT_LT(dest.trickled_.load(), kBig * 3 / 4) << "round 0 was not cut";
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kBig / kMigrationPageSize);
}

// Nor one that reads every batch at once but holds the round's
// acknowledgement back for its io timeout.
TEST(HostileDestination, ALateRoundAckCannotStretchARoundPastTheTimeout) {
  auto vm = Vm();
  FakeDestination dest(2);
  SenderOptions o = Options(dest.endpoint(), 5);
  o.on_limit = SenderOptions::OnLimit::kCancel;
  o.timeout = absl::Seconds(1);
  o.io_timeout = absl::Seconds(20);
  Sender sender(o);
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.AcceptAll());
    ASSERT_OK(dest.TableAndAck());
    ASSERT_OK(dest.ReadRound().status());
    (void)ReadAnyFrame(dest.ch(0), absl::Seconds(20));  // No ack: until the source gives up.
    dest.Close();
  });
  EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                              "did not converge within the 1s timeout: round 0 "
                                              "had not ended"));
  EXPECT_LT(run.took, absl::Seconds(15)) << "waited for the io timeout";
  ExpectRestored(*vm, sender);
}

// Transport errors say which channel and which step they hit.
TEST(HostileDestination, ErrorsNameTheChannelAndTheStep) {
  {  // The Hello on channel 1 is never answered.
    auto vm = Vm();
    FakeDestination dest(2);
    SenderOptions o = Options(dest.endpoint());
    o.io_timeout = absl::Seconds(1);
    Sender sender(o);
    RunResult run = MigrateAgainst(sender, *vm, [&] {
      ASSERT_OK(dest.AcceptAll([](uint32_t i, const proto::Hello& h) {
        return i == 1 ? std::nullopt : std::optional<proto::Hello>(FakeDestination::Agree(h));
      }));
      (void)ReadAnyFrame(dest.ch(1), absl::Seconds(30));  // Until the source gives up.
      dest.Close();
    });
    EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                                "channel 1: Hello: read from 127.0.0.1:"));
    ExpectRestored(*vm, sender);
  }
  {  // The round-0 acknowledgement never comes.
    auto vm = Vm();
    FakeDestination dest(2);
    SenderOptions o = Options(dest.endpoint());
    o.io_timeout = absl::Seconds(1);
    Sender sender(o);
    RunResult run = MigrateAgainst(sender, *vm, [&] {
      ASSERT_OK(dest.AcceptAll());
      ASSERT_OK(dest.TableAndAck());
      ASSERT_OK(dest.ReadRound().status());
      (void)ReadAnyFrame(dest.ch(0), absl::Seconds(30));  // Until the source gives up.
      dest.Close();
    });
    EXPECT_THAT(run.result,
                StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                    "channel 0: the acknowledgement of round 0: read from"));
    ExpectRestored(*vm, sender);
  }
}

// An acknowledgement of another round, twice, or of another kind: DataLoss
// naming what was expected and what came.
TEST(HostileDestination, ARoundAckForAnotherRoundOrOfAnotherKindIsDataLoss) {
  const char* const kExpected[] = {
      "expected the acknowledgement of round 0, got ACK_ROUND for round 5",
      "expected the acknowledgement of round 1, got ACK_ROUND for round 0",
      "expected the acknowledgement of round 0, got ACK_VERIFIED for round 0"};
  for (int variant = 0; variant < 3; ++variant) {
    auto vm = Vm();
    FakeDestination dest(2);
    Sender sender(Options(dest.endpoint(), 3));
    RunResult run = MigrateAgainst(sender, *vm, [&] {
      ASSERT_OK(dest.AcceptAll());
      ASSERT_OK(dest.TableAndAck());
      ASSERT_OK(dest.ReadRound().status());
      if (variant == 0) ASSERT_OK(dest.SendAck(proto::ACK_ROUND, 5));
      if (variant == 1) {  // Twice.
        ASSERT_OK(dest.SendAck(proto::ACK_ROUND, 0));
        ASSERT_OK(dest.SendAck(proto::ACK_ROUND, 0));
        ASSERT_OK(dest.ReadRound().status());
      }
      if (variant == 2) ASSERT_OK(dest.SendAck(proto::ACK_VERIFIED, 0));
      absl::SleepFor(absl::Milliseconds(500));
      dest.Close();
    });
    EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kDataLoss, kExpected[variant]));
    ExpectRestored(*vm, sender);
  }
}

// COMMITTED with an error: the destination discarded its copy, so the guest
// resumes here; its words arrive with control bytes escaped.
TEST(HostileDestination, ACommittedWithAnErrorResumesTheGuest) {
  auto vm = Vm();
  FakeDestination dest(2);
  Sender sender(Options(dest.endpoint()));
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.UpToCompletion().status());
    ASSERT_OK(dest.SendAck(proto::ACK_VERIFIED));
    ASSERT_OK(ReadAnyFrame(dest.ch(0)).status());
    ASSERT_OK(dest.SendAck(proto::ACK_COMMITTED, 0, 13, 0, "rename failed\x1b[2J"));
    dest.Close();
  });
  EXPECT_THAT(run.result,
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "destination could not commit: rename failed\\x1b[2J"));
  ExpectRestored(*vm, sender);
}

// A destination that aborts because it was cancelled: the source's attempt
// failed (its stats say "failed", not "cancelled": the source cancelled
// nothing), with the destination's code and words.
TEST(HostileDestination, ADestinationsCancelledAbortIsAFailureOfTheAttempt) {
  auto vm = Vm();
  FakeDestination dest(2);
  Sender sender(Options(dest.endpoint()));
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.AcceptAll());
    ASSERT_OK(dest.TableAndAck());
    ASSERT_OK(dest.ReadRound().status());
    ASSERT_OK(dest.SendAbort(absl::StatusCode::kCancelled, "the operator stopped it"));
    dest.Close();
  });
  EXPECT_THAT(run.result, StatusIsWithMessage(absl::StatusCode::kCancelled,
                                              "peer aborted: the operator stopped it"));
  EXPECT_EQ(sender.last_stats().status, "failed");
  ExpectRestored(*vm, sender);
}

// An Abort after HANDOVER cannot say whether the destination committed: in
// doubt, the guest stays paused (it must never run on both sides).
TEST(HostileDestination, AnAbortAfterTheHandoverIsInDoubtAndTheGuestStaysPaused) {
  auto vm = Vm();
  FakeDestination dest(2);
  Sender sender(Options(dest.endpoint()));
  RunResult run = MigrateAgainst(sender, *vm, [&] {
    ASSERT_OK(dest.UpToCompletion().status());
    ASSERT_OK(dest.SendAck(proto::ACK_VERIFIED));
    absl::StatusOr<Frame> f = ReadAnyFrame(dest.ch(0));
    ASSERT_OK(f.status());
    ASSERT_EQ(f->ack.kind(), proto::ACK_HANDOVER);
    ASSERT_OK(dest.SendAbort(absl::StatusCode::kInternal, "after handover"));
    dest.Close();
  });
  EXPECT_THAT(run.result,
              StatusIsWithMessage(absl::StatusCode::kUnknown,
                                  "handover in doubt: the destination was told to take the guest "
                                  "over but did not confirm (INTERNAL: peer aborted: after "
                                  "handover)"));
  EXPECT_EQ(sender.last_stats().status, "in-doubt");
  EXPECT_TRUE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);
  ASSERT_OK(vm->Resume());
}

}  // namespace
}  // namespace livemig
