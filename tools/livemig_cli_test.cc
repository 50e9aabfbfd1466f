// The livemig CLI as a user runs it: two processes, real sockets, real files.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/protocol.h"
#include "migration/testing/fault_proxy.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/testing/scoped_tmpfs.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"
#include "tools/livemig_cli_harness.h"

namespace livemig {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

using ::livemig::testing::kBinary;
using ::livemig::testing::LivemigCli;
using ::livemig::testing::Process;

TEST_F(LivemigCli, ConvergingMigrationRebuildsFileAndAnonymousRegions) {
  const std::string disk = dir_ + "/src/disk.img";
  WriteRandomFile(disk, (8 << 20) + (128 << 10));
  Process receiver = StartReceiver(/*json=*/true);
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=16MiB",
       "--region=gpa=0x40000000,size=8MiB,file=" + disk + ",offset=64KiB", "--fill=keep",
       "--workload=uniform:rate=20MB/s", "--channels=2", "--downtime-ms=300", "--json"},
      dir_, "sender");
  ASSERT_EQ(sender.Wait(), 0) << sender.Err();
  ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  // The last stdout line of each side is its JSON result.
  EXPECT_THAT(sender.Out(), HasSubstr("\"status\":\"completed\""));
  EXPECT_THAT(sender.Err(), HasSubstr("verified: yes"));
  EXPECT_THAT(receiver.Out(), HasSubstr("\"verified\":true"));
  // The file-backed region: the rebuilt file holds the source file's bytes
  // (as the workload left them at pause) for the mapped range.
  EXPECT_TRUE(ReadRange(disk, 64 << 10, 8 << 20) ==
              ReadRange(dir_ + "/dst/disk.img", 64 << 10, 8 << 20));
  // The anonymous region: rebuilt as region-0.mem, digest-verified.
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 16u << 20);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/dst/manifest.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/disk.img.livemig-partial"));
}

TEST_F(LivemigCli, KillingTheReceiverMidMigrationFailsTheSenderAndResumesTheWorkload) {
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=64MiB", "--max-bandwidth=16MB/s",
       "--workload=uniform:rate=8MB/s", "--io-timeout-s=5", "--json"},
      dir_, "sender");
  ASSERT_TRUE(AwaitMigrationStarted()) << "the migration never began";
  ::kill(receiver.pid, SIGKILL);
  EXPECT_EQ(receiver.Wait(), -SIGKILL);
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("the source kept running (workload resumed)"));
  EXPECT_THAT(sender.Out(), HasSubstr("\"status\":\"failed\""));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/manifest.json"));
}

uint64_t FrameSize(wire::FrameType type, const google::protobuf::MessageLite& message) {
  absl::StatusOr<std::string> frame = wire::SerializeFrame(type, message);
  EXPECT_TRUE(frame.ok()) << frame.status();
  return frame.ok() ? frame->size() : 0;
}

// The receiver commits, but its COMMITTED answer never reaches the sender,
// which cannot tell whether the destination took the guest over: it exits 3
// without resuming its workload, and the receiver has the memory.
TEST_F(LivemigCli, LostCommitConfirmationLeavesTheSenderInDoubtWithExitStatus3) {
  Process receiver = StartReceiver();
  // What the receiver sends on the only channel: its Hello (the sender's
  // 24-digit id echoed), the region table's Ack, round 0's Ack (an idle
  // guest switches over after it), the VERIFIED Ack (a one-byte round
  // number), then COMMITTED, which the proxy cuts 10 bytes in.
  proto::Ack table_ack;
  table_ack.set_kind(proto::ACK_REGION_TABLE);
  proto::Ack round_ack;
  round_ack.set_kind(proto::ACK_ROUND);
  round_ack.set_expected_completion_us(0);  // Fixed size, whatever the value.
  proto::Ack verified;
  verified.set_kind(proto::ACK_VERIFIED);
  verified.set_round(2);
  FaultProxy::Fault fault;
  fault.kind = FaultProxy::Fault::Kind::kCutAfter;
  fault.client_to_server = false;
  fault.connection_index = 1;  // Connection 0 is livemig send's probe (no Hello).
  fault.offset =
      FrameSize(wire::FrameType::kHello,
                MakeHello(proto::ROLE_DESTINATION, 0, 1, std::string(24, '0'))) +
      FrameSize(wire::FrameType::kAck, table_ack) +
      FrameSize(wire::FrameType::kAck, round_ack) +
      FrameSize(wire::FrameType::kAck, verified) + 10;
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
      FaultProxy::Start(Endpoint::Unix(Socket()), fault);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  Process sender = Process::Start(
      {kBinary, "send", "--connect=" + (*proxy)->endpoint().ToString(), "--memory=1MiB",
       "--channels=1", "--io-timeout-s=5", "--json"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 3) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("handover in doubt"));
  EXPECT_THAT(sender.Err(), HasSubstr("the workload was NOT resumed"));
  EXPECT_THAT(sender.Out(), HasSubstr("\"status\":\"in-doubt\""));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 1u << 20);
}

// A write behind the tracker's back: the migration completes (the receiver
// has what was sent), the source audit names the page and the sender exits 4.
TEST_F(LivemigCli, UntrackedWriteIsReportedByTheAuditWithExitStatus4) {
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=4MiB", "--channels=1",
       "--test-untracked-write=0x2345", "--json"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 4) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("WARNING: 1 pages were written without being marked "
                                      "dirty (guest addresses 0x2000)"));
  EXPECT_THAT(sender.Out(), HasSubstr("\"untracked-pages\":1,\"first-addrs\":[\"0x2000\"]"));
  EXPECT_THAT(sender.Out(), HasSubstr("\"status\":\"completed\""));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
}

// The same raw-pointer write with --tracker=uffd: userfaultfd sees it, the
// page goes again in the final round, and the audit finds nothing.
TEST_F(LivemigCli, UffdTrackerSeesTheWriteTheApiMissed) {
  Process probe = Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=4MiB",
                                  "--tracker=uffd"},
                                 dir_, "probe");
  if (probe.Wait() == 2) GTEST_SKIP() << "no userfaultfd here: " << probe.Err();
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=4MiB", "--channels=1",
       "--test-untracked-write=0x2345", "--tracker=uffd", "--json"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("tracker uffd"));
  EXPECT_THAT(sender.Out(), HasSubstr("\"untracked-pages\":0"));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
}

// A real KVM guest moves while it runs and keeps running on the other side,
// with each KVM tracker. (That --tracker=api misses its stores, which the
// audit then names, is tests/kvm_migration_test's: it waits for the guest
// to write after round 0, which a command line cannot.)
TEST_F(LivemigCli, KvmGuestMigratesLiveAndResumesOnTheDestination) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
  for (const std::string tracker : {"kvm-log", "kvm-ring"}) {
    SCOPED_TRACE(tracker);
    std::filesystem::remove_all(dir_ + "/dst");
    Process receiver = Process::Start({kBinary, "receive", "--unix=" + Socket(),
                                       "--dir=" + dir_ + "/dst", "--once", "--json",
                                       "--resume-vm=200ms"},
                                      dir_, "receiver");
    AwaitSocket();
    Process sender = Process::Start(
        {kBinary, "send", "--unix=" + Socket(),
         "--vm=kvm:vcpus=2,pattern=counter,rate=32m,size=32m", "--tracker=" + tracker, "--json"},
        dir_, "sender");
    EXPECT_EQ(sender.Wait(), 0) << sender.Err();
    EXPECT_THAT(sender.Err(), HasSubstr("KVM guest: 2 vCPU(s), pattern counter"));
    EXPECT_THAT(sender.Err(), HasSubstr("tracker " + tracker));
    EXPECT_THAT(sender.Out(), HasSubstr("\"untracked-pages\":0"));
    EXPECT_THAT(sender.Out(), HasSubstr("\"vm\":{\"vcpus\":2,\"pattern\":\"counter\""));
    EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
    EXPECT_THAT(receiver.Out(), HasSubstr("\"invariant\":true"));
    EXPECT_THAT(receiver.Err(), HasSubstr("invariant held"));
  }
}

// A source that ran no KVM guest: --resume-vm says so (it used to report
// "KVM device state: truncated", the CLI workload's state being short), and
// --once exits 1.
TEST_F(LivemigCli, ResumeVmAfterASourceWithoutAGuestSaysThereIsNone) {
  Process receiver = Process::Start({kBinary, "receive", "--unix=" + Socket(),
                                     "--dir=" + dir_ + "/dst", "--once", "--json",
                                     "--resume-vm=200ms"},
                                    dir_, "receiver");
  AwaitSocket();
  Process sender =
      Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=4MiB"}, dir_, "sender");
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_THAT(receiver.Err(),
              HasSubstr("--resume-vm: cannot resume the guest: INVALID_ARGUMENT: KVM device "
                        "state: bad magic (not a livemig KVM device state: the source ran no "
                        "KVM guest, send --vm=kvm)"));
  EXPECT_THAT(receiver.Out(), HasSubstr("\"resume\":{\"invariant\":false,"));
}

TEST_F(LivemigCli, CompressedMigrationReportsItsRatioOnBothSides) {
  Process receiver = StartReceiver(/*json=*/true);
  Process sender = Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=8MiB",
                                   "--fill=text", "--compress=zstd:3", "--json"},
                                  dir_, "sender");
  ASSERT_EQ(sender.Wait(), 0) << sender.Err();
  ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(sender.Out(), HasSubstr("\"compression\":{\"codec\":\"zstd\",\"level\":3,"
                                      "\"pages\":2048,"));
  EXPECT_THAT(sender.Err(), HasSubstr("livemig: compression zstd:3: 8.0 MiB of pages sent as"));
  EXPECT_THAT(receiver.Out(), HasSubstr("\"compression\":\"zstd\",\"compressed_batches\":"));
  EXPECT_THAT(receiver.Out(), HasSubstr("\"verified\":true"));
}

// --verify=off: nothing is compared end to end, and the receiver says so
// instead of claiming a verified copy.
TEST_F(LivemigCli, VerifyOffIsReportedAsNotVerifiedOnBothSides) {
  Process receiver = StartReceiver(/*json=*/true);
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=4MiB", "--verify=off"}, dir_, "sender");
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("verified: no (--verify=off)"));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(receiver.Out(), HasSubstr("\"status\":\"completed\",\"verified\":false"));
  EXPECT_THAT(receiver.Err(), HasSubstr("NOT verified (the source sent no digests)"));
}

// The same with --verify=full: the migration fails before the handover,
// naming the page, and the receiver keeps nothing.
TEST_F(LivemigCli, UntrackedWriteFailsAFullVerifyBeforeTheHandover) {
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=4MiB", "--channels=1",
       "--test-untracked-write=0x2345", "--verify=full"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("the source kept running (workload resumed)"));
  EXPECT_THAT(sender.Err(), HasSubstr("DATA_LOSS: verify=full: 1 page changed without being "
                                      "marked dirty: region 0 page 2 (guest 0x2000)"));
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/region-0.mem"));
}

// --dir on a filesystem too small for the guest: refused when the region
// table arrives, with the file and the bytes named on both sides, and
// nothing left behind (no crash, no partial file keeping the tmpfs full).
TEST_F(LivemigCli, TooSmallFilesystemIsRefusedAtTheRegionTable) {
  const std::string dst = dir_ + "/dst";
  testing::ScopedTmpfs small(dst, "16m");
  if (!small.mounted()) GTEST_SKIP() << small.why();
  for (const bool prealloc : {false, true}) {
    SCOPED_TRACE(prealloc ? "--prealloc" : "plain");
    std::filesystem::remove(Socket());
    Process receiver = StartReceiver(false, prealloc ? std::vector<std::string>{"--prealloc"}
                                                     : std::vector<std::string>{});
    Process sender = Process::Start(
        {kBinary, "send", "--unix=" + Socket(), "--memory=64MiB", "--fill=zero"}, dir_, "sender");
    EXPECT_EQ(sender.Wait(), 1) << sender.Err();
    EXPECT_THAT(sender.Err(), HasSubstr("RESOURCE_EXHAUSTED: peer aborted: region 0: \""));
    EXPECT_THAT(sender.Err(), HasSubstr("region-0.mem.livemig-partial\" needs 67108864 bytes"));
    EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
    EXPECT_THAT(receiver.Err(), HasSubstr("RESOURCE_EXHAUSTED"));
    EXPECT_TRUE(std::filesystem::is_empty(dst));
  }
}

// --prealloc: the memory is made resident before round 0, and --json says
// how long that took and how much it populated (manifest.json does not).
TEST_F(LivemigCli, PreallocatingReceiverReportsItInItsJsonLine) {
  Process receiver = StartReceiver(/*json=*/true, {"--prealloc"});
  Process sender = Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=16MiB",
                                   "--fill=random", "--channels=2", "--json"},
                                  dir_, "sender");
  ASSERT_EQ(sender.Wait(), 0) << sender.Err();
  ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(receiver.Out(), HasSubstr("\"verified\":true"));
  EXPECT_THAT(receiver.Out(), HasSubstr(",\"prealloc\":{\"ms\":"));
  EXPECT_THAT(receiver.Out(), HasSubstr(",\"bytes\":16777216,\"before-connect\":false}}"));
  EXPECT_THAT(Process::Slurp(dir_ + "/dst/manifest.json"), Not(HasSubstr("prealloc")));
}

// --region on receive: the destination's memory is made and populated as
// the command starts, the guest lands in it, and it is published under the
// name the source gave the region; nothing prepared is left over.
TEST_F(LivemigCli, DeclaredMemoryIsPreparedBeforeTheSourceAndTakesTheGuest) {
  Process receiver = StartReceiver(
      /*json=*/true, {"--prealloc", "--region=gpa=0,size=16MiB", "--region=gpa=1GiB,size=4MiB"});
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--region=gpa=0,size=16MiB",
       "--region=gpa=0x40000000,size=4MiB", "--fill=random", "--workload=uniform:rate=20MB/s",
       "--channels=2", "--json"},
      dir_, "sender");
  ASSERT_EQ(sender.Wait(), 0) << sender.Err();
  ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("prepared 20.0 MiB of destination memory in"));
  EXPECT_THAT(receiver.Out(), HasSubstr("\"verified\":true"));
  EXPECT_THAT(receiver.Out(), HasSubstr(",\"bytes\":20971520,\"before-connect\":true}}"));
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 16u << 20);
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-1.mem"), 4u << 20);
  const std::string manifest = Process::Slurp(dir_ + "/dst/manifest.json");
  EXPECT_THAT(manifest, HasSubstr(dir_ + "/dst/region-0.mem"));
  EXPECT_THAT(manifest, HasSubstr(dir_ + "/dst/region-1.mem"));
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/dst")) {
    EXPECT_THAT(e.path().filename().string(), Not(HasSubstr(".livemig-"))) << e.path();
  }
}

// A guest that does not fit the declared memory is refused at the region
// table, before any page: the source keeps running, nothing is left behind.
TEST_F(LivemigCli, AGuestThatDoesNotFitTheDeclaredMemoryIsRefusedBeforeAnyPage) {
  Process receiver = StartReceiver(/*json=*/false, {"--region=gpa=0,size=8MiB"});
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=16MiB", "--fill=random"}, dir_, "sender");
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(),
              HasSubstr("FAILED_PRECONDITION: peer aborted: the VMM's memory: region 0 "
                        "(guest 0x0, 16.0 MiB) matches no --region; declared: gpa=0,size=8MiB"));
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/dst"));
}

// A region backed by a file called like the receiver's own output is
// refused when the table arrives: it would be overwritten by the manifest.
TEST_F(LivemigCli, RegionNamedLikeTheManifestIsRefused) {
  const std::string file = dir_ + "/src/manifest.json";
  WriteRandomFile(file, 1 << 20);
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--region=gpa=0,size=1MiB,file=" + file,
       "--fill=keep"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("INVALID_ARGUMENT: peer aborted: region 0: file_path "
                                      "\"manifest.json\" is a file the receiver writes itself"));
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_TRUE(std::filesystem::is_empty(dir_ + "/dst"));
}

// a/guest.mem and b/guest.mem: both would arrive as guest.mem. Refused
// before anything is sent, and name= says where each goes.
TEST_F(LivemigCli, RegionsFromDifferentFilesWithOneNameNeedNameEquals) {
  std::filesystem::create_directories(dir_ + "/src/a");
  std::filesystem::create_directories(dir_ + "/src/b");
  WriteRandomFile(dir_ + "/src/a/guest.mem", 1 << 20);
  WriteRandomFile(dir_ + "/src/b/guest.mem", 2 << 20);
  std::ofstream(dir_ + "/src/b/guest.mem", std::ios::in | std::ios::out | std::ios::binary)
      << "b is not a";
  const std::string a = "gpa=0,size=1MiB,file=" + dir_ + "/src/a/guest.mem";
  const std::string b = "gpa=0x100000,size=1MiB,file=" + dir_ + "/src/b/guest.mem";
  // Nobody listens yet: the refusal must come before any connection.
  Process refused = Process::Start({kBinary, "send", "--unix=" + Socket(), "--region=" + a,
                                    "--region=" + b, "--fill=keep"},
                                   dir_, "refused");
  EXPECT_EQ(refused.Wait(), 2) << refused.Err();  // Bad usage.
  EXPECT_THAT(refused.Err(), HasSubstr("would both be rebuilt as \"guest.mem\" from different "
                                       "files: give one of them name=REL"));
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--region=" + a + ",name=a/guest.mem",
       "--region=" + b + ",name=b/guest.mem", "--fill=keep"},
      dir_, "sender");
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_TRUE(ReadRange(dir_ + "/src/a/guest.mem", 0, 1 << 20) ==
              ReadRange(dir_ + "/dst/a/guest.mem", 0, 1 << 20));
  EXPECT_TRUE(ReadRange(dir_ + "/src/b/guest.mem", 0, 1 << 20) ==
              ReadRange(dir_ + "/dst/b/guest.mem", 0, 1 << 20));
}

// No receiver: said before GiBs are filled (which takes seconds), not after.
// Mutual TLS: the pair migrates; a sender without it, or that expects
// another name, is told why, and the receiver keeps waiting for a real one.
TEST_F(LivemigCli, TlsReceiverTakesATlsSenderAndRefusesAPlaintextOne) {
  auto certs = livemig::testing::MakeTestCerts(dir_ + "/certs");
  if (!certs.ok()) GTEST_SKIP() << certs.status();
  Process receiver = Process::Start({kBinary, "receive", "--unix=" + Socket(),
                                     "--dir=" + dir_ + "/dst", "--once", "--tls-dir=" + certs->good},
                                    dir_, "receiver");
  AwaitSocket();
  Process plain = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=64MiB", "--fill=random"}, dir_, "plain");
  EXPECT_EQ(plain.Wait(), 1) << plain.Err();
  EXPECT_THAT(plain.Err(), HasSubstr("this destination requires TLS"));
  Process wrong = Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=1MiB",
                                  "--tls-dir=" + certs->good, "--tls-hostname=other.example"},
                                 dir_, "wrong");
  EXPECT_EQ(wrong.Wait(), 1) << wrong.Err();
  EXPECT_THAT(wrong.Err(), HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(wrong.Err(), HasSubstr("hostname mismatch"));
  Process sender = Process::Start({kBinary, "send", "--unix=" + Socket(), "--memory=8MiB",
                                   "--tls-dir=" + certs->good, "--tls-hostname=localhost",
                                   "--channels=3", "--json"},
                                  dir_, "sender");
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_THAT(sender.Out(), HasSubstr("\"status\":\"completed\""));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 8u << 20);
}

// Sockets a manager connected and handed over (--fd, as QEMU's fd: URI):
// one per channel, inherited by both commands.
TEST_F(LivemigCli, MigratesOverInheritedSocketsOnePerChannel) {
  int a[2], b[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
  Process receiver = Process::Start(
      {kBinary, "receive", absl::StrCat("--fd=", a[1], ",", b[1]), "--dir=" + dir_ + "/dst",
       "--json"},
      dir_, "receiver");
  Process sender = Process::Start({kBinary, "send", absl::StrCat("--fd=", a[0], ",", b[0]),
                                   "--memory=8MiB", "--json"},
                                  dir_, "sender");
  for (int fd : {a[0], a[1], b[0], b[1]}) ::close(fd);
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("over 2 channel(s)"));
  // It exits after the one migration the sockets carry, without --once.
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(receiver.Out(), HasSubstr("\"verified\":true"));
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 8u << 20);
}

TEST_F(LivemigCli, MissingReceiverIsReportedBeforeMemoryIsFilled) {
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=8GiB", "--fill=random"}, dir_,
      "sender");
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("UNAVAILABLE: connect to unix:"));
  EXPECT_THAT(sender.Err(), ::testing::Not(HasSubstr("filling")));
  // With a receiver the fill does happen, after the probe.
  Process receiver = StartReceiver();
  Process filled = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=1MiB", "--fill=random"}, dir_,
      "filled");
  EXPECT_EQ(filled.Wait(), 0) << filled.Err();
  EXPECT_THAT(filled.Err(), HasSubstr("livemig: filling 1.0 MiB of guest memory (--fill=random)"));
  EXPECT_EQ(receiver.Wait(), 0) << receiver.Err();
}

// SIGTERM to a receiver nobody connected to yet: it says it stopped waiting,
// not that a migration failed.
TEST_F(LivemigCli, SigtermOnAnIdleReceiverSaysItStoppedWaiting) {
  Process receiver = StartReceiver();
  ::kill(receiver.pid, SIGTERM);
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("livemig: stopped while waiting for a source"));
  EXPECT_THAT(receiver.Err(), ::testing::Not(HasSubstr("migration failed")));
}

// The manifest means "complete and on disk": a receiver killed after it
// committed but before its flush leaves none, not even an older one.
TEST_F(LivemigCli, ReceiverKilledBetweenCommitAndFlushLeavesNoManifest) {
  std::ofstream(dir_ + "/dst/manifest.json") << "{\"status\":\"completed\"}";
  Process receiver = Process::Start({kBinary, "receive", "--unix=" + Socket(),
                                     "--dir=" + dir_ + "/dst", "--once",
                                     "--test-hang-after-commit"},
                                    dir_, "receiver");
  AwaitSocket();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=4MiB", "--channels=1"}, dir_,
      "sender");
  // The source is done as soon as the receiver committed: it never waits
  // for the receiver's disk.
  EXPECT_EQ(sender.Wait(), 0) << sender.Err();
  for (int i = 0; i < 500 && receiver.Err().find("holding before the flush") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_THAT(receiver.Err(), HasSubstr("holding before the flush"));
  ::kill(receiver.pid, SIGKILL);
  EXPECT_EQ(receiver.Wait(), -SIGKILL);
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/dst/region-0.mem"));  // Published...
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/manifest.json"));  // ...not complete.
}

TEST_F(LivemigCli, SigtermOnTheSenderCancelsAndTheReceiverDropsItsPartialFiles) {
  Process receiver = StartReceiver();
  Process sender = Process::Start(
      {kBinary, "send", "--unix=" + Socket(), "--memory=64MiB", "--max-bandwidth=16MB/s"},
      dir_, "sender");
  // SIGTERM once the migration runs (the receiver created its partial file;
  // 64 MiB at 16 MB/s then take 4 s more), not after a fixed sleep: a slow
  // (TSan) sender may still be filling its memory then.
  ASSERT_TRUE(AwaitMigrationStarted()) << "the migration never began";
  ::kill(sender.pid, SIGTERM);
  EXPECT_EQ(sender.Wait(), 1) << sender.Err();
  EXPECT_THAT(sender.Err(), HasSubstr("CANCELLED"));
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("partial files removed"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/region-0.mem"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/region-0.mem.livemig-partial"));
}

}  // namespace
}  // namespace livemig
