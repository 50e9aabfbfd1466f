// File: migration/internal/space_claim.h
//
// Claiming a staging file's blocks, so that a full filesystem is a clear
// error (ResourceExhausted naming the region, the file, the bytes it needs
// and the bytes free) before any page is accepted, and a write through the
// file's mapping never needs a block the filesystem no longer has (SIGBUS).
//
// What claiming costs depends on the filesystem, and so does when it is done:
//   tmpfs      fallocate allocates every page (about 0.3 s per GiB here,
//              before round 0 could start). The free space is checked now
//              (statvfs; every deferred file of a filesystem together:
//              CheckDeferredFit), and the receiver claims what is still a
//              hole once round 0 has landed through write(2), which
//              allocates the pages it writes anyway (ClaimHoles: only zero
//              pages are left). Until then nothing may be written through
//              the mapping into a hole: round 0's compressed batches claim
//              their runs first (ClaimRange), and a page that came as ZERO
//              is never cleared through the mapping.
//   hugetlbfs  claimed now (it reserves the huge pages); it has no write(2),
//              so its pages land through the mapping.
//   others     claimed now: fallocate only records extents.
// Filesystems without fallocate are checked with statvfs only.
//
// Thread safety: plain functions over a descriptor; the caller serializes
// them with any other use of the file's size.
#ifndef LIVEMIG_MIGRATION_INTERNAL_SPACE_CLAIM_H_
#define LIVEMIG_MIGRATION_INTERNAL_SPACE_CLAIM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace livemig::migration_internal {

struct SpaceClaim {
  // The claim waits for ClaimHoles (tmpfs): only the free space was checked.
  bool deferred = false;
  // Pages may land through write(2) (internal/file_landing.h): false on
  // hugetlbfs.
  bool writable = true;
};

// Bytes [offset, offset + length) of a file.
struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Claims `ranges` of `fd` now (the rest of the file stays a hole: a region
// at a large file_offset claims only its own bytes), or checks the free
// space and defers the claim, as the file comment says. `region` and `path`
// name the file in errors. ResourceExhausted when the space is not there
// (on tmpfs, less free space than the ranges need, checked with statvfs;
// elsewhere fallocate's ENOSPC or EDQUOT, the message giving the free space
// measured before it); other fallocate/fstatfs errors as PosixError.
[[nodiscard]] absl::StatusOr<SpaceClaim> ClaimSpace(int fd, const std::vector<ByteRange>& ranges,
                                                    int region, const std::string& path);
// ClaimSpace of [0, size).
[[nodiscard]] absl::StatusOr<SpaceClaim> ClaimSpace(int fd, uint64_t size, int region,
                                                    const std::string& path);

// A staging file whose claim was deferred, for CheckDeferredFit.
struct DeferredFile {
  int fd = -1;
  uint64_t size = 0;  // The bytes its ranges claim.
  int region = 0;
  std::string path;
};

// The deferred files' sizes added up per filesystem must fit its free space
// together (ClaimSpace checks each alone): ResourceExhausted naming the
// first file and the total otherwise.
[[nodiscard]] absl::Status CheckDeferredFit(const std::vector<DeferredFile>& files);

// Allocates [offset, offset + length) of `fd` now: for a write through the
// mapping of a file whose claim is still deferred (round 0's compressed
// batches). Errors as ClaimSpace.
[[nodiscard]] absl::Status ClaimRange(int fd, uint64_t offset, uint64_t length, int region,
                                      const std::string& path);

// Allocates every hole left in [start, start + size) of `fd`
// (SEEK_HOLE/SEEK_DATA), so that no page there needs a new block any more.
// Errors as ClaimSpace.
[[nodiscard]] absl::Status ClaimHoles(int fd, uint64_t size, int region,
                                      const std::string& path, uint64_t start = 0);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_SPACE_CLAIM_H_
