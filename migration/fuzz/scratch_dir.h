// File: migration/fuzz/scratch_dir.h
//
// ScratchDir: the one directory a fuzz process may write in (Unix sockets,
// rebuilt region files), so a fuzz run never leaves files behind.
//
// It is a fresh /dev/shm/livemig-fuzz-XXXXXX (mkdtemp) when /dev/shm exists
// (tmpfs: region files cost no disk I/O), else under $TMPDIR or /tmp. Short
// on purpose: a Unix socket path must fit in 107 bytes, which Bazel's
// TEST_TMPDIR may not. Created on first use, removed with everything in it
// when the process exits normally (libFuzzer's -runs end, a replay test's
// end). A process killed by a crash cannot clean up, so each new process
// first removes the scratch directories whose owner is gone: the owner holds
// an flock on a file inside for its whole life.
//
// Thread safety: Get() is thread-safe (a function-local static); the
// directory's contents are the caller's to coordinate.
#ifndef LIVEMIG_MIGRATION_FUZZ_SCRATCH_DIR_H_
#define LIVEMIG_MIGRATION_FUZZ_SCRATCH_DIR_H_

#include <string>

namespace livemig::fuzz {

class ScratchDir {
 public:
  // The process's scratch directory (absolute, existing, initially empty).
  static const std::string& Get();

  // Removes everything inside `dir` (but the owner's lock), keeping `dir`.
  static void Empty(const std::string& dir);

 private:
  ScratchDir();
  ~ScratchDir();
  std::string path_;
  int lock_fd_ = -1;
};

}  // namespace livemig::fuzz

#endif  // LIVEMIG_MIGRATION_FUZZ_SCRATCH_DIR_H_
