// `livemig receive` without --once, as a service runs it: one migration
// after another into the same --dir, stopped by a signal.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/livemig_cli_harness.h"

namespace livemig {
namespace {

using ::livemig::testing::kBinary;
using ::livemig::testing::LivemigCli;
using ::livemig::testing::Process;
using ::testing::HasSubstr;

class ReceiveLoop : public LivemigCli {
 protected:
  Process StartLoop(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {kBinary, "receive", "--unix=" + Socket(),
                                     "--dir=" + dir_ + "/dst"};
    args.insert(args.end(), extra.begin(), extra.end());
    Process receiver = Process::Start(args, dir_, "receiver");
    AwaitSocket();
    return receiver;
  }
  void Send(const std::string& memory) {
    Process sender = Process::Start(
        {kBinary, "send", "--unix=" + Socket(), "--memory=" + memory, "--channels=1"}, dir_,
        "sender");
    ASSERT_EQ(sender.Wait(), 0) << sender.Err();
  }
  // Waits until the receiver's stderr holds `text` `count` times.
  bool AwaitErr(const Process& p, const std::string& text, int count = 1) {
    for (int i = 0; i < 6000; ++i) {
      const std::string err = p.Err();
      int seen = 0;
      for (size_t at = err.find(text); at != std::string::npos; at = err.find(text, at + 1)) {
        ++seen;
      }
      if (seen >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::string Manifest() const { return Process::Slurp(dir_ + "/dst/manifest.json"); }
};

// Each migration's manifest stays until the next one commits (it used to be
// removed as the loop went back to waiting, so a service never had one).
TEST_F(ReceiveLoop, EachMigrationsManifestStaysUntilTheNextCommits) {
  Process receiver = StartLoop();
  ASSERT_NO_FATAL_FAILURE(Send("4MiB"));
  ASSERT_TRUE(AwaitErr(receiver, "livemig: received ")) << receiver.Err();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // Back to waiting.
  EXPECT_THAT(Manifest(), HasSubstr("\"size\":4194304"));
  ASSERT_NO_FATAL_FAILURE(Send("8MiB"));
  ASSERT_TRUE(AwaitErr(receiver, "livemig: received ", 2)) << receiver.Err();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_THAT(Manifest(), HasSubstr("\"size\":8388608"));
  ::kill(receiver.pid, SIGTERM);
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("livemig: stopped while waiting for a source"));
  EXPECT_THAT(Manifest(), HasSubstr("\"size\":8388608")) << "a stop removes nothing";
}

// A SIGTERM while a committed migration flushes cannot stop that migration
// (the destination owns the guest): it completes, its manifest is written,
// and then the receiver stops instead of waiting for the next source.
TEST_F(ReceiveLoop, ASigtermDuringTheFlushStopsTheReceiverOnceTheMigrationCompleted) {
  Process receiver = StartLoop({"--test-hang-after-commit"});
  ASSERT_NO_FATAL_FAILURE(Send("4MiB"));
  ASSERT_TRUE(AwaitErr(receiver, "holding before the flush")) << receiver.Err();
  ::kill(receiver.pid, SIGTERM);
  EXPECT_EQ(receiver.Wait(std::chrono::seconds(30)), 1) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("livemig: received "));
  EXPECT_THAT(receiver.Err(),
              HasSubstr("livemig: stopped by a signal after the migration completed"));
  EXPECT_THAT(Manifest(), HasSubstr("\"size\":4194304"));
}

}  // namespace
}  // namespace livemig
