// The livemig CLI's usage errors: a bad flag exits 2 with a message naming
// it, before anything is listened on, connected to or filled (1 is only for
// a failed migration). One process per case; the cases are split in three
// tests so that the suite's shards run them side by side.
#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/livemig_cli_harness.h"

namespace livemig {
namespace {

using ::testing::HasSubstr;

using ::livemig::testing::kBinary;
using ::livemig::testing::Process;

struct UsageCase {
  std::vector<std::string> args;
  std::string message;
  int code = 2;
};

class LivemigCliUsage : public ::livemig::testing::LivemigCli {
 protected:
  void SetUp() override {
    LivemigCli::SetUp();
    std::filesystem::remove(dir_ + "/dst");  // The fixture's: bad usage must not make it.
  }
  std::string To() const { return "--unix=" + Socket(); }
  std::string Dir() const { return "--dir=" + dir_ + "/dst"; }

  void ExpectEach(const std::vector<UsageCase>& cases) {
    for (const UsageCase& c : cases) {
      std::vector<std::string> args = {kBinary};
      args.insert(args.end(), c.args.begin(), c.args.end());
      Process p = Process::Start(args, dir_, "bad");
      const int code = p.Wait(std::chrono::seconds(20));
      EXPECT_EQ(code, c.code) << c.args[0] << " " << (c.args.size() > 1 ? c.args.back() : "")
                              << ": " << p.Err();
      EXPECT_THAT(p.Err(), HasSubstr(c.message)) << "args ending " << c.args.back();
    }
    EXPECT_FALSE(std::filesystem::exists(Socket()));  // Nothing ever listened.
    // Nor was --dir made (it was, before the flags after it were checked).
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst"));
  }
};

TEST_F(LivemigCliUsage, BadSendValuesExitWithStatus2AndAClearMessage) {
  const std::string to = To();
  ExpectEach({
      {{"send", to, "--memory=12XB"}, "invalid size \"12XB\": expected a number"},
      {{"send", "--memory=1MiB"}, "--connect=HOST:PORT, --unix=PATH or --fd=N[,N...] is required"},
      {{"send", "--connect=localhost", "--memory=1MiB"}, "--connect"},
      {{"send", to, "--memory=1MiB", "--workload=bogus"}, "--workload"},
      {{"send", to, "--memory=1MiB", "--on-timeout=maybe"}, "expected cancel or force"},
      {{"send", to, "--memory=1MiB", "--channels=100"}, "--channels=100: expected 1 to 64"},
      {{"send", to, "--memory=1MiB", "--stall-rounds=-1"}, "--stall-rounds=-1: expected 0"},
      {{"send", to, "--memory=1MiB", "--throttle-steps=20,10"},
       "--throttle-steps=20,10: expected INITIAL,INCREMENT,MAX"},
      {{"send", to, "--memory=1MiB", "--throttle-steps=50,10,30"},
       "--throttle-steps=50,10,30: expected"},
      {{"send", to, "--memory=1MiB", "--throttle-steps=20,0,99"},
       "--throttle-steps=20,0,99: expected"},
      {{"send", to, "--memory=1MiB", "--workload=uniform:rate=1MB/s,seed=x"},
       "key \"seed\""},
      {{"send", to, "--memory=1MiB", "--max-bandwidth=fast"}, "--max-bandwidth"},
      {{"send", to, "--memory=1MiB", "--channels=1", "--max-bandwidth=100B/s"},
       "--max-bandwidth=100B/s: below 547 bytes/s no page goes out within a quarter of "
       "--io-timeout-s=30; give more, or a longer --io-timeout-s"},
      // A fraction of a byte per second was no cap at all; 1e30 overflowed.
      {{"send", to, "--memory=1MiB", "--channels=4", "--max-bandwidth=2000B/s"},
       "--max-bandwidth=2000B/s: below 2188 bytes/s no page goes out on each of --channels=4 "
       "within a quarter of --io-timeout-s=30; give more, fewer channels, or a longer "
       "--io-timeout-s"},
      {{"send", to, "--memory=1MiB", "--channels=1", "--max-bandwidth=0.5B/s"},
       "--max-bandwidth=0.5B/s: below 547 bytes/s"},
      {{"send", to, "--memory=1MiB", "--max-bandwidth=1e30B/s"},
       "--max-bandwidth=1e30B/s: too large"},
      {{"send", to, "--memory=1MiB", "--fill=purple"}, "expected random, zero, text or keep"},
      {{"send", to, "--region=gpa=0,size=1MiB,colour=red"}, "unknown key \"colour\""},
      {{"send", to, "--region=size=1MiB"}, "gpa= and size= are required"},
      {{"send", to, "--region=gpa=0,size=1MiB,file=/nonexistent/x"}, "/nonexistent/x"},
      {{"send", to, "--region=gpa=0,size=1MiB,name=x"}, "name= needs file="},
      {{"send", to}, "give --memory=SIZE or at least one --region"},
      {{"send", to, "--memory=1MiB", "--timeout-s=-5"}, "--timeout-s=-5: expected 0"},
      {{"send", to, "--memory=1MiB", "--io-timeout-s=0"}, "--io-timeout-s=0: expected"},
      {{"send", to, "--memory=1MiB", "--max-pause-s=-1"},
       "--max-pause-s=-1: expected 0 (none) to 86400 seconds"},
      {{"send", to, "--memory=1MiB", "--max-pause-s=nan"}, "--max-pause-s=nan: expected"},
      {{"send", to, "--memory=1MiB", "--io-timeout-s=nan"}, "--io-timeout-s=nan: expected"},
      {{"send", to, "--memory=1MiB", "--io-timeout-s=inf"}, "--io-timeout-s=inf: expected"},
      {{"send", to, "--memory=1MiB", "--verify=maybe"},
       "--verify=maybe: expected sent, full or off"},
      {{"send", to, "--memory=1MiB", "--tls-dir=/nonexistent", "--tls-hostname=x"},
       "--tls-dir: TLS: /nonexistent: no such directory"},
      {{"send", to, "--memory=1MiB", "--tls-hostname=x"}, "--tls-hostname needs --tls-dir"},
      {{"send", to, "--memory=1MiB", "--tls-dir=" + dir_}, "needs --tls-hostname"},
      {{"send", to, "--memory=1MiB", "--tracker=pml"},
       "--tracker=pml: expected api, uffd, kvm-log or kvm-ring"},
      {{"send", to, "--memory=1MiB", "--tracker=kvm-ring"}, "it needs --vm=kvm"},
      {{"send", to, "--vm=kvm", "--memory=1MiB"}, "--vm=kvm brings its own memory"},
      {{"send", "--fd=x", "--memory=1MiB"}, "--fd: bad endpoint"},
      {{"send", to, "--fd=3", "--memory=1MiB"}, "give one of --connect, --unix and --fd"},
      {{"send", "--fd=999", "--memory=1MiB"}, "--fd: fd 999: not a socket"},
      {{"send", to, "--vm=kvm:vcpus=x"}, "--vm: "},
      {{"send", to, "--vm=xen"}, "--vm: "},
      {{"send", to, "--memory=1MiB", "--channels=99999999999"}, "--channels=99999999999: "},
      {{"send", to, "--memory=8MiB", "--workload=hotset:size=16MiB,rate=1MB/s"},
       "its hot set is larger than the guest's 8.0 MiB"},
      {{"send", to, "--memory=1MiB", "--compress=gzip"},
       "--compress=\"gzip\": expected none, zstd, zstd:LEVEL (1..19), lz4 or lz4:ACCELERATION"},
      {{"send", to, "--memory=1MiB", "--compress=zstd:0"}, "--compress=\"zstd:0\": zstd levels are 1..19"},
      {{"send", to, "--memory=1MiB", "--compress=lz4:x"}, "--compress=\"lz4:x\": lz4 accelerations"},
      // Not usage: a migration that failed (nobody listens).
      {{"send", to, "--memory=1MiB"}, "UNAVAILABLE: connect to unix:", 1},
  });
}

TEST_F(LivemigCliUsage, BadReceiveValuesExitWithStatus2AndAClearMessage) {
  const std::string to = To();
  const std::string dir = Dir();
  ExpectEach({
      {{"receive", to}, "--dir=DIR is required"},
      {{"receive", to, dir, "--channels=-1"}, "--channels=-1: expected 1 to 64"},
      {{"receive", to, dir, "--channels=100000"}, "--channels=100000: expected 1 to 64"},
      {{"receive", to, dir, "--io-timeout-s=-1"}, "--io-timeout-s=-1: expected"},
      {{"receive", to, dir, "--region=gpa=0,size=1MiB,file=x"},
       "--region=gpa=0,size=1MiB,file=x: unknown key \"file\""},
      {{"receive", to, dir, "--region=gpa=0,size=2MiB", "--region=gpa=1MiB,size=1MiB"},
       "--region=gpa=1MiB,size=1MiB overlaps --region=gpa=0,size=2MiB"},
      {{"receive", to, dir, "--region=gpa=0,size=2MiB", "--durable"},
       "--durable cannot be combined with --region"},
      {{"receive", to, dir, "--tls-dir=" + dir_}, "--tls-dir: TLS: " + dir_ + "/ca-cert.pem"},
      {{"receive", "--fd=999", dir}, "--fd: fd 999: not a socket"},
      {{"receive", to, dir, "--resume-vm=0s"}, "--resume-vm=0s: expected a duration above 0"},
      {{"receive", to, dir, "--resume-vm=soon"}, "--resume-vm=soon: expected a duration"},
      {{"receive", to, dir, "--once=maybe"}, "--once=maybe: "},
      {{"receive", to, dir, "--session-timeout-s=-1"},
       "--session-timeout-s=-1: expected 0 (none) to 31536000 seconds"},
  });
}

// Flags of the other command, given twice, unknown, without their value.
TEST_F(LivemigCliUsage, MisusedFlagsExitWithStatus2AndAClearMessage) {
  const std::string to = To();
  const std::string dir = Dir();
  ExpectEach({
      {{"send", to, "--memory=1MiB", dir}, "--dir is a receive flag, not a send one"},
      {{"send", to, "--memory=1MiB", "--durable"}, "--durable is a receive flag"},
      {{"send", to, "--memory=1MiB", "--prealloc"}, "--prealloc is a receive flag"},
      {{"receive", to, dir, "--memory=1GiB"}, "--memory is a send flag, not a receive one"},
      {{"receive", to, dir, "--verify=full"}, "--verify is a send flag"},
      {{"migrate"}, "expected one command, send or receive"},
      {{"receive", to, dir, "--tls-hostname=x"}, "--tls-hostname is a send flag"},
      {{"send", to, "--memory=8MiB", "--memory=16MiB"}, "--memory is given twice"},
      {{"send", to, "--memory=8MiB", "-memory=16MiB"}, "--memory is given twice"},
      {{"send", to, "--memory=1MiB", "--io-timeout-s=2", "--io_timeout_s=3"},
       "--io-timeout-s is given twice"},
      {{"send", to, "--memory=1MiB", "--json", "--nojson"}, "--json is given twice"},
      {{"send", to, "--memory=1MiB", "--tls-dir="}, "--tls-dir= needs a value"},
      // Abseil's own parse errors exited 1, as if a migration had failed.
      {{"send", to, "--memory=1MiB", "--colour=red"}, "--colour is not a livemig flag"},
      {{"receive", to, dir, "--tls-dir="}, "--tls-dir= needs a value"},
      {{"send", to, "--memory=1MiB", "--region"}, "--region needs a value"},
      {{"receive", to, dir, "--fill=random"}, "--fill is a send flag"},
      {{"send", to, "--memory=1MiB", "--session-timeout-s=5"}, "--session-timeout-s is a receive"},
      {{"send", to, "--memory=1MiB", "--resume-vm"}, "--resume-vm is a receive flag"},
      {{"receive", to, dir, "--vm=kvm"}, "--vm is a send flag"},
      {{"receive", to, dir, "--compress=zstd"}, "--compress is a send flag"},
  });
}

}  // namespace
}  // namespace livemig
