// File: migration/fuzz/scratch_dir.cc — see scratch_dir.h.
#include "migration/fuzz/scratch_dir.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "migration/fuzz/fuzz_check.h"

namespace livemig::fuzz {
namespace {

constexpr char kPrefix[] = "livemig-fuzz-";

std::string Base() {
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  const char* tmp = std::getenv("TMPDIR");
  return (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
}

// Scratch directories whose process is gone (it crashed, or was killed).
void RemoveStale(const std::string& base) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kPrefix)) continue;
    int pid = 0;
    if (!absl::SimpleAtoi(name.substr(sizeof(kPrefix) - 1), &pid) || pid <= 0) continue;
    if (::kill(pid, 0) == 0 || errno == EPERM) continue;  // Still running.
    std::filesystem::remove_all(entry.path(), ec);
  }
}

}  // namespace

ScratchDir::ScratchDir() {
  const std::string base = Base();
  RemoveStale(base);
  path_ = absl::StrCat(base, "/", kPrefix, ::getpid());
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  std::filesystem::create_directories(path_, ec);
  LIVEMIG_FUZZ_CHECK(!ec, "cannot create the scratch directory ", path_, ": ", ec.message());
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

const std::string& ScratchDir::Get() {
  static ScratchDir dir;  // Destroyed at exit(): the directory goes with it.
  return dir.path_;
}

void ScratchDir::Empty(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }
}

}  // namespace livemig::fuzz
