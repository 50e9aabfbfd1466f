// File: migration/testing/scoped_tmpfs.h
//
// ScopedTmpfs: a tmpfs of a given size mounted on a test's directory for the
// test's lifetime, to make "the filesystem is full" real. Mounting needs
// CAP_SYS_ADMIN; without it the test says so and skips:
//
//   ScopedTmpfs small(dir, "1m");
//   if (!small.mounted()) GTEST_SKIP() << small.why();
#ifndef LIVEMIG_MIGRATION_TESTING_SCOPED_TMPFS_H_
#define LIVEMIG_MIGRATION_TESTING_SCOPED_TMPFS_H_

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace livemig::testing {

class ScopedTmpfs {
 public:
  // `size` as mount(8) takes it, e.g. "1m".
  ScopedTmpfs(std::string dir, const std::string& size) : dir_(std::move(dir)) {
    const std::string options = "size=" + size;
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, options.c_str()) == 0;
    if (!mounted_) {
      why_ = "cannot mount a " + size + " tmpfs on " + dir_ + " (" + std::strerror(errno) +
             "): needs CAP_SYS_ADMIN";
    }
  }
  ScopedTmpfs(const ScopedTmpfs&) = delete;
  ScopedTmpfs& operator=(const ScopedTmpfs&) = delete;
  ~ScopedTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }

  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string why_;
};

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_SCOPED_TMPFS_H_
