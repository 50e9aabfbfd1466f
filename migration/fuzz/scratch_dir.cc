// File: migration/fuzz/scratch_dir.cc — see scratch_dir.h.
#include "migration/fuzz/scratch_dir.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "migration/fuzz/fuzz_check.h"

namespace livemig::fuzz {
namespace {

constexpr char kPrefix[] = "livemig-fuzz-";
// Held (flock) by the owning process for its whole life. A lock, not a pid:
// Bazel runs tests in their own pid namespaces, where another process's pid
// means nothing, but a flock on a shared tmpfs is seen by every process.
constexpr char kLockName[] = ".owner-lock";

std::string Base() {
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  const char* tmp = std::getenv("TMPDIR");
  return (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
}

// Scratch directories whose owner is gone (it crashed, or was killed): their
// lock can be taken.
void RemoveStale(const std::string& base) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(base, ec)) {
    if (!absl::StartsWith(entry.path().filename().string(), kPrefix)) continue;
    const std::string lock = absl::StrCat(entry.path().string(), "/", kLockName);
    const int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;  // Being created, or not ours: leave it.
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) std::filesystem::remove_all(entry.path(), ec);
    ::close(fd);
  }
}

}  // namespace

ScratchDir::ScratchDir() {
  const std::string base = Base();
  RemoveStale(base);
  std::string templ = absl::StrCat(base, "/", kPrefix, "XXXXXX");
  LIVEMIG_FUZZ_CHECK(::mkdtemp(templ.data()) != nullptr, "mkdtemp ", templ, ": ",
                     std::strerror(errno));
  path_ = templ;
  const std::string lock = absl::StrCat(path_, "/", kLockName);
  lock_fd_ = ::open(lock.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  LIVEMIG_FUZZ_CHECK(lock_fd_ >= 0 && ::flock(lock_fd_, LOCK_EX) == 0, "cannot lock ", lock,
                     ": ", std::strerror(errno));
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  ::close(lock_fd_);
}

const std::string& ScratchDir::Get() {
  static ScratchDir dir;  // Destroyed at exit(): the directory goes with it.
  return dir.path_;
}

void ScratchDir::Empty(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().filename() == kLockName) continue;
    std::filesystem::remove_all(entry.path(), ec);
  }
}

}  // namespace livemig::fuzz
