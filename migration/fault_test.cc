// Fault injection on real sockets: a FaultProxy between a Sender and a
// Receiver cuts one connection after a chosen number of bytes (in one
// direction; in the rounds, bytes into a chosen page batch of a chosen
// round) or flips one bit. Every fault before the handover must fail
// both ends with a transport or corruption code and leave the source VM
// running; a cut of the receiver's commit confirmation leaves the receiver
// owning the guest and the source paused, in doubt. Every page stays dirty
// at the source either way, and a second migration (no proxy) must rebuild
// the source exactly.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/testing/migration_harness.h"
#include "migration/testing/fault_proxy.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::StatusIs;
using ::livemig::testing::ExpectSameMemory;
using ::livemig::testing::ReceiverThread;
using ::livemig::testing::TempDir;
using ::livemig::testing::WorkloadSpec;
using ::testing::AnyOf;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMemorySize = 8 * kMiB;
constexpr uint64_t kPages = kMemorySize / kMigrationPageSize;
constexpr uint32_t kChannels = 2;
constexpr char kMigrationId[] = "fault-test";
// Live rounds before the forced final round: rounds 0, 1, 2, then final 3.
// Cuts in the final round use a single live round instead: the final round
// then carries everything dirtied during round 0, page batches on both
// channels.
constexpr uint32_t kLiveRounds = 3;
constexpr uint32_t kFinalCutLiveRounds = 1;

// A receiver on 127.0.0.1 with short deadlines, so no failure case hangs.
std::unique_ptr<ReceiverThread> StartReceiver(const std::string& root, bool prealloc = false) {
  // accept_timeout 4 s: a receiver whose source broke its handshake waits
  // that long for another one before it gives up (DeadlineExceeded).
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(3);
  options.accept_timeout = absl::Seconds(4);
  options.prealloc = prealloc;
  return ReceiverThread::Start(Endpoint::Tcp("127.0.0.1", 0), std::move(options));
}

// A bandwidth cap and a forced switchover after `live_rounds` make every run
// go through the same rounds (e.g. 0..2 live, 3 final) with round sizes that
// vary only a little between runs; small batches keep the two channels'
// shares of each round close to half.
SenderOptions FaultOptions(const Endpoint& to, uint32_t live_rounds) {
  SenderOptions options;
  options.destination = to;
  options.channels = kChannels;
  options.io_timeout = absl::Seconds(3);
  options.max_rounds = live_rounds;
  options.on_limit = SenderOptions::OnLimit::kForce;
  options.stall_rounds = 0;
  options.downtime_limit = absl::ZeroDuration();
  options.max_bandwidth = 40 * 1000 * 1000;
  options.batch_pages = 32;
  options.migration_id = kMigrationId;
  return options;
}

WorkloadSpec LightWorkload(uint64_t seed) {
  WorkloadSpec work;
  work.writers = 2;
  work.pages_per_second = 3000;
  work.seed = seed;
  return work;
}

uint64_t FrameSize(wire::FrameType type, const google::protobuf::MessageLite& message) {
  absl::StatusOr<std::string> frame = wire::SerializeFrame(type, message);
  EXPECT_TRUE(frame.ok()) << frame.status();
  return frame.ok() ? frame->size() : 0;
}

// The sizes of the frames the cuts around the setup and the completion are
// placed by: exact, from the frames themselves. Cuts in the rounds are placed
// at protocol events instead (FaultProxy::Fault::in_round), so no case
// depends on how many bytes a round happened to carry.
struct Measurement {
  uint64_t source_hello = 0;  // Client to server, first frame of a channel.
  uint64_t dest_hello = 0;    // Server to client, first frame of a channel.
  uint64_t table_ack = 0;     // Server to client on channel 0, second frame.
  uint64_t round_acks = 0;    // Server to client on channel 0, after the table's.
  uint64_t verified_ack = 0;  // Server to client on channel 0, after the rounds'.
};

Measurement FrameSizes(uint32_t live_rounds) {
  Measurement m;
  m.source_hello = FrameSize(wire::FrameType::kHello,
                             MakeHello(proto::ROLE_SOURCE, 0, kChannels, kMigrationId));
  m.dest_hello = FrameSize(wire::FrameType::kHello,
                           MakeHello(proto::ROLE_DESTINATION, 0, kChannels, kMigrationId));
  proto::Ack ack;
  ack.set_kind(proto::ACK_REGION_TABLE);
  m.table_ack = FrameSize(wire::FrameType::kAck, ack);
  for (uint32_t round = 0; round < live_rounds; ++round) {
    proto::Ack round_ack;
    round_ack.set_kind(proto::ACK_ROUND);
    round_ack.set_round(round);
    round_ack.set_expected_completion_us(0);  // Fixed size, whatever the value.
    m.round_acks += FrameSize(wire::FrameType::kAck, round_ack);
  }
  ack.set_kind(proto::ACK_VERIFIED);
  ack.set_round(live_rounds + 1);  // The number of rounds, the final one included.
  m.verified_ack = FrameSize(wire::FrameType::kAck, ack);
  return m;
}

// Bytes into a page batch for cuts in the rounds: inside a RAW batch's
// payload (its message holds 32 page hashes and a few runs); a ZERO batch is
// shorter, and the proxy then cuts at its last byte but one.
constexpr uint64_t kIntoBatch = 2000;

struct CutCase {
  std::string name;
  bool client_to_server;
  int connection;
  uint64_t (*offset)(const Measurement&);
  // The cut comes after the source handed the guest over and the receiver
  // committed, before the source read the confirmation: the receiver owns
  // the guest, the source reports the handover in doubt and stays paused.
  bool in_doubt = false;
  // The receiver drops the broken handshake and goes on waiting for a
  // source, until its accept_timeout: DeadlineExceeded.
  bool receiver_may_time_out = false;
  uint32_t live_rounds = kLiveRounds;
  // >= 0: `offset` is into PAGE_BATCH `batch` of this round of channel
  // `connection` (FaultProxy::Fault::in_round), not into the stream.
  int in_round = -1;
  int batch = 0;
  // The receiver preallocates its memory (ReceiverOptions::prealloc).
  bool prealloc = false;
};

std::ostream& operator<<(std::ostream& os, const CutCase& c) { return os << c.name; }

class ConnectionCut : public ::testing::TestWithParam<CutCase> {};

TEST_P(ConnectionCut, FailsBothEndsKeepsTheSourceRunningAndDirtyAndRetryIsExact) {
  const CutCase& c = GetParam();
  const uint64_t offset = c.offset(FrameSizes(c.live_rounds));
  SCOPED_TRACE(absl::StrCat(c.name, ": cut connection ", c.connection, " ",
                            c.client_to_server ? "client->server" : "server->client",
                            " after ", offset, " bytes",
                            c.in_round < 0 ? "" : absl::StrCat(" into page batch ", c.batch,
                                                               " of round ", c.in_round)));

  ASSERT_OK_AND_ASSIGN(auto vm, FakeVm::Create({{0, kMemorySize, "", 0}}, Fill::kMixed, 77));
  // Every page dirty before the attempt: a failed attempt must give every
  // harvested bit back.
  vm->memory().region(0).bitmap().SetAddrRange(0, kMemorySize);
  vm->StartWorkload(LightWorkload(78));

  auto receiver = StartReceiver(TempDir(absl::StrCat("cut_", c.name)), c.prealloc);
  ASSERT_NE(receiver, nullptr);
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.offset = offset;
  fault.client_to_server = c.client_to_server;
  fault.connection_index = c.connection;
  fault.in_round = c.in_round;
  fault.batch = c.batch;
  ASSERT_OK_AND_ASSIGN(auto proxy, FaultProxy::Start(receiver->receiver->endpoint(), fault));
  Sender sender(FaultOptions(proxy->endpoint(), c.live_rounds));
  const int resumes_before = vm->resumes();
  const absl::Time start = absl::Now();
  absl::StatusOr<MigrationStats> failed = sender.Migrate(vm->memory(), *vm);
  if (c.in_doubt) {
    EXPECT_THAT(failed, StatusIs(absl::StatusCode::kUnknown));
  } else {
    EXPECT_THAT(failed, AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                              StatusIs(absl::StatusCode::kDataLoss)));
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(8)) << "the sender hung on the cut";
  const absl::StatusOr<ReceivedMigration>& received = receiver->Join();
  if (c.in_doubt) {
    EXPECT_OK(received);
  } else if (c.receiver_may_time_out) {
    EXPECT_THAT(received, StatusIs(absl::StatusCode::kDeadlineExceeded));
  } else {
    EXPECT_THAT(received, AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                                StatusIs(absl::StatusCode::kDataLoss)));
  }
  const absl::Status receiver_status = received.status();
  proxy.reset();
  receiver.reset();
  if (c.in_doubt) {
    // The receiver may run the guest: the source must not, and it must not
    // lose a page either, should the operator resume it after all.
    EXPECT_EQ(sender.last_stats().status, "in-doubt");
    EXPECT_TRUE(vm->paused());
    EXPECT_EQ(vm->resumes(), resumes_before);
    ASSERT_OK(vm->Resume());  // The operator's call once the destination is known.
  } else {
    EXPECT_EQ(sender.last_stats().status, "failed");
    EXPECT_FALSE(vm->paused());
    // Every live round completed: the sender paused the VM for the final
    // round, so the failure must have resumed it (exactly once).
    const bool switched_over = sender.last_stats().rounds >= c.live_rounds;
    EXPECT_EQ(vm->resumes(), resumes_before + (switched_over ? 1 : 0));
  }
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);
  std::cerr << c.name << ": sender " << failed.status() << " after "
            << sender.last_stats().rounds << " complete rounds, receiver "
            << receiver_status << ", resumes " << vm->resumes() - resumes_before
            << "\n";

  // The source is intact: a direct migration rebuilds it exactly.
  auto retry = StartReceiver(TempDir(absl::StrCat("retry_", c.name)));
  ASSERT_NE(retry, nullptr);
  Sender second(FaultOptions(retry->receiver->endpoint(), c.live_rounds));
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, second.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(retry->Join()));
  EXPECT_TRUE(vm->paused());
  EXPECT_EQ(stats.status, "completed");
  ExpectSameMemory(vm->memory(), got.memory);
}

INSTANTIATE_TEST_SUITE_P(
    AtManyOffsets, ConnectionCut,
    ::testing::Values(
        CutCase{"SourceHelloOnChannel0", true, 0,
                [](const Measurement& m) { return m.source_hello / 2; }, false, true},
        CutCase{"SourceHelloOnChannel1", true, 1,
                [](const Measurement& m) { return m.source_hello / 2; }, false, true},
        CutCase{"DestinationHelloOnChannel0", false, 0,
                [](const Measurement& m) { return m.dest_hello / 2; }, false, true},
        CutCase{"DestinationHelloOnChannel1", false, 1,
                [](const Measurement& m) { return m.dest_hello / 2; }},
        CutCase{"RegionTable", true, 0,
                [](const Measurement& m) { return m.source_hello + 10; }},
        CutCase{"RegionTableAck", false, 0,
                [](const Measurement& m) { return m.dest_hello + 10; }},
        CutCase{"EarlyRound0OnChannel0", true, 0, [](const Measurement&) { return kIntoBatch; },
                false, false, kLiveRounds, /*in_round=*/0, /*batch=*/0},
        CutCase{"EarlyRound0OnChannel0Preallocated", true, 0,
                [](const Measurement&) { return kIntoBatch; }, false, false, kLiveRounds, 0, 0,
                /*prealloc=*/true},
        CutCase{"RegionTableAckPreallocated", false, 0,
                [](const Measurement& m) { return m.dest_hello + 10; }, false, false,
                kLiveRounds, -1, 0, /*prealloc=*/true},
        // Round 0 sends all 2048 pages in batches of 32: some 32 or more
        // page batches on each channel.
        CutCase{"LateRound0OnChannel1", true, 1, [](const Measurement&) { return kIntoBatch; },
                false, false, kLiveRounds, 0, 20},
        // Round 1 carries what the writers (3000 pages/s) dirtied during
        // round 0, which the 40 MB/s cap makes last at least 0.2 s.
        CutCase{"Round1OnChannel0", true, 0, [](const Measurement&) { return kIntoBatch; },
                false, false, kLiveRounds, 1, 0},
        CutCase{"Round1OnChannel1", true, 1, [](const Measurement&) { return kIntoBatch; },
                false, false, kLiveRounds, 1, 1},
        // With one live round, the final round (round 1) carries everything
        // dirtied during round 0.
        CutCase{"FinalRoundOnChannel0", true, 0, [](const Measurement&) { return kIntoBatch; },
                false, false, kFinalCutLiveRounds, 1, 0},
        CutCase{"FinalRoundOnChannel1", true, 1, [](const Measurement&) { return kIntoBatch; },
                false, false, kFinalCutLiveRounds, 1, 0},
        // Before the handover: an ordinary failure on both ends.
        CutCase{"VerifiedAck", false, 0,
                [](const Measurement& m) {
                  return m.dest_hello + m.table_ack + m.round_acks + 10;
                }},
        CutCase{"CommittedAck", false, 0,
                [](const Measurement& m) {
                  return m.dest_hello + m.table_ack + m.round_acks + m.verified_ack + 10;
                },
                /*in_doubt=*/true}),
    [](const ::testing::TestParamInfo<CutCase>& info) { return info.param.name; });

// Uncompressed, and compressed (text memory: every batch compresses, so the
// flipped bit lands in a compressed payload).
class CorruptedByte : public ::testing::TestWithParam<wire::Codec> {};

INSTANTIATE_TEST_SUITE_P(Codecs, CorruptedByte,
                         ::testing::Values(wire::Codec::kNone, wire::Codec::kZstd,
                                           wire::Codec::kLz4),
                         [](const ::testing::TestParamInfo<wire::Codec>& info) {
                           return std::string(wire::CodecName(info.param));
                         });

TEST_P(CorruptedByte, InRound0PageDataFailsTheReceiverWithDataLossAndRetryIsExact) {
  const Measurement clean = FrameSizes(kLiveRounds);  // An uncompressed Hello's size.
  const wire::Codec codec = GetParam();
  ASSERT_OK_AND_ASSIGN(auto vm,
                       FakeVm::Create({{0, kMemorySize, "", 0}},
                                      codec == wire::Codec::kNone ? Fill::kMixed : Fill::kText,
                                      77));
  vm->memory().region(0).bitmap().SetAddrRange(0, kMemorySize);
  vm->StartWorkload(LightWorkload(79));
  auto receiver = StartReceiver(TempDir("corrupt"));
  ASSERT_NE(receiver, nullptr);
  // Channel 0 carries Hello, RegionTable, then the first batch of round 0
  // (pages 0..31): its RAW frame comes first, with a message of at most a
  // few hundred bytes and (about half of 32 pages being random) several
  // pages of payload. The flipped bit lands 12 KiB after the Hello: inside
  // that payload, past the small RegionTable and the batch's header.
  // Compressed, 32 text pages take 20-40 KiB: 12 KiB is inside them too.
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCorruptAt;
  fault.offset = clean.source_hello + 12 * 1024;
  fault.client_to_server = true;
  fault.connection_index = 0;
  ASSERT_OK_AND_ASSIGN(auto proxy, FaultProxy::Start(receiver->receiver->endpoint(), fault));
  SenderOptions options = FaultOptions(proxy->endpoint(), kLiveRounds);
  options.compression.codec = codec;
  Sender sender(options);
  absl::StatusOr<MigrationStats> failed = sender.Migrate(vm->memory(), *vm);
  EXPECT_THAT(failed, AnyOf(StatusIs(absl::StatusCode::kUnavailable),
                            StatusIs(absl::StatusCode::kDataLoss)));
  const absl::Status received = receiver->Join().status();
  EXPECT_THAT(received, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(received.message()), HasSubstr("region 0"));
  EXPECT_THAT(std::string(received.message()), HasSubstr("round 0"));
  proxy.reset();
  receiver.reset();
  EXPECT_FALSE(vm->paused());
  EXPECT_EQ(vm->memory().region(0).bitmap().CountDirty(), kPages);

  auto retry = StartReceiver(TempDir("corrupt_retry"));
  ASSERT_NE(retry, nullptr);
  SenderOptions retry_options = FaultOptions(retry->receiver->endpoint(), kLiveRounds);
  retry_options.compression.codec = codec;
  Sender second(retry_options);
  ASSERT_OK_AND_ASSIGN(MigrationStats stats, second.Migrate(vm->memory(), *vm));
  ASSERT_OK_AND_ASSIGN(ReceivedMigration got, std::move(retry->Join()));
  EXPECT_EQ(stats.status, "completed");
  if (codec != wire::Codec::kNone) EXPECT_GT(stats.compression.compressed_batches, 0u);
  ExpectSameMemory(vm->memory(), got.memory);
}

}  // namespace
}  // namespace livemig
