// File: migration/region_store.h
//
// RegionStore: the destination's guest memory while it is being received.
// Built from the source's RegionTable, it validates the whole table before it
// touches anything, maps every region writable, and never presents a partial
// result as complete:
//
//   - anonymous regions are fresh private anonymous mappings (THP-advised);
//   - file-backed regions are mapped from a STAGING file
//     (<root>/<file_path>.livemig-partial), never from the final file;
//   - Commit() renames each staging file onto its final name: the memory is
//     published; Flush() makes it durable (msync, fsync of the files, and
//     once committed of every directory on the paths). Either order works:
//     Flush() then Commit() is durable before it is published (Commit then
//     fsyncs the directories itself); Commit() then Flush() publishes first
//     and the caller must not call the migration complete before Flush()
//     returned OK (a crash in between leaves final names over data that may
//     not be on disk: livemig receive writes its manifest only after);
//   - without a successful Commit(), Abandon() (or the destructor) unlinks the
//     staging files, so a final file that existed before is never touched.
//
//   LIVEMIG_ASSIGN_OR_RETURN(RegionStore store,
//                            RegionStore::Create(table, 4096, {.root_dir = d}));
//   ... receiver writes pages into store.regions()[i].region ...
//   LIVEMIG_RETURN_IF_ERROR(store.Commit());
//   LIVEMIG_ASSIGN_OR_RETURN(auto memory, store.TakeGuestMemory());
//
// Path safety (file-backed regions): file_path is relative to root_dir and
// must be in canonical form: no empty, "." or ".." components, no leading or
// trailing '/', no NUL. Every directory below root_dir is opened with
// openat(O_NOFOLLOW | O_DIRECTORY) from a descriptor of the previous one, and
// the staging file with O_NOFOLLOW, so a path never leaves root_dir through a
// symlink (mount points below root_dir are trusted). Any symlink on the path,
// including at the final name, is refused with PermissionDenied whether or not
// its target is inside root_dir. Missing directories are created (0755);
// Abandon removes the ones it created (if nothing else was put in them).
//
// A final file is replaced as a whole by Commit: bytes of it that no region
// covers read as zero afterwards (the staging file starts empty). The mappings
// are always PROT_READ | PROT_WRITE (MAP_SHARED for files, MAP_PRIVATE for
// anonymous memory) whatever the source's prot, flags and hugetlbfs say: the receiver must write them, and the VMM applies
// its own protections later.
//
// Ownership: the store owns its mappings, its staging files and the directory
// descriptors it keeps for Commit/Abandon. TakeGuestMemory moves the mappings
// out; a file mapping keeps its file open for as long as it lives.
//
// Thread safety: the store itself is not synchronized: Create, Commit,
// Abandon, TakeGuestMemory and destruction must not overlap. Receiver threads
// may write the regions' memory concurrently (MmapRegion's accessors are
// const), but all such writes must have finished before Commit() is called,
// or they may not be in the committed files.
#ifndef LIVEMIG_MIGRATION_REGION_STORE_H_
#define LIVEMIG_MIGRATION_REGION_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dirty_tracker.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "core/mmap_region.h"
#include "migration/destination_memory.h"
#include "proto/migration.pb.h"

namespace livemig {

// Appended to a final path to name its staging file. A file_path whose last
// component ends with it is refused (it would collide with another region's
// staging file).
inline constexpr char kStagingSuffix[] = ".livemig-partial";

// The plain description of a table's region that VMMs see
// (destination_memory.h).
RegionDescription DescribeRegion(const proto::RegionInfo& info, uint32_t table_regions);

struct RegionStoreOptions {
  // Optional: asked once per region, in table order, after the whole table
  // was validated and before anything is created, for the VMM's own memory
  // (memfd, shared, hugetlbfs: whatever its devices need). A region given
  // memory gets no mapping and no file of the store's; an error is returned
  // as is, prefixed with "region I: the VMM's memory: " (only "the VMM's
  // memory: " when its message starts by naming region I itself). Null, or
  // a null addr: the store's own.
  std::function<absl::StatusOr<ProvidedMemory>(const RegionDescription&)> provide;
  // Where file-backed regions are rebuilt. Must be an existing directory
  // (NotFound otherwise) when the table has a file-backed region; unused
  // otherwise.
  std::string root_dir;
  // Tables whose regions add up to more bytes than this are refused
  // (ResourceExhausted; the message ends with max_total_bytes_why).
  uint64_t max_total_bytes = 1ull << 40;
  std::string max_total_bytes_why;
  // More regions, or a file_path of more components, is ResourceExhausted.
  uint64_t max_regions = 1024;
  uint64_t max_path_components = 32;
  // Paths under root_dir that the caller writes itself (e.g. livemig
  // receive's "manifest.json"): a region naming one, a path below one
  // ("manifest.json/x") or a directory above one is refused
  // (InvalidArgument), so a region file never takes their place.
  std::vector<std::string> reserved_paths;
  // Make every region resident before Create returns (prefault, see
  // migration/internal/prealloc.h): the store's own mappings and the VMM's
  // provided memory alike, on prealloc_threads helpers (0: one per core, at
  // most 8). Failure is Create's error, nothing is kept: ResourceExhausted
  // naming the region, its file and its bytes when the memory or the
  // backing cannot be had (ENOMEM, EFAULT); FailedPrecondition where the
  // kernel cannot populate it (before Linux 5.14, VM_PFNMAP memory).
  bool prealloc = false;
  int prealloc_threads = 0;
};

// What RegionStoreOptions::prealloc did (all zero without it).
struct PreallocStats {
  double ms = 0;            // Populating every region, wall clock.
  uint64_t bytes = 0;       // Bytes made resident.
  int threads = 0;
};

// One rebuilt region.
struct StoredRegion {
  proto::RegionInfo info;
  // The writable mapping the receiver fills; region.size() == info.size.
  // Writes through it are not tracked (NoBitmap).
  MmapRegion<NoBitmap> region;
  // File-backed: root_dir/file_path. Anonymous: empty.
  std::string final_path;
  // File-backed: final_path + kStagingSuffix. Anonymous: empty.
  std::string staging_path;
  // The store made the mapping (fresh: every page reads as zero). False for
  // memory the VMM provided (RegionStoreOptions::provide).
  bool starts_zeroed = true;
  // A file the store made, or the VMM's (ProvidedMemory::fd), whose pages
  // may be written with write(2) as well as through the mapping (not
  // hugetlbfs): internal/file_landing.h. False with
  // RegionStoreOptions::prealloc (the pages are resident already).
  bool lands_through_file = false;
  // The VMM's file behind its memory (a dup of ProvidedMemory::fd, at its
  // offset); empty otherwise (the store's own files are region.file_offset()).
  std::optional<FileOffset> provided_file;
  // provided_file's path (for messages), and whether its holes are to be
  // claimed once round 0 landed (tmpfs: ClaimDeferredSpace).
  std::string provided_path;
  bool provided_claim_deferred = false;
  // The file round 0 may be written through: provided_file, else the
  // mapping's own; null for anonymous memory.
  const FileOffset* landing_file() const {
    if (provided_file.has_value()) return &*provided_file;
    return region.file_offset().has_value() ? &*region.file_offset() : nullptr;
  }
};

class RegionStore {
 public:
  // Validates the whole table, then creates every region; nothing is created
  // unless the table is valid. `page_size` is the migration page size
  // (Hello.page_size, e.g. 4096).
  //
  // InvalidArgument (the message names the region index and the field):
  //   page_size 0 or not a power of two; an empty table; regions[i].index
  //   != i; size 0 or not a multiple of the alignment (the largest of
  //   page_size, the region's own nonzero page_size, and for file-backed
  //   regions the system page size); a region's page_size not a power of two;
  //   guest ranges that overflow 2^64 or overlap each other; backing
  //   BACKING_UNSPECIFIED or unknown; an anonymous region with a file_path or
  //   a nonzero file_offset; a file-backed region whose file_path is empty,
  //   absolute, non-canonical or contains "..", ends with kStagingSuffix, has
  //   a component longer than NAME_MAX (counting the suffix), or names a file
  //   that another region's path needs as a directory; file_offset not a
  //   multiple of the alignment; a file_path in options.reserved_paths;
  //   file_offset + size overflowing; two
  //   file-backed regions overlapping in the same file; a path component that
  //   exists but is not a directory, or a final name that exists and is not a
  //   regular file.
  // PermissionDenied: a symlink anywhere on a file-backed region's path below
  //   root_dir (any symlink: following it could leave root_dir).
  // ResourceExhausted: more than max_regions regions, a file_path of more
//   than max_path_components components, the sizes add up to more than
//   max_total_bytes, or a
//   staging file's space cannot be allocated (fallocate: ENOSPC or EDQUOT;
//   the message names the file, the bytes it needs and the bytes free).
//   Every staging file's blocks are allocated up front, so a full disk is
//   refused before any page arrives and writes into the mappings never fault
//   for lack of space (filesystems without fallocate are used as they are) —
//   except on tmpfs, where only the free space is checked now (statvfs, all
//   files of a filesystem together; less than needed is the same
//   ResourceExhausted) and ClaimDeferredSpace()
//   allocates what round 0 left (internal/space_claim.h).
  //   With options.prealloc, also a region that cannot be made resident
  //   (see RegionStoreOptions::prealloc).
  // NotFound: root_dir does not exist (only checked with file-backed regions).
  // Creation failures (mkdir, open, ftruncate, mmap) come back as PosixError
  // codes; whatever was created so far is abandoned first.
  [[nodiscard]] static absl::StatusOr<RegionStore> Create(
      const proto::RegionTable& table, uint64_t page_size,
      const RegionStoreOptions& options);

  RegionStore(RegionStore&& other) noexcept;
  // Abandons this store first if it is neither committed nor abandoned.
  RegionStore& operator=(RegionStore&& other) noexcept;
  RegionStore(const RegionStore&) = delete;
  RegionStore& operator=(const RegionStore&) = delete;
  // Calls Abandon() unless Commit() succeeded or Abandon() was called.
  ~RegionStore();

  // In table order: regions()[i].info.index == i. Empty after
  // TakeGuestMemory().
  std::vector<StoredRegion>& regions() { return regions_; }
  const std::vector<StoredRegion>& regions() const { return regions_; }

  // Makes the received memory durable: msync(MS_SYNC) of every file mapping,
  // fsync of every file, and after Commit() fsync of every directory on the
  // paths. Before Commit() the data is durable under the staging names,
  // unpublished. Internal on failure (the store is then failed);
  // FailedPrecondition if it was flushed already, or the store is failed,
  // abandoned or taken.
  // REQUIRES: no thread is still writing the regions.
  [[nodiscard]] absl::Status Flush();

  // Publishes the received memory: rename(2) of each staging file onto its
  // final path; if Flush() already succeeded, then fsync of every directory
  // on the paths (durable under the final names when this returns OK),
  // otherwise that is left to the Flush() that must follow. A table with no
  // file-backed region commits trivially. Internal on any failure; the store
  // is then failed: the remaining staging files are left for Abandon(),
  // though final files renamed before the failing step have already been
  // replaced. FailedPrecondition if Commit already succeeded or failed, or
  // Abandon() was called. A file the rename replaces stays open (O_PATH)
  // until ReleaseReplaced() or the destructor: freeing its pages (140 ms per
  // GiB of tmpfs, measured) would otherwise happen inside the source's pause.
  // REQUIRES: no thread is still writing the regions.
  [[nodiscard]] absl::Status Commit();

  // Closes the files Commit() replaced, so the filesystem frees them now.
  // Call once the source has been answered. Returns how many there were.
  size_t ReleaseReplaced();

  // fdatasync of every file: what was written so far reaches the disk,
  // without changing the store's state (the receiver keeps the final
  // Flush() short this way). Internal naming the file on failure.
  [[nodiscard]] absl::Status SyncData() const;

  // Claims the blocks Create deferred (tmpfs): every page no write(2)
  // allocated yet, in its own files and in the VMM's (ProvidedMemory::fd). Call once round 0 has landed, before any page is written
  // through a mapping that round 0 did not write through the file.
  // ResourceExhausted naming the file when the filesystem filled up
  // meanwhile; FailedPrecondition if the store is not open or committed.
  [[nodiscard]] absl::Status ClaimDeferredSpace();

  // Whether Flush() succeeded (the data is on disk).
  bool flushed() const { return flushed_; }

  const PreallocStats& prealloc() const { return prealloc_; }

  // Starts writeback of the staging files' dirty pages without waiting
  // (sync_file_range SYNC_FILE_RANGE_WRITE), so that Commit()'s flush, which
  // runs while the source VM is paused, finds little left to write. Best
  // effort; safe to call while receivers write the mappings.
  void StartWriteback() const;

  // Unlinks every staging file still present (best effort, errors ignored).
  // The mappings stay valid until the store (or TakeGuestMemory's result) is
  // destroyed; writes to them reach only unlinked files. No-op after a
  // successful Commit() or a previous Abandon().
  void Abandon();

  // Moves the mappings out as guest memory, each region at info.guest_addr,
  // for the VMM. FailedPrecondition unless Commit() succeeded, or if the
  // memory was already taken. Flush() first if it should be durable.
  [[nodiscard]] absl::StatusOr<GuestMemory<NoBitmap>> TakeGuestMemory();

 private:
  // One staging file, shared by every region that names the same file_path.
  struct StagingFile;
  enum class State { kOpen, kCommitted, kFailed, kAbandoned, kTaken };

  // FailedPrecondition, saying why, unless the store is open or committed.
  [[nodiscard]] absl::Status CheckUsable() const;
  // fsync of every directory on the paths, once each.
  [[nodiscard]] absl::Status SyncDirectories();

  RegionStore();
  [[nodiscard]] absl::Status CreateRegions(const proto::RegionTable& table,
                                           uint64_t page_size,
                                           const RegionStoreOptions& options);
  // RegionStoreOptions::prealloc, once every region is mapped.
  [[nodiscard]] absl::Status Prealloc(int threads);

  std::vector<StoredRegion> regions_;
  std::vector<std::unique_ptr<StagingFile>> files_;
  // Directories Create made (parent, name), in creation order: Abandon
  // removes them again.
  struct CreatedDir {
    std::shared_ptr<const ScopedFd> parent;
    std::string name;
  };
  std::vector<CreatedDir> created_dirs_;
  std::vector<ScopedFd> replaced_;  // Commit(): the old files at final names.
  State state_ = State::kOpen;
  bool flushed_ = false;
  PreallocStats prealloc_;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_REGION_STORE_H_
