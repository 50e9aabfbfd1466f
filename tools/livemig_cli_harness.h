// File: tools/livemig_cli_harness.h
//
// The livemig CLI as a user runs it, for tests: Process (a child with its
// stdout and stderr captured to files) and the LivemigCli fixture (a temporary
// directory with src/ and dst/, a receiver on a Unix socket in it).
//
// Thread safety: a test's own thread.
#ifndef LIVEMIG_TOOLS_LIVEMIG_CLI_HARNESS_H_
#define LIVEMIG_TOOLS_LIVEMIG_CLI_HARNESS_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace livemig::testing {

inline const char* kBinary = "tools/livemig";  // In the test's runfiles.

// A child process with its stdout and stderr captured to files.
struct Process {
  pid_t pid = -1;
  std::string out_path, err_path;

  static Process Start(const std::vector<std::string>& args, const std::string& dir,
                       const std::string& name) {
    Process p;
    p.out_path = dir + "/" + name + ".out";
    p.err_path = dir + "/" + name + ".err";
    p.pid = ::fork();
    if (p.pid == 0) {
      const int out = ::open(p.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(p.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return p;
  }
  // Exit status, or -signal; -1000 on timeout (the process is killed).
  int Wait(std::chrono::seconds timeout = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      int status = 0;
      const pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1000;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::string Out() const { return Slurp(out_path); }
  std::string Err() const { return Slurp(err_path); }
  static std::string Slurp(const std::string& path) {
    std::ifstream f(path);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
};

class LivemigCli : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/livemig-cli-XXXXXX";  // Short: Unix socket paths.
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directories(dir_ + "/src");
    std::filesystem::create_directories(dir_ + "/dst");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Socket() const { return dir_ + "/s.sock"; }

  // `livemig receive --once` into dst/ on Socket(), once it listens.
  Process StartReceiver(bool json = false, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {kBinary, "receive", "--unix=" + Socket(),
                                     "--dir=" + dir_ + "/dst", "--once"};
    if (json) args.push_back("--json");
    args.insert(args.end(), extra.begin(), extra.end());
    Process receiver = Process::Start(args, dir_, "receiver");
    AwaitSocket();
    return receiver;
  }

  // Waits (up to a minute) until a migration to the receiver began: it has
  // created region 0's partial file. A protocol event, not a fixed sleep: a
  // slow (TSan) sender may take seconds to fill its memory first.
  bool AwaitMigrationStarted() {
    const std::string partial = dir_ + "/dst/region-0.mem.livemig-partial";
    for (int i = 0; i < 6000 && !std::filesystem::exists(partial); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::filesystem::exists(partial);
  }

  // Waits until the receiver listens (its socket file exists).
  void AwaitSocket() {
    for (int i = 0; i < 500 && !std::filesystem::exists(Socket()); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(std::filesystem::exists(Socket()));
  }

  void WriteRandomFile(const std::string& path, size_t size) {
    std::mt19937_64 rng(42);
    std::vector<char> bytes(size);
    for (auto& b : bytes) b = static_cast<char>(rng());
    std::ofstream(path, std::ios::binary).write(bytes.data(), bytes.size());
  }

  std::string ReadRange(const std::string& path, size_t offset, size_t size) {
    std::ifstream f(path, std::ios::binary);
    f.seekg(offset);
    std::string bytes(size, '\0');
    f.read(bytes.data(), size);
    EXPECT_EQ(static_cast<size_t>(f.gcount()), size) << path;
    return bytes;
  }

  std::string dir_;
};

}  // namespace livemig::testing

#endif  // LIVEMIG_TOOLS_LIVEMIG_CLI_HARNESS_H_
