// File: tools/cli/prepared_memory.h
//
// PreparedMemory: the destination's own memory, made before any source
// connects, as a VMM makes its guest memory at start-up (QEMU's -m with
// -mem-prealloc): `livemig receive --region=gpa=ADDR,size=SIZE ...` makes
// one file per declared region in --dir (a hidden ".livemig-prepared-<i>"
// name), sized, and with --prealloc populated (every page allocated, on one
// helper thread per core) while the command already listens. The receiver
// then lands the incoming region of the same guest address and size in it
// (ReceiverOptions::region_memory: the VMM's memory; not populated, also its
// file, so that round 0 fills the holes with pwrite), and at the commit the
// file is renamed onto the name the source gave the region (what the receiver would have made: file regions by their path,
// anonymous ones "region-<index>.mem").
//
//   ASSIGN_OR_RETURN(PreparedMemory prepared,
//                    PreparedMemory::Make(dir, specs, /*populate=*/true));
//   options.region_memory = prepared.Provider();
//   options.before_commit = [&] { return prepared.Commit(); };
//   ... got = receiver->ReceiveOne() ...
//   ASSIGN_OR_RETURN(got->files, prepared.Flush(got->files));
//
// Errors:
//   Make: InvalidArgument for a bad or overlapping --region (named as given),
//         or one that is not a whole number of 4 KiB pages; PosixError's for
//         files that cannot be made (naming the file); a population that
//         fails is ResourceExhausted naming the region and file (prealloc.h).
//   Provider: FailedPrecondition for an incoming region that matches no
//         declared one ("region 1 (guest 0x40000000, 1.00 GiB) matches no
//         --region; declared: gpa=0,size=2G"), or a table that leaves a
//         declared one unused: the migration is refused before any page,
//         and the source keeps running.
//         FailedPrecondition too for what Publish could not rebuild: a file
//         region at a file offset other than 0 (its file would hold other
//         regions too), or two regions that would be published under one
//         name.
//   Commit: PosixError's of mkdir/rename, naming the file (nothing is
//         renamed then).
//   Flush: PosixError's of msync/fsync, naming the file ("committed, but
//         ...": the migration is done, and its files are never removed).
// Files are removed by the destructor unless Commit() succeeded (a failed
// migration leaves nothing behind that looks like a region; a committed one
// never loses its memory).
//
// Thread safety: the Provider runs on the receiver's thread while the owner
// waits in ReceiveOne(); nothing else touches the object meanwhile.
#ifndef LIVEMIG_TOOLS_CLI_PREPARED_MEMORY_H_
#define LIVEMIG_TOOLS_CLI_PREPARED_MEMORY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/destination_memory.h"

namespace livemig::cli {

// One --region of `livemig receive`: where the guest's memory starts, and
// how much there is.
struct DeclaredRegion {
  uint64_t gpa = 0;
  uint64_t size = 0;
  std::string text;  // The flag as given, for messages.
};

// Parses a receive --region value ("gpa=ADDR,size=SIZE"; sizes as units.h).
[[nodiscard]] absl::StatusOr<DeclaredRegion> ParseDeclaredRegion(const std::string& text);

// InvalidArgument naming both flags if two of `specs` overlap.
[[nodiscard]] absl::Status CheckDeclaredRegions(const std::vector<DeclaredRegion>& specs);

class PreparedMemory {
 public:
  // Makes (and with `populate`, populates) one file per region of `specs`
  // in `dir`. `specs` may be empty: then Provider() lends nothing.
  [[nodiscard]] static absl::StatusOr<PreparedMemory> Make(
      const std::string& dir, const std::vector<DeclaredRegion>& specs, bool populate);

  PreparedMemory(PreparedMemory&&) noexcept;
  PreparedMemory& operator=(PreparedMemory&&) noexcept;
  ~PreparedMemory();

  bool empty() const;
  // What population took (0 without it), for --json.
  double populate_ms() const;
  uint64_t populated_bytes() const;

  // For ReceiverOptions::region_memory. Valid while this object lives.
  std::function<absl::StatusOr<ProvidedMemory>(const RegionDescription&)> Provider();

  // From ReceiverOptions::before_commit, once the source handed the guest
  // over and before COMMITTED: renames every lent file onto its region's
  // name under the directory (making its directories), as the receiver
  // renames its own files at its commit. If one cannot be renamed, those
  // renamed so far go back and the error is returned: the commit fails, the
  // source is told so and resumes its guest, and the files are removed like
  // those of any failed migration. (Publishing after COMMITTED lost the
  // guest when it failed: the source was gone, and the next start removed
  // the hidden file that held it.)
  [[nodiscard]] absl::Status Commit();

  // After ReceiveOne() succeeded: flushes every lent file (msync, fsync)
  // and its directories — what the receiver does with its own files once
  // committed — and returns `files` (ReceivedMigration::files: "" for memory
  // the receiver did not make) with their paths filled in. `livemig receive
  // --durable` (flush before VERIFIED) is refused with --region: this flush
  // comes after the commit.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Flush(std::vector<std::string> files);

 private:
  struct State;
  explicit PreparedMemory(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_PREPARED_MEMORY_H_
