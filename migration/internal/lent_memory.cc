#include "migration/internal/lent_memory.h"

#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <linux/magic.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/file_offset.h"
#include "core/mmap_region.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/internal/provided_mapping.h"
#include "migration/internal/space_claim.h"

namespace livemig::migration_internal {
namespace {

// Where `fd` is, for messages (/proc/self/fd's link; "fd N" without it).
std::string FdPath(int fd) {
  char buf[4096];
  const ssize_t n =
      ::readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : absl::StrCat("fd ", fd);
}

}  // namespace

absl::Status CheckLentMemory(const ProvidedMemory& lent, const proto::RegionInfo& info) {
  const int i = static_cast<int>(info.index());
  if (lent.size < info.size() ||
      reinterpret_cast<uintptr_t>(lent.addr) % static_cast<uintptr_t>(::getpagesize()) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "region ", i, ": the VMM's memory (", lent.size, " bytes at 0x",
        absl::Hex(reinterpret_cast<uintptr_t>(lent.addr)),
        ") must be page-aligned and hold the region's ", info.size(), " bytes"));
  }
  return CheckProvidedMapping(lent.addr, info.size(), lent.fd, lent.file_offset,
                              static_cast<uint32_t>(i));
}

// Memory lent for two regions must not overlap: the later region's pages
// would overwrite the earlier's after each had been hashed as it landed.
absl::Status CheckLentRangesApart(const std::vector<ProvidedMemory>& provided,
                                  const proto::RegionTable& table) {
  std::vector<std::pair<uintptr_t, size_t>> lent;  // (start, region index)
  for (size_t i = 0; i < provided.size(); ++i) {
    if (provided[i].addr != nullptr) {
      lent.push_back({reinterpret_cast<uintptr_t>(provided[i].addr), i});
    }
  }
  std::sort(lent.begin(), lent.end());
  for (size_t k = 1; k < lent.size(); ++k) {
    const uint64_t before = table.regions(static_cast<int>(lent[k - 1].second)).size();
    if (lent[k - 1].first + before > lent[k].first) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region ", lent[k].second, ": the VMM's memory at 0x", absl::Hex(lent[k].first),
          " overlaps region ", lent[k - 1].second, "'s (", before, " bytes at 0x",
          absl::Hex(lent[k - 1].first), ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StoredRegion> LentRegion(const proto::RegionInfo& info,
                                        const ProvidedMemory& lent) {
  const size_t size = static_cast<size_t>(info.size());
  LIVEMIG_ASSIGN_OR_RETURN(
      MmapRegion<NoBitmap> region,
      MmapRegion<NoBitmap>::BuildRaw(lent.addr, size, PROT_READ | PROT_WRITE, MAP_SHARED));
  StoredRegion stored{info, std::move(region), "", ""};
  stored.starts_zeroed = lent.zeroed;
  if (lent.fd >= 0) {
    LIVEMIG_ASSIGN_OR_RETURN(FileOffset file, FileOffset::Dup(lent.fd, lent.file_offset));
    struct statfs fs;
    if (::fstatfs(file.fd(), &fs) != 0) {
      return PosixError(absl::StrCat("region ", info.index(), ": the VMM's memory file"), errno);
    }
    stored.lands_through_file = fs.f_type != HUGETLBFS_MAGIC;  // No write(2) there.
    stored.provided_path = FdPath(file.fd());
    if (fs.f_type == TMPFS_MAGIC) {
      // As for its own files (space_claim.h): the space is checked now,
      // and the holes round 0 leaves are claimed before any later page
      // is written through the mapping.
      LIVEMIG_ASSIGN_OR_RETURN(const SpaceClaim claim,
                               ClaimSpace(file.fd(), info.size(), static_cast<int>(info.index()),
                                          stored.provided_path));
      stored.provided_claim_deferred = claim.deferred;
    }
    stored.provided_file.emplace(std::move(file));
  }
  return stored;
}

}  // namespace livemig::migration_internal
