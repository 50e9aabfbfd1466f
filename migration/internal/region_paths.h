// File: migration/internal/region_paths.h
//
// Region file paths under the receiver's root directory (RegionStore's
// helpers): a table's file_path is parsed into canonical components, and its
// directories are opened (or created) one component at a time with
// openat(O_NOFOLLOW), so no symlink, "..", or absolute path can lead a
// region's file outside the root.
//
// Errors name the region: "region <index>: file_path ...". Symlinks are
// PermissionDenied, malformed paths InvalidArgument, a missing directory
// NotFound, other failures the errno's code (core/posix_error.h).
//
// Thread safety: pure functions of their arguments and the filesystem.
#ifndef LIVEMIG_MIGRATION_INTERNAL_REGION_PATHS_H_
#define LIVEMIG_MIGRATION_INTERNAL_REGION_PATHS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/file_offset.h"

namespace livemig::migration_internal {

// "region <index>: <field> <what>" with `code`.
absl::Status RegionError(absl::StatusCode code, int index,
                         absl::string_view field, absl::string_view what);
// RegionError with InvalidArgument.
absl::Status InvalidRegionField(int index, absl::string_view field,
                                absl::string_view what);

// Splits a file_path into its components, refusing anything that is not a
// canonical relative path (so one file has exactly one spelling), a last
// component ending with `staging_suffix`, and names too long for the staging
// name (last component + suffix) to fit NAME_MAX.
absl::StatusOr<std::vector<std::string>> SplitFilePath(
    int index, const std::string& path, absl::string_view staging_suffix);

// Opens directory `name` under `dir_fd` without following a symlink, creating
// it first (0755) when `create` (then *created says whether this call made
// it). NotFound if it is missing and !create.
absl::StatusOr<ScopedFd> OpenDir(int dir_fd, const std::string& name,
                                 bool create, int index,
                                 const std::string& file_path, bool* created = nullptr);

// Checks what already exists of root/file_path without creating anything:
// every existing directory component is a real directory (no symlink), the
// final name is absent or a regular file, the staging name (final name +
// `staging_suffix`) is not a directory.
absl::Status CheckExistingPath(int root_fd,
                               const std::vector<std::string>& parts, int index,
                               const std::string& file_path,
                               absl::string_view staging_suffix);


// One receiver per root directory: an exclusive flock(2) on `root`, held
// while the returned descriptor is open. FailedPrecondition "another
// receiver uses <root> (it holds the directory's lock)" when one does; a
// root that does not exist yet is not locked (an invalid ScopedFd).
absl::StatusOr<ScopedFd> LockRoot(const std::string& root);

// Removes every regular file under `root` (at most `max_depth` directories
// down, no symlink followed) whose name ends with `staging_suffix`: what a
// receiver killed mid-migration left, space claimed and all. Call with the
// root locked (LockRoot), so no running receiver's staging file is taken.
// The paths removed, in the order found. Errors name the file: "cannot
// remove the staging file <path> a stopped receiver left: <reason>"; an
// unreadable directory or an entry that vanished is skipped.
absl::StatusOr<std::vector<std::string>> RemoveStaleStaging(const std::string& root,
                                                            absl::string_view staging_suffix,
                                                            int max_depth);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_REGION_PATHS_H_
