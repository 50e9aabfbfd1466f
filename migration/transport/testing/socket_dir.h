// File: migration/transport/testing/socket_dir.h
//
// SocketDir(): a directory for Unix socket files in tests. TEST_TMPDIR when
// its paths fit in sun_path, else (Bazel's sandboxed TEST_TMPDIR is often too
// long) one fresh directory under /tmp, made on first use and removed at exit
// (the listeners remove their own socket files).
//
// Thread safety: SocketDir() may be called from any thread.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_TESTING_SOCKET_DIR_H_
#define LIVEMIG_MIGRATION_TRANSPORT_TESTING_SOCKET_DIR_H_

#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "migration/transport/endpoint.h"

namespace livemig::testing {

class SocketDirectory {
 public:
  SocketDirectory() {
    const char* test_tmpdir = std::getenv("TEST_TMPDIR");
    if (test_tmpdir != nullptr &&
        std::strlen(test_tmpdir) + 32 < Endpoint::kMaxUnixPathLength) {
      path_ = test_tmpdir;
      return;
    }
    char pattern[] = "/tmp/livemig_sockets.XXXXXX";
    const char* dir = ::mkdtemp(pattern);
    path_ = dir == nullptr ? "/tmp" : dir;
    created_ = dir != nullptr;
  }
  SocketDirectory(const SocketDirectory&) = delete;
  SocketDirectory& operator=(const SocketDirectory&) = delete;
  ~SocketDirectory() {
    if (created_) ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool created_ = false;
};

inline std::string SocketDir() {
  static SocketDirectory directory;
  return directory.path();
}

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TRANSPORT_TESTING_SOCKET_DIR_H_
