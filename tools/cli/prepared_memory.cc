#include "tools/cli/prepared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/dirty_tracker.h"
#include "core/file_offset.h"
#include "core/mmap_region.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/internal/prealloc.h"
#include "migration/internal/region_paths.h"
#include "migration/region_store.h"
#include "tools/cli/guest_memory_flags.h"
#include "tools/cli/units.h"

namespace livemig::cli {
namespace {

constexpr uint64_t kPage = 4096;

// What the receiver would have named the region (RegionStore): a file
// region by its path, an anonymous one "region-<index>.mem".
std::string FinalName(const RegionDescription& r) {
  return r.backing == RegionDescription::Backing::kFile
             ? r.file_path
             : absl::StrCat("region-", r.index, ".mem");
}

std::vector<DeclaredRegion> SortedByAddress(std::vector<DeclaredRegion> specs) {
  std::sort(specs.begin(), specs.end(),
            [](const DeclaredRegion& a, const DeclaredRegion& b) { return a.gpa < b.gpa; });
  return specs;
}

}  // namespace

absl::Status CheckDeclaredRegions(const std::vector<DeclaredRegion>& specs) {
  const std::vector<DeclaredRegion> sorted = SortedByAddress(specs);
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].gpa < sorted[i - 1].gpa + sorted[i - 1].size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--region=", sorted[i].text, " overlaps --region=", sorted[i - 1].text));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DeclaredRegion> ParseDeclaredRegion(const std::string& text) {
  // Only the keys that describe memory: the rest of send's --region
  // (file=, offset=, name=) is the source's to say.
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    const absl::string_view key = part.substr(0, part.find('='));
    if (key != "gpa" && key != "size") {
      return absl::InvalidArgumentError(absl::StrCat(
          "--region=", text, ": unknown key \"", key,
          "\" (receive takes gpa=ADDR,size=SIZE: the destination's own memory)"));
    }
  }
  LIVEMIG_ASSIGN_OR_RETURN(const RegionFlag flag, ParseRegionFlag(text));
  if (flag.size == 0 || flag.size % kPage != 0 || flag.gpa % kPage != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--region=", text, ": gpa and size must be multiples of 4 KiB, size above 0"));
  }
  return DeclaredRegion{flag.gpa, flag.size, text};
}

struct PreparedMemory::State {
  struct Prepared {
    DeclaredRegion spec;
    std::string path;  // Where it was made, until Publish renames it.
    std::optional<MmapRegion<NoBitmap>> region;  // Set once mapped.
    std::optional<RegionDescription> lent;  // The incoming region it holds.
    // Commit(): the directories from dir down to its final name's.
    std::vector<ScopedFd> dirs;
  };
  std::string dir;
  std::vector<Prepared> regions;
  bool populated = false;
  double populate_ms = 0;
  uint64_t populated_bytes = 0;
  bool committed = false;  // Commit() renamed them: never remove them again.
  // The earlier files Commit() swapped out (now at the hidden names):
  // removed after the commit, outside the source's pause (freeing a large
  // file takes long).
  std::vector<std::string> replaced;

  ~State() {
    for (const std::string& path : replaced) (void)::unlink(path.c_str());
    if (committed) return;
    for (const Prepared& p : regions) (void)::unlink(p.path.c_str());
  }
};

PreparedMemory::PreparedMemory(std::unique_ptr<State> state) : state_(std::move(state)) {}
PreparedMemory::PreparedMemory(PreparedMemory&&) noexcept = default;
PreparedMemory& PreparedMemory::operator=(PreparedMemory&&) noexcept = default;
PreparedMemory::~PreparedMemory() = default;

bool PreparedMemory::empty() const { return state_->regions.empty(); }
double PreparedMemory::populate_ms() const { return state_->populate_ms; }
uint64_t PreparedMemory::populated_bytes() const { return state_->populated_bytes; }

absl::StatusOr<PreparedMemory> PreparedMemory::Make(const std::string& dir,
                                                    const std::vector<DeclaredRegion>& specs,
                                                    bool populate) {
  LIVEMIG_RETURN_IF_ERROR(CheckDeclaredRegions(specs));
  std::vector<DeclaredRegion> sorted = SortedByAddress(specs);
  // Room for all of it now, before any source connects: on tmpfs a page
  // that finds no room later is SIGBUS, not an error.
  uint64_t total = 0;
  for (const DeclaredRegion& r : sorted) total += r.size;
  struct statvfs fs;
  if (::statvfs(dir.c_str(), &fs) == 0 && fs.f_blocks != 0 &&  // 0: a tmpfs without a limit.
      uint64_t{fs.f_bavail} * fs.f_frsize < total) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "--region: the declared memory needs ", total, " bytes; the filesystem of ", dir, " has ",
        uint64_t{fs.f_bavail} * fs.f_frsize, " free"));
  }
  auto state = std::make_unique<State>();
  state->dir = dir;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const std::string path = absl::StrCat(dir, "/.livemig-prepared-", i);
    (void)::unlink(path.c_str());  // A leftover of a killed run.
    absl::StatusOr<FileOffset> file = FileOffset::Open(path, 0, O_CREAT | O_EXCL, 0644);  // As the receiver's own files.
    if (!file.ok()) return file.status();
    // Listed before anything can fail, so the destructor removes it.
    state->regions.push_back({sorted[i], path, std::nullopt, std::nullopt});
    if (::ftruncate(file->fd(), static_cast<off_t>(sorted[i].size)) != 0) {
      return PosixError(absl::StrCat("--region=", sorted[i].text, ": size ", path), errno);
    }
    absl::StatusOr<MmapRegion<NoBitmap>> mapped =
        MmapRegion<NoBitmap>::FromFile(std::move(*file), sorted[i].size);
    if (!mapped.ok()) return mapped.status();
    state->regions.back().region.emplace(std::move(*mapped));
  }
  if (populate && !state->regions.empty()) {
    std::vector<migration_internal::PopulateTarget> targets;
    for (size_t i = 0; i < state->regions.size(); ++i) {
      const State::Prepared& p = state->regions[i];
      targets.push_back({static_cast<uint32_t>(i), p.region->as_ptr(), p.region->size(),
                         absl::StrCat(p.path, " (--region=", p.spec.text, ")")});
    }
    migration_internal::Populator populator(std::move(targets));
    populator.Start(migration_internal::Populator::DefaultThreads());
    absl::Status populated = populator.Wait();
    if (!populated.ok()) return populated;
    state->populated = true;
    state->populate_ms = populator.stats().ms;
    state->populated_bytes = populator.stats().populated_bytes;
  }
  return PreparedMemory(std::move(state));
}

std::function<absl::StatusOr<ProvidedMemory>(const RegionDescription&)>
PreparedMemory::Provider() {
  State* state = state_.get();
  return [state](const RegionDescription& r) -> absl::StatusOr<ProvidedMemory> {
    State::Prepared* match = nullptr;
    for (State::Prepared& p : state->regions) {
      if (p.spec.gpa == r.guest_addr && p.spec.size == r.size) match = &p;
    }
    if (match == nullptr) {
      std::vector<std::string> declared;
      for (const State::Prepared& p : state->regions) declared.push_back(p.spec.text);
      return absl::FailedPreconditionError(absl::StrCat(
          "region ", r.index, " (guest 0x", absl::Hex(r.guest_addr), ", ",
          FormatBytes(static_cast<double>(r.size)), ") matches no --region; declared: ",
          absl::StrJoin(declared, " ")));
    }
    // Publish() renames this file onto the region's own name: a layout it
    // cannot rebuild that way is refused now, before any page.
    if (r.backing == RegionDescription::Backing::kFile && r.file_offset != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "region ", r.index, " is at offset ", r.file_offset, " of \"", r.file_path,
          "\" on the source, but --region=", match->spec.text,
          " is published as a file of its own: receive this guest without --region"));
    }
    // What the receiver checks of its own files' paths, and the hidden
    // names of these files (a region named ".livemig-prepared-1" would be
    // renamed over, or be removed by the next run as a leftover).
    const std::string name = FinalName(r);
    LIVEMIG_ASSIGN_OR_RETURN(const std::vector<std::string> parts,
                             migration_internal::SplitFilePath(static_cast<int>(r.index), name,
                                                               kStagingSuffix));
    for (const std::string& part : parts) {
      if (absl::StartsWith(part, ".livemig-")) {
        return absl::FailedPreconditionError(absl::StrCat(
            "region ", r.index, ": file_path \"", name,
            "\" is a name livemig keeps for its own files (\".livemig-...\")"));
      }
    }
    {
      ScopedFd root(::open(state->dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!root.valid()) return PosixError(absl::StrCat("open ", state->dir), errno);
      LIVEMIG_RETURN_IF_ERROR(migration_internal::CheckExistingPath(
          root.get(), parts, static_cast<int>(r.index), name, kStagingSuffix));
    }
    for (const State::Prepared& p : state->regions) {
      if (&p != match && p.lent.has_value() && FinalName(*p.lent) == name) {
        return absl::FailedPreconditionError(absl::StrCat(
            "regions ", p.lent->index, " and ", r.index, " would both be published as \"",
            name, "\""));
      }
    }
    match->lent = r;
    // The table's last region: every declared one must have been asked for
    // (the guest the source sends is the one this memory was made for).
    if (r.index + 1 == r.table_regions) {
      for (const State::Prepared& p : state->regions) {
        if (!p.lent.has_value()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "--region=", p.spec.text, ": the source's guest has no region there (its ",
              r.table_regions, " regions match the others)"));
        }
      }
    }
    ProvidedMemory lent{match->region->as_ptr(), match->region->size()};
    lent.zeroed = true;  // Made fresh (and populated pages are zeros too).
    // Fresh (not populated): its pages are holes, which round 0 fills
    // fastest with pwrite(2) (no clearing first). Populated, it takes them
    // through the mapping: 2 GiB, 2 channels, memory ready before the
    // source: 15.9-18.0 Gbit/s through the mapping, 12.9-15.6 through
    // pwrite into fallocate()d pages, 11.8-13.9 through pwrite into
    // populated ones.
    if (!state->populated) lent.fd = match->region->file_offset()->fd();
    return lent;
  };
}

absl::Status PreparedMemory::Commit() {
  // Each renamed file. A file that had the name already (an earlier
  // migration's, in repeated mode) is swapped with it, not replaced, so
  // that a failed commit can give it back whole.
  struct Renamed {
    State::Prepared* region;
    std::string from;  // Its hidden name, to go back to.
    bool exchanged;    // The earlier file now has that hidden name.
  };
  std::vector<Renamed> renamed;
  auto undo = [&](const absl::Status& why) {
    for (auto it = renamed.rbegin(); it != renamed.rend(); ++it) {
      (void)::renameat2(AT_FDCWD, it->region->path.c_str(), AT_FDCWD, it->from.c_str(),
                        it->exchanged ? RENAME_EXCHANGE : 0);
      it->region->path = it->from;
      it->region->dirs.clear();
    }
    return why;
  };
  for (State::Prepared& p : state_->regions) {
    if (!p.lent.has_value()) continue;  // Provider() refused such a table.
    const std::string name = FinalName(*p.lent);
    const std::string final_path = absl::StrCat(state_->dir, "/", name);
    const int index = static_cast<int>(p.lent->index);
    // The name may have directories ("vm/mem0"): made as the receiver makes
    // its own (one component at a time, no symlink followed).
    absl::StatusOr<std::vector<std::string>> parts =
        migration_internal::SplitFilePath(index, name, kStagingSuffix);
    if (!parts.ok()) return undo(parts.status());
    std::vector<ScopedFd> dirs;
    dirs.emplace_back(::open(state_->dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirs.back().valid()) {
      return undo(PosixError(absl::StrCat("open ", state_->dir), errno));
    }
    for (size_t i = 0; i + 1 < parts->size(); ++i) {
      absl::StatusOr<ScopedFd> next = migration_internal::OpenDir(
          dirs.back().get(), (*parts)[i], /*create=*/true, index, name);
      if (!next.ok()) return undo(next.status());
      dirs.push_back(std::move(*next));
    }
    const std::string hidden = std::filesystem::path(p.path).filename().string();
    bool exchanged = true;
    int moved = ::renameat2(dirs.front().get(), hidden.c_str(), dirs.back().get(),
                            parts->back().c_str(), RENAME_EXCHANGE);
    if (moved != 0 && errno == ENOENT) {  // Nothing had the name.
      exchanged = false;
      moved = ::renameat2(dirs.front().get(), hidden.c_str(), dirs.back().get(),
                          parts->back().c_str(), RENAME_NOREPLACE);
    }
    if (moved != 0) {
      return undo(PosixError(absl::StrCat("rename ", p.path, " to ", final_path), errno));
    }
    renamed.push_back({&p, p.path, exchanged});
    if (exchanged) state_->replaced.push_back(p.path);  // Removed after the commit.
    p.path = final_path;
    p.dirs = std::move(dirs);
  }
  // The guest's files have their names: never removed again.
  state_->committed = true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> PreparedMemory::Flush(std::vector<std::string> files) {
  for (const std::string& path : state_->replaced) (void)::unlink(path.c_str());
  state_->replaced.clear();
  for (State::Prepared& p : state_->regions) {
    if (!p.lent.has_value()) continue;
    const int index = static_cast<int>(p.lent->index);
    auto failed = [&](const absl::Status& why) {
      return absl::Status(why.code(), absl::StrCat("committed, but ", why.message(),
                                                   " (region ", index, "'s memory is in ",
                                                   p.path, ")"));
    };
    if (::msync(p.region->as_ptr(), p.region->size(), MS_SYNC) != 0 ||
        ::fsync(p.region->file_offset()->fd()) != 0) {
      return failed(PosixError(absl::StrCat("flush ", p.path), errno));
    }
    for (const ScopedFd& dir : p.dirs) {
      if (::fsync(dir.get()) != 0) {
        return failed(PosixError(absl::StrCat("flush the directories of ", p.path), errno));
      }
    }
    if (files.size() < p.lent->table_regions) files.resize(p.lent->table_regions);
    files[p.lent->index] = p.path;
  }
  return files;
}

}  // namespace livemig::cli
