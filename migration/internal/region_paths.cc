#include "migration/internal/region_paths.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/posix_error.h"

namespace livemig::migration_internal {
namespace {

// Refuses a symlink or non-directory at `name` under `dir_fd`; NotFound if it
// does not exist; other errors as PosixError.
absl::Status ClassifyDirEntry(int dir_fd, const std::string& name, int index,
                              const std::string& file_path) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return PosixError(absl::StrCat("region ", index, ": stat of \"", name,
                                   "\" in file_path \"", file_path, "\""),
                      errno);
  }
  if (S_ISLNK(st.st_mode)) {
    return RegionError(absl::StatusCode::kPermissionDenied, index, "file_path",
                       absl::StrCat("\"", file_path, "\": component \"", name,
                                    "\" is a symlink; refusing to follow it "
                                    "(it could leave the root directory)"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return InvalidRegionField(
        index, "file_path",
        absl::StrCat("\"", file_path, "\": component \"", name,
                     "\" exists and is not a directory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RegionError(absl::StatusCode code, int index,
                         absl::string_view field, absl::string_view what) {
  return absl::Status(code,
                      absl::StrCat("region ", index, ": ", field, " ", what));
}

absl::Status InvalidRegionField(int index, absl::string_view field,
                                absl::string_view what) {
  return RegionError(absl::StatusCode::kInvalidArgument, index, field, what);
}

absl::StatusOr<std::vector<std::string>> SplitFilePath(
    int index, const std::string& path, absl::string_view staging_suffix) {
  const std::string quoted = absl::StrCat("\"", path, "\"");
  if (path.empty()) return InvalidRegionField(index, "file_path", "is empty");
  if (path.find('\0') != std::string::npos) {
    return InvalidRegionField(index, "file_path", "contains a NUL byte");
  }
  if (path.front() == '/') {
    return InvalidRegionField(index, "file_path",
                              absl::StrCat(quoted, " is absolute"));
  }
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  for (const std::string& part : parts) {
    if (part == "..") {
      return InvalidRegionField(index, "file_path",
                                absl::StrCat(quoted, " contains \"..\""));
    }
    if (part.empty() || part == ".") {
      return InvalidRegionField(
          index, "file_path",
          absl::StrCat(quoted,
                       " is not canonical (empty or \".\" "
                       "component, or a trailing '/')"));
    }
    if (part.size() > NAME_MAX) {
      return InvalidRegionField(
          index, "file_path",
          absl::StrCat(quoted, " has a component longer than ", NAME_MAX,
                       " bytes"));
    }
  }
  const std::string& last = parts.back();
  if (absl::EndsWith(last, staging_suffix)) {
    return InvalidRegionField(
        index, "file_path",
        absl::StrCat(quoted, " ends with the staging suffix \"", staging_suffix,
                     "\""));
  }
  if (last.size() + staging_suffix.size() > NAME_MAX) {
    return InvalidRegionField(index, "file_path",
                              absl::StrCat(quoted,
                                           ": the staging name would be longer "
                                           "than ",
                                           NAME_MAX, " bytes"));
  }
  return parts;
}

absl::StatusOr<ScopedFd> OpenDir(int dir_fd, const std::string& name,
                                 bool create, int index,
                                 const std::string& file_path, bool* created) {
  if (created != nullptr) *created = false;
  if (create) {
    if (::mkdirat(dir_fd, name.c_str(), 0755) == 0) {
      if (created != nullptr) *created = true;
    } else if (errno != EEXIST) {
      return PosixError(absl::StrCat("region ", index, ": mkdir \"", name,
                                     "\" for file_path \"", file_path, "\""),
                        errno);
    }
  }
  const int fd = ::openat(dir_fd, name.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) return ScopedFd(fd);
  const int error = errno;
  if (error == ELOOP || error == ENOTDIR) {
    absl::Status why = ClassifyDirEntry(dir_fd, name, index, file_path);
    if (!why.ok()) return why;
  }
  return PosixError(absl::StrCat("region ", index, ": open directory \"", name,
                                 "\" of file_path \"", file_path, "\""),
                    error);
}

absl::Status CheckExistingPath(int root_fd,
                               const std::vector<std::string>& parts, int index,
                               const std::string& file_path,
                               absl::string_view staging_suffix) {
  ScopedFd current;
  int dir_fd = root_fd;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    absl::StatusOr<ScopedFd> next =
        OpenDir(dir_fd, parts[i], /*create=*/false, index, file_path);
    if (absl::IsNotFound(next.status())) return absl::OkStatus();
    if (!next.ok()) return next.status();
    current = std::move(*next);
    dir_fd = current.get();
  }
  struct stat st;
  const std::string& name = parts.back();
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return RegionError(absl::StatusCode::kPermissionDenied, index,
                         "file_path",
                         absl::StrCat("\"", file_path,
                                      "\" is a symlink; refusing to "
                                      "replace what it points to"));
    }
    if (!S_ISREG(st.st_mode)) {
      return InvalidRegionField(
          index, "file_path",
          absl::StrCat("\"", file_path, "\" exists and is not a regular file"));
    }
  } else if (errno != ENOENT) {
    return PosixError(
        absl::StrCat("region ", index, ": stat of \"", file_path, "\""), errno);
  }
  const std::string staging = absl::StrCat(name, staging_suffix);
  if (::fstatat(dir_fd, staging.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISDIR(st.st_mode)) {
    return InvalidRegionField(
        index, "file_path",
        absl::StrCat("staging path \"", file_path, staging_suffix,
                     "\" is a directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ScopedFd> LockRoot(const std::string& root) {
  ScopedFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    if (errno == ENOENT) return ScopedFd();
    return PosixError(absl::StrCat("cannot open the root directory ", root), errno);
  }
  if (::flock(dir.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another receiver uses ", root, " (it holds the directory's lock)"));
    }
    return PosixError(absl::StrCat("cannot lock the root directory ", root), errno);
  }
  return dir;
}

absl::StatusOr<std::vector<std::string>> RemoveStaleStaging(const std::string& root,
                                                            absl::string_view staging_suffix,
                                                            int max_depth) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code walk;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, walk);
  for (; !walk && it != fs::recursive_directory_iterator(); it.increment(walk)) {
    if (it.depth() >= max_depth) it.disable_recursion_pending();
    const fs::directory_entry& entry = *it;
    if (!absl::EndsWith(entry.path().filename().string(), staging_suffix)) continue;
    std::error_code kind;  // Not `walk`'s: an entry that vanished only skips itself.
    if (entry.is_symlink(kind) || !entry.is_regular_file(kind) || kind) continue;
    const std::string path = entry.path().string();
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) continue;
      const int error = errno;
      return PosixError(
          absl::StrCat("cannot remove the staging file ", path, " a stopped receiver left"), error);
    }
    removed.push_back(path);
  }
  return removed;
}

}  // namespace livemig::migration_internal
