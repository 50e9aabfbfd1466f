// File: migration/internal/file_landing.h
//
// FileLanding: lands a RAW page batch in its region's backing file with
// pwrite(2) through a small per-channel buffer, instead of reading the
// socket straight into the region's shared mapping.
//
// Why: the first touch of a page of a tmpfs/shmem or file mapping makes the
// kernel allocate it and clear it (clear_page) before the copy from the
// socket lands on it; a full-page write(2) into the page cache allocates the
// page without clearing it (shmem's and filemap's write paths only clear
// what the write does not cover). On a fresh destination the clearing is the
// largest single cost of receiving (29% of the whole in-process migration's
// CPU in a profile of //migration:bench); an experiment on this machine
// received 1 GiB over 2 loopback connections into a fresh, fallocated
// /dev/shm file at 2.3 GB/s through the mapping and 3.7 GB/s through pwrite,
// each hashing every page from the mapping afterwards. Into pages that are
// already there, the mapping wins (5.0 vs 3.9 GB/s): the receiver uses this
// only for round 0 of regions it created itself (every page fresh).
//
// Cost: one pwrite(2) per run (per MiB of a long run). Round 0's runs are
// long unless zero pages break them up; a batch of single-page runs costs a
// system call per page, about what the page fault it replaces cost.
//
// The bytes still end up exactly where the mapping shows them (MAP_SHARED of
// the same file). Each page is hashed in the buffer, right before pwrite(2)
// copies exactly those bytes into the file: hashing it from the mapping
// afterwards would fault every page into this process's page tables (the
// most expensive part of a fault on this machine's PVM guests) only to read
// it back from memory. The receiver checks these hashes against the batch's,
// as it checks those of pages hashed in the mapping.
//
// Writers of one file take turns (`file_writes`): tmpfs serializes writes
// to one inode under its inode lock anyway, and a second channel reader
// waiting there spins on the CPU the sender needs (16% of the receiver's
// CPU with 2 channels into one 2 GiB region); waiting on our own mutex it
// sleeps.
//
// Thread safety: one FileLanding per channel reader; not shared. The mutex
// passed to Land() is shared by every reader landing in the same file.
#ifndef LIVEMIG_MIGRATION_INTERNAL_FILE_LANDING_H_
#define LIVEMIG_MIGRATION_INTERNAL_FILE_LANDING_H_

#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/file_offset.h"
#include "migration/transport/connection.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

class FileLanding {
 public:
  // `buffer_bytes`: the bounce buffer, a multiple of the page size.
  explicit FileLanding(size_t buffer_bytes = size_t{1} << 20);

  // Reads `frame`'s payload (the pages of `batch.runs()`, run after run;
  // the caller has checked the runs against the region and payload_len ==
  // their pages * kMigrationPageSize) and writes page p of the batch's
  // region at file.start() + p * kMigrationPageSize of `file`; then checks
  // the frame checksum (wire::FinishPayload). Errors: the connection's and
  // frame_io's; a failed pwrite is PosixError's (ENOSPC: ResourceExhausted)
  // naming `what` (the region) and the file offset. pwrite(2)s hold
  // `file_writes`. After it returns OK, hashes() holds HashPage() of every
  // page of the batch, in run order.
  [[nodiscard]] absl::Status Land(Connection& conn, wire::IncomingFrame& frame,
                                  const proto::PageBatch& batch, const FileOffset& file,
                                  std::mutex& file_writes, absl::Duration timeout,
                                  const std::string& what);

  // The last Land()'s page hashes (valid until the next Land()).
  const std::vector<uint64_t>& hashes() const { return hashes_; }

 private:
  std::vector<uint8_t> buffer_;
  std::vector<uint64_t> hashes_;
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_FILE_LANDING_H_
