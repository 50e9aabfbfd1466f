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

// A later migration that does not use a file the earlier one published
// removes it once its own manifest is written: --dir holds what its manifest
// lists (region-1.mem used to stay, unlisted, for ever).
TEST_F(ReceiveLoop, AnEarlierMigrationsFileTheNextDoesNotUseIsRemoved) {
  Process receiver = StartLoop();
  Process two = Process::Start({kBinary, "send", "--unix=" + Socket(), "--channels=1",
                                "--region=gpa=0,size=4MiB", "--region=gpa=1GiB,size=4MiB"},
                               dir_, "sender");
  ASSERT_EQ(two.Wait(), 0) << two.Err();
  ASSERT_TRUE(AwaitErr(receiver, "livemig: received ")) << receiver.Err();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_TRUE(std::filesystem::exists(dir_ + "/dst/region-1.mem")) << receiver.Err();
  ASSERT_NO_FATAL_FAILURE(Send("8MiB"));
  ASSERT_TRUE(AwaitErr(receiver, "livemig: received ", 2)) << receiver.Err();
  ASSERT_TRUE(AwaitErr(receiver, "region-1.mem (the earlier migration's")) << receiver.Err();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/region-1.mem"));
  EXPECT_EQ(std::filesystem::file_size(dir_ + "/dst/region-0.mem"), 8u << 20);
  EXPECT_THAT(Manifest(), HasSubstr("\"size\":8388608"));
  ::kill(receiver.pid, SIGTERM);
  EXPECT_EQ(receiver.Wait(), 1) << receiver.Err();
}

// So does a receiver started again, for the files of the manifest it finds.
TEST_F(ReceiveLoop, ARestartedReceiverRemovesTheFilesOfTheManifestItFound) {
  {
    Process receiver = StartLoop({"--once"});
    Process two = Process::Start({kBinary, "send", "--unix=" + Socket(), "--channels=1",
                                  "--region=gpa=0,size=4MiB", "--region=gpa=1GiB,size=4MiB"},
                                 dir_, "sender");
    ASSERT_EQ(two.Wait(), 0) << two.Err();
    ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  }
  ASSERT_TRUE(std::filesystem::exists(dir_ + "/dst/region-1.mem"));
  std::filesystem::remove(Socket());
  Process receiver = StartLoop({"--once"});
  ASSERT_NO_FATAL_FAILURE(Send("4MiB"));
  ASSERT_EQ(receiver.Wait(), 0) << receiver.Err();
  EXPECT_THAT(receiver.Err(), HasSubstr("region-1.mem (the earlier migration's"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/dst/region-1.mem"));
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/dst/region-0.mem"));
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
