#include "migration/region_store.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/file_offset.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/internal/prealloc.h"
#include "migration/internal/lent_memory.h"
#include "migration/internal/region_paths.h"
#include "migration/internal/space_claim.h"

namespace livemig {

struct RegionStore::StagingFile {
  std::string name;          // Last component: the final file's name.
  std::string staging_name;  // name + kStagingSuffix.
  std::string final_path;    // root_dir/file_path.
  std::string staging_path;  // final_path + kStagingSuffix.
  // Every directory from root_dir down to the file's parent (dirs.back()).
  // Shared between files with common ancestors.
  std::vector<std::shared_ptr<const ScopedFd>> dirs;
  std::shared_ptr<const ScopedFd> fd;  // The staging file, O_RDWR.
  uint64_t size = 0;                   // Max file_offset + size over regions.
  // Its regions' bytes: what is claimed (the rest stays a hole).
  std::vector<migration_internal::ByteRange> claimed;
  bool staged = false;  // True while staging_name exists and is ours.
  migration_internal::SpaceClaim claim;  // How its blocks are claimed.
  int first_region = 0;                  // For errors about the file.
};

namespace {

using migration_internal::CheckExistingPath;
using migration_internal::InvalidRegionField;
using migration_internal::OpenDir;
using migration_internal::SplitFilePath;

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

absl::Status CommitError(const std::string& what, int error_number) {
  return absl::InternalError(
      absl::StrCat("commit: ", PosixError(what, error_number).message()));
}

// What pure validation learns about one backing file.
struct FileRange {
  uint64_t start;
  uint64_t end;
  int index;
};
struct FilePlan {
  std::vector<std::string> parts;
  std::vector<FileRange> ranges;
  int first_index = 0;
  uint64_t max_end = 0;
};

// Everything that can be checked without touching the filesystem. Fills
// `plans` (by file_path) and `order` (file_paths in first-use order).
absl::Status ValidateTable(const proto::RegionTable& table, uint64_t page_size,
                           const RegionStoreOptions& options,
                           std::map<std::string, FilePlan>& plans,
                           std::vector<std::string>& order) {
  if (!IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "migration page size ", page_size, " is not a power of two"));
  }
  if (table.regions_size() == 0) {
    return absl::InvalidArgumentError("region table has no regions");
  }
  if (static_cast<uint64_t>(table.regions_size()) > options.max_regions) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "region table has ", table.regions_size(), " regions; the limit is ",
        options.max_regions));
  }
  const uint64_t system_page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t total = 0;
  for (int i = 0; i < table.regions_size(); ++i) {
    const proto::RegionInfo& r = table.regions(i);
    if (r.index() != static_cast<uint32_t>(i)) {
      return InvalidRegionField(
          i, "index",
          absl::StrCat("is ", r.index(), ", expected ", i, " (its position)"));
    }
    const bool file_backed = r.backing() == proto::BACKING_FILE;
    if (r.backing() != proto::BACKING_ANONYMOUS && !file_backed) {
      return InvalidRegionField(
          i, "backing",
          absl::StrCat("is ", proto::Backing_Name(r.backing()), " (",
                       static_cast<int>(r.backing()),
                       "); expected BACKING_ANONYMOUS or "
                       "BACKING_FILE"));
    }
    if (r.page_size() != 0 && !IsPowerOfTwo(r.page_size())) {
      return InvalidRegionField(
          i, "page_size",
          absl::StrCat(r.page_size(), " is not a power of two"));
    }
    uint64_t align = std::max<uint64_t>(page_size, r.page_size());
    if (file_backed) align = std::max(align, system_page);
    if (r.size() == 0 || r.size() % align != 0) {
      return InvalidRegionField(i, "size",
                                absl::StrCat(r.size(),
                                             " is not a non-zero "
                                             "multiple of the page size ",
                                             align));
    }
    if (r.size() > std::numeric_limits<size_t>::max()) {
      return InvalidRegionField(i, "size",
                                absl::StrCat(r.size(), " does not fit size_t"));
    }
    if (r.guest_addr() % page_size != 0) {
      return InvalidRegionField(i, "guest_addr",
                                absl::StrCat("0x", absl::Hex(r.guest_addr()),
                                             " is not a multiple of the page size ", page_size));
    }
    if (r.size() - 1 > std::numeric_limits<uint64_t>::max() - r.guest_addr()) {
      return InvalidRegionField(
          i, "guest_addr",
          absl::StrCat("0x", absl::Hex(r.guest_addr()), " + size ", r.size(),
                       " overflows the guest address "
                       "space"));
    }
    if (!file_backed) {
      if (!r.file_path().empty() || r.file_offset() != 0) {
        return InvalidRegionField(
            i, "file_path",
            "and file_offset must be unset for BACKING_ANONYMOUS");
      }
    } else {
      LIVEMIG_ASSIGN_OR_RETURN(std::vector<std::string> parts,
                               SplitFilePath(i, r.file_path(), kStagingSuffix));
      if (parts.size() > options.max_path_components) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "region ", i, ": file_path has ", parts.size(), " components; the limit is ",
            options.max_path_components));
      }
      // The same path, or a directory of it ("manifest.json.tmp/x" would
      // leave no room for the receiver's file), or one above it.
      const auto clashes = [&](const std::string& reserved) {
        const std::string& path = r.file_path();
        return path == reserved || absl::StartsWith(path, reserved + "/") ||
               absl::StartsWith(reserved, path + "/");
      };
      if (auto it = std::find_if(options.reserved_paths.begin(), options.reserved_paths.end(),
                                 clashes);
          it != options.reserved_paths.end()) {
        return InvalidRegionField(
            i, "file_path",
            absl::StrCat("\"", r.file_path(), "\" ",
                         *it == r.file_path() ? "is"
                                              : absl::StrCat("is in the way of \"", *it, "\","),
                         " a file the receiver writes itself; name the region otherwise"));
      }
      if (r.file_offset() % align != 0) {
        return InvalidRegionField(i, "file_offset",
                                  absl::StrCat(r.file_offset(),
                                               " is not a multiple of "
                                               "the page size ",
                                               align));
      }
      constexpr uint64_t kMaxOff = std::numeric_limits<off_t>::max();
      if (r.size() > kMaxOff || r.file_offset() > kMaxOff - r.size()) {
        return InvalidRegionField(
            i, "file_offset",
            absl::StrCat(r.file_offset(), " + size ", r.size(),
                         " overflows the file size limit"));
      }
      auto [it, inserted] = plans.try_emplace(r.file_path());
      FilePlan& plan = it->second;
      if (inserted) {
        plan.parts = std::move(parts);
        plan.first_index = i;
        order.push_back(r.file_path());
      }
      const uint64_t end = r.file_offset() + r.size();
      plan.ranges.push_back({r.file_offset(), end, i});
      plan.max_end = std::max(plan.max_end, end);
    }
    if (r.size() > std::numeric_limits<uint64_t>::max() - total) {
      total = std::numeric_limits<uint64_t>::max();
    } else {
      total += r.size();
    }
  }

  // Guest ranges: sorted by start, each must begin after the previous ends.
  std::vector<int> by_addr(table.regions_size());
  for (int i = 0; i < table.regions_size(); ++i) by_addr[i] = i;
  std::sort(by_addr.begin(), by_addr.end(), [&](int a, int b) {
    return table.regions(a).guest_addr() < table.regions(b).guest_addr();
  });
  for (size_t k = 1; k < by_addr.size(); ++k) {
    const proto::RegionInfo& prev = table.regions(by_addr[k - 1]);
    const proto::RegionInfo& cur = table.regions(by_addr[k]);
    if (cur.guest_addr() <= prev.guest_addr() + (prev.size() - 1)) {
      return InvalidRegionField(
          by_addr[k], "guest_addr",
          absl::StrCat("range [0x", absl::Hex(cur.guest_addr()), ", +",
                       cur.size(), ") overlaps region ", by_addr[k - 1],
                       "'s [0x", absl::Hex(prev.guest_addr()), ", +",
                       prev.size(), ")"));
    }
  }

  // File ranges: regions sharing a file must not overlap in it.
  for (auto& [path, plan] : plans) {
    std::sort(plan.ranges.begin(), plan.ranges.end(),
              [](const FileRange& a, const FileRange& b) {
                return a.start < b.start;
              });
    for (size_t k = 1; k < plan.ranges.size(); ++k) {
      if (plan.ranges[k].start < plan.ranges[k - 1].end) {
        return InvalidRegionField(
            plan.ranges[k].index, "file_offset",
            absl::StrCat(plan.ranges[k].start, " overlaps region ",
                         plan.ranges[k - 1].index, "'s bytes [",
                         plan.ranges[k - 1].start, ", ", plan.ranges[k - 1].end,
                         ") in \"", path, "\""));
      }
    }
  }

  // A path cannot be both a file and another path's directory.
  for (const auto& [path, plan] : plans) {
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      auto other = plans.find(path.substr(0, slash));
      if (other != plans.end()) {
        return InvalidRegionField(
            plan.first_index, "file_path",
            absl::StrCat("\"", path, "\" needs \"", other->first,
                         "\" as a directory, but region ",
                         other->second.first_index, " backs a file there"));
      }
    }
  }

  if (total > options.max_total_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "region table needs ", total, " bytes; the limit is ",
        options.max_total_bytes, options.max_total_bytes_why));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<RegionStore> RegionStore::Create(
    const proto::RegionTable& table, uint64_t page_size,
    const RegionStoreOptions& options) {
  RegionStore store;
  // On failure `store` is destroyed here, which abandons whatever was made.
  LIVEMIG_RETURN_IF_ERROR(store.CreateRegions(table, page_size, options));
  return store;
}

absl::Status RegionStore::CreateRegions(const proto::RegionTable& table,
                                        uint64_t page_size,
                                        const RegionStoreOptions& options) {
  std::map<std::string, FilePlan> plans;
  std::vector<std::string> order;
  LIVEMIG_RETURN_IF_ERROR(ValidateTable(table, page_size, options, plans, order));

  // The VMM's own memory, where it gives some: those regions need no
  // mapping or file of ours.
  std::vector<ProvidedMemory> provided(static_cast<size_t>(table.regions_size()));
  if (options.provide) {
    std::set<std::string> needed;  // Files a region without VMM memory maps.
    for (int i = 0; i < table.regions_size(); ++i) {
      const proto::RegionInfo& info = table.regions(i);
      absl::StatusOr<ProvidedMemory> got = options.provide(
          DescribeRegion(info, static_cast<uint32_t>(table.regions_size())));
      if (!got.ok()) {
        // A message that already names the region is not named again.
        const std::string region = absl::StrCat("region ", i);
        const absl::string_view why = got.status().message();
        const bool named = absl::StartsWith(why, region + " ") || absl::StartsWith(why, region + ":");
        return absl::Status(got.status().code(),
                            absl::StrCat(named ? "" : region + ": ", "the VMM's memory: ", why));
      }
      if (got->addr != nullptr) {
        LIVEMIG_RETURN_IF_ERROR(migration_internal::CheckLentMemory(*got, info));
        provided[static_cast<size_t>(i)] = *got;
      } else if (info.backing() == proto::BACKING_FILE) {
        needed.insert(info.file_path());
      }
    }
    LIVEMIG_RETURN_IF_ERROR(migration_internal::CheckLentRangesApart(provided, table));
    std::vector<std::string> kept;
    for (const std::string& path : order) {
      if (needed.count(path) != 0) {
        kept.push_back(path);
      } else {
        plans.erase(path);
      }
    }
    order = std::move(kept);
  }

  std::shared_ptr<const ScopedFd> root;
  if (!plans.empty()) {
    if (options.root_dir.empty()) {
      return absl::InvalidArgumentError(
          "root_dir is empty but the table has file-backed regions");
    }
    const int fd =
        ::open(options.root_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      const int error = errno;
      const std::string what = absl::StrCat("open root_dir \"",
                                            options.root_dir, "\"");
      if (error == ENOTDIR) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, ": not a directory"));
      }
      return PosixError(what, error);
    }
    root = std::make_shared<const ScopedFd>(fd);
    // The rest of validation: what already exists under root_dir.
    for (const std::string& path : order) {
      const FilePlan& plan = plans.at(path);
      LIVEMIG_RETURN_IF_ERROR(CheckExistingPath(
          root->get(), plan.parts, plan.first_index, path, kStagingSuffix));
    }
  }

  // Creation. Each staging file joins files_ as soon as it exists, so an
  // early return leaves it for Abandon().
  std::map<std::string, StagingFile*> by_path;
  for (const std::string& path : order) {
    const FilePlan& plan = plans.at(path);
    auto file = std::make_unique<StagingFile>();
    file->name = plan.parts.back();
    file->staging_name = file->name + kStagingSuffix;
    file->final_path = absl::StrCat(options.root_dir, "/", path);
    file->staging_path = file->final_path + kStagingSuffix;
    file->size = plan.max_end;
    for (const FileRange& r : plan.ranges) file->claimed.push_back({r.start, r.end - r.start});
    file->dirs.push_back(root);
    for (size_t i = 0; i + 1 < plan.parts.size(); ++i) {
      bool created = false;
      LIVEMIG_ASSIGN_OR_RETURN(
          ScopedFd dir, OpenDir(file->dirs.back()->get(), plan.parts[i],
                                /*create=*/true, plan.first_index, path, &created));
      if (created) created_dirs_.push_back({file->dirs.back(), plan.parts[i]});
      file->dirs.push_back(std::make_shared<const ScopedFd>(std::move(dir)));
    }
    const int parent = file->dirs.back()->get();
    // A leftover from an earlier attempt (or anything planted there) is
    // removed, never opened: O_EXCL then guarantees a fresh, empty inode that
    // nothing else links to.
    if (::unlinkat(parent, file->staging_name.c_str(), 0) != 0 &&
        errno != ENOENT) {
      return PosixError(absl::StrCat("region ", plan.first_index,
                                     ": remove stale \"", file->staging_path,
                                     "\""),
                        errno);
    }
    const int fd = ::openat(parent, file->staging_name.c_str(),
                            O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
                            0644);
    if (fd < 0) {
      return PosixError(absl::StrCat("region ", plan.first_index, ": create \"",
                                     file->staging_path, "\""),
                        errno);
    }
    file->fd = std::make_shared<const ScopedFd>(fd);
    file->staged = true;
    StagingFile* raw = file.get();
    files_.push_back(std::move(file));
    by_path[path] = raw;
    if (::ftruncate(fd, static_cast<off_t>(raw->size)) != 0) {
      if (errno == EFBIG) {
        return InvalidRegionField(
            plan.first_index, "file_offset",
            absl::StrCat("+ size ends its file at byte ", raw->size, ", past what the "
                         "filesystem of \"", raw->staging_path, "\" allows for a file"));
      }
      return PosixError(absl::StrCat("region ", plan.first_index,
                                     ": ftruncate \"", raw->staging_path,
                                     "\" to ", raw->size, " bytes"),
                        errno);
    }
    raw->first_region = plan.first_index;
    LIVEMIG_ASSIGN_OR_RETURN(raw->claim,
                             migration_internal::ClaimSpace(fd, raw->claimed, plan.first_index,
                                                            raw->staging_path));
  }
  // Deferred claims were checked one file at a time: together they must fit
  // too (two files of 3/4 of a tmpfs each would both pass alone).
  std::vector<migration_internal::DeferredFile> deferred;
  for (const auto& file : files_) {
    if (!file->claim.deferred) continue;
    uint64_t bytes = 0;
    for (const migration_internal::ByteRange& r : file->claimed) bytes += r.length;
    deferred.push_back({file->fd->get(), bytes, file->first_region, file->staging_path});
  }
  LIVEMIG_RETURN_IF_ERROR(migration_internal::CheckDeferredFit(deferred));

  regions_.reserve(table.regions_size());
  for (const proto::RegionInfo& info : table.regions()) {
    const size_t size = static_cast<size_t>(info.size());
    const ProvidedMemory& theirs = provided[regions_.size()];
    if (theirs.addr != nullptr) {
      LIVEMIG_ASSIGN_OR_RETURN(StoredRegion stored, migration_internal::LentRegion(info, theirs));
      regions_.push_back(std::move(stored));
    } else if (info.backing() == proto::BACKING_ANONYMOUS) {
      // Private, not shared: pages that never arrive (zero runs) stay
      // unallocated and read as the kernel's zero page, so the completion
      // digest does not fault them in; and transparent huge pages (advised
      // below) cut the receive path's page faults 512-fold.
      LIVEMIG_ASSIGN_OR_RETURN(
          MmapRegion<NoBitmap> region,
          MmapRegion<NoBitmap>::Build(std::nullopt, size, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_NORESERVE));
      (void)::madvise(region.as_ptr(), size, MADV_HUGEPAGE);  // A hint only.
      regions_.push_back(StoredRegion{info, std::move(region), "", ""});
    } else {
      const StagingFile* file = by_path.at(info.file_path());
      LIVEMIG_ASSIGN_OR_RETURN(
          MmapRegion<NoBitmap> region,
          MmapRegion<NoBitmap>::FromFile(
              FileOffset(file->fd, info.file_offset()), size));
      StoredRegion stored{info, std::move(region), file->final_path, file->staging_path};
      stored.lands_through_file = file->claim.writable;
      regions_.push_back(std::move(stored));
    }
  }
  if (options.prealloc) LIVEMIG_RETURN_IF_ERROR(Prealloc(options.prealloc_threads));
  return absl::OkStatus();
}

absl::Status RegionStore::ClaimDeferredSpace() {
  LIVEMIG_RETURN_IF_ERROR(CheckUsable());
  for (const auto& file : files_) {
    if (!file->claim.deferred) continue;
    for (const migration_internal::ByteRange& r : file->claimed) {
      LIVEMIG_RETURN_IF_ERROR(migration_internal::ClaimHoles(
          file->fd->get(), r.length, file->first_region, file->staging_path, r.offset));
    }
    file->claim.deferred = false;
  }
  for (StoredRegion& r : regions_) {
    if (!r.provided_claim_deferred) continue;
    LIVEMIG_RETURN_IF_ERROR(migration_internal::ClaimHoles(
        r.provided_file->fd(), r.info.size(), static_cast<int>(r.info.index()), r.provided_path,
        r.provided_file->start()));
    r.provided_claim_deferred = false;
  }
  return absl::OkStatus();
}

absl::Status RegionStore::Prealloc(int threads) {
  std::vector<migration_internal::PopulateTarget> targets;
  for (StoredRegion& r : regions_) {
    targets.push_back({r.info.index(), r.region.as_ptr(), r.region.size(),
                       !r.region.owned() ? std::string("the VMM's memory") : r.staging_path});
  }
  migration_internal::PopulateStats stats;
  const absl::Status status = migration_internal::PopulateAll(
      std::move(targets), threads > 0 ? threads : migration_internal::Populator::DefaultThreads(),
      &stats);
  prealloc_ = PreallocStats{stats.ms, stats.populated_bytes, stats.threads};
  // Resident pages take bytes straight from the socket: write(2) through a
  // bounce buffer (internal/file_landing.h) would only add a copy.
  for (StoredRegion& r : regions_) r.lands_through_file = false;
  return status;
}

RegionDescription DescribeRegion(const proto::RegionInfo& info, uint32_t table_regions) {
  RegionDescription d;
  d.index = info.index();
  d.table_regions = table_regions;
  d.guest_addr = info.guest_addr();
  d.size = info.size();
  d.page_size = info.page_size();
  d.backing = info.backing() == proto::BACKING_FILE ? RegionDescription::Backing::kFile
                                                    : RegionDescription::Backing::kAnonymous;
  d.file_path = info.file_path();
  d.file_offset = info.file_offset();
  d.prot = static_cast<int>(info.prot());
  d.hugetlbfs = info.hugetlbfs();
  return d;
}

RegionStore::RegionStore() = default;

RegionStore::RegionStore(RegionStore&& other) noexcept
    : regions_(std::move(other.regions_)),
      files_(std::move(other.files_)),
      created_dirs_(std::move(other.created_dirs_)),
      replaced_(std::move(other.replaced_)),
      state_(other.state_),
      flushed_(other.flushed_),
      prealloc_(other.prealloc_) {
  other.regions_.clear();
  other.files_.clear();
  other.state_ = State::kAbandoned;  // Nothing left to clean up.
}

RegionStore& RegionStore::operator=(RegionStore&& other) noexcept {
  if (this != &other) {
    Abandon();
    regions_ = std::move(other.regions_);
    files_ = std::move(other.files_);
    created_dirs_ = std::move(other.created_dirs_);
    replaced_ = std::move(other.replaced_);
    state_ = other.state_;
    flushed_ = other.flushed_;
    prealloc_ = other.prealloc_;
    other.regions_.clear();
    other.files_.clear();
    other.state_ = State::kAbandoned;
  }
  return *this;
}

RegionStore::~RegionStore() { Abandon(); }

void RegionStore::StartWriteback() const {
  for (const auto& file : files_) {
    (void)::sync_file_range(file->fd->get(), 0, 0, SYNC_FILE_RANGE_WRITE);
  }
}

absl::Status RegionStore::SyncData() const {
  for (const auto& file : files_) {
    if (::fdatasync(file->fd->get()) != 0) {
      return CommitError(absl::StrCat("fdatasync \"", file->staging_path, "\""), errno);
    }
  }
  return absl::OkStatus();
}

absl::Status RegionStore::CheckUsable() const {
  switch (state_) {
    case State::kOpen:
    case State::kCommitted:
      return absl::OkStatus();
    case State::kTaken:
      return absl::FailedPreconditionError("guest memory was already taken");
    case State::kFailed:
      return absl::FailedPreconditionError(
          "an earlier Flush() or Commit() of this region store failed");
    case State::kAbandoned:
      return absl::FailedPreconditionError("region store was abandoned");
  }
  return absl::InternalError("region store in an unknown state");
}

absl::Status RegionStore::Flush() {
  LIVEMIG_RETURN_IF_ERROR(CheckUsable());
  if (flushed_) return absl::FailedPreconditionError("region store already flushed");
  const State state = state_;
  // Any failure below leaves the store failed; Abandon() cleans up.
  state_ = State::kFailed;
  for (const StoredRegion& r : regions_) {
    if (r.staging_path.empty()) continue;
    if (::msync(r.region.as_ptr(), r.region.size(), MS_SYNC) != 0) {
      return CommitError(absl::StrCat("msync of region ", r.info.index(),
                                      " (\"", r.staging_path, "\")"),
                         errno);
    }
  }
  for (const auto& file : files_) {
    if (::fsync(file->fd->get()) != 0) {
      return CommitError(absl::StrCat("fsync \"", file->staging_path, "\""),
                         errno);
    }
  }
  if (state == State::kCommitted) LIVEMIG_RETURN_IF_ERROR(SyncDirectories());
  state_ = state;
  flushed_ = true;
  return absl::OkStatus();
}

absl::Status RegionStore::SyncDirectories() {
  // Every directory on the paths, once each: the renames changed the parents,
  // and directories made by Create changed theirs.
  std::set<std::pair<dev_t, ino_t>> synced;
  for (const auto& file : files_) {
    for (const auto& dir : file->dirs) {
      struct stat st;
      if (::fstat(dir->get(), &st) != 0) {
        return CommitError("fstat of a directory", errno);
      }
      if (!synced.insert({st.st_dev, st.st_ino}).second) continue;
      if (::fsync(dir->get()) != 0) {
        return CommitError(absl::StrCat("fsync of a directory of \"",
                                        file->final_path, "\""),
                           errno);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RegionStore::Commit() {
  if (state_ == State::kCommitted || state_ == State::kTaken) {
    return absl::FailedPreconditionError("region store already committed");
  }
  LIVEMIG_RETURN_IF_ERROR(CheckUsable());
  // Any failure below leaves the store failed; Abandon() cleans up.
  state_ = State::kFailed;
  for (const auto& file : files_) {
    const int parent = file->dirs.back()->get();
    // The file at the final name, if any, is unlinked by the rename but
    // freed only when this last reference closes (after the pause). ENOENT
    // is the usual case; any other failure only costs the deferral.
    ScopedFd old(::openat(parent, file->name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (old.valid()) replaced_.push_back(std::move(old));
    if (::renameat(parent, file->staging_name.c_str(), parent,
                   file->name.c_str()) != 0) {
      return CommitError(absl::StrCat("rename \"", file->staging_path,
                                      "\" to \"", file->final_path, "\""),
                         errno);
    }
    file->staged = false;
  }
  if (flushed_) LIVEMIG_RETURN_IF_ERROR(SyncDirectories());
  state_ = State::kCommitted;
  return absl::OkStatus();
}

size_t RegionStore::ReleaseReplaced() {
  const size_t n = replaced_.size();
  replaced_.clear();
  return n;
}

void RegionStore::Abandon() {
  if (state_ != State::kOpen && state_ != State::kFailed) return;
  for (const auto& file : files_) {
    if (!file->staged) continue;
    // Best effort: a failure leaves a ".livemig-partial" file, which is
    // never mistaken for a final file and is removed by the next Create.
    (void)::unlinkat(file->dirs.back()->get(), file->staging_name.c_str(), 0);
    file->staged = false;
  }
  // The directories Create made, deepest first; a directory something else
  // put a file into meanwhile stays (rmdir fails on it).
  for (auto it = created_dirs_.rbegin(); it != created_dirs_.rend(); ++it) {
    (void)::unlinkat(it->parent->get(), it->name.c_str(), AT_REMOVEDIR);
  }
  created_dirs_.clear();
  state_ = State::kAbandoned;
}

absl::StatusOr<GuestMemory<NoBitmap>> RegionStore::TakeGuestMemory() {
  if (state_ == State::kTaken) {
    return absl::FailedPreconditionError("guest memory was already taken");
  }
  if (state_ != State::kCommitted) {
    return absl::FailedPreconditionError(
        "guest memory can only be taken after a successful Commit()");
  }
  // Whatever happens below, the mappings leave the store.
  std::vector<StoredRegion> stored = std::move(regions_);
  regions_.clear();
  state_ = State::kTaken;
  std::vector<GuestRegion<NoBitmap>> guest;
  guest.reserve(stored.size());
  for (StoredRegion& r : stored) {
    // Cannot fail: Create checked that no guest range overflows.
    LIVEMIG_ASSIGN_OR_RETURN(
        GuestRegion<NoBitmap> region,
        GuestRegion<NoBitmap>::Create(std::move(r.region),
                                      GuestAddress(r.info.guest_addr())));
    guest.push_back(std::move(region));
  }
  return GuestMemory<NoBitmap>::FromRegions(std::move(guest));
}

}  // namespace livemig
