#include "migration/internal/batch_runs.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

absl::StatusOr<BatchTarget> TargetOf(const proto::PageBatch& batch, uint32_t round,
                                     uint8_t* base, uint64_t region_pages,
                                     uint64_t guest_addr, RoundPages& claims) {
  if (batch.round() != round) {
    return absl::DataLossError(
        absl::StrCat("PAGE_BATCH of round ", batch.round(), " arrived in round ", round));
  }
  BatchTarget target;
  target.destination.reserve(batch.runs_size());
  uint64_t next_free = 0;  // Runs go up and do not overlap (proto PageBatch).
  for (const proto::PageRun& run : batch.runs()) {
    if (run.count() == 0 || run.first_page() >= region_pages ||
        run.count() > region_pages - run.first_page()) {
      return absl::OutOfRangeError(absl::StrCat(
          "PAGE_BATCH run [", run.first_page(), ", +", run.count(), ") is outside region ",
          batch.region_index(), " (", region_pages, " pages)"));
    }
    if (run.first_page() < next_free) {
      return absl::DataLossError(absl::StrCat(
          "PAGE_BATCH run [", run.first_page(), ", +", run.count(),
          ") overlaps or precedes the run before it (which ends at page ", next_free, ")"));
    }
    next_free = run.first_page() + run.count();
    target.pages += run.count();
    LIVEMIG_RETURN_IF_ERROR(
        claims.Claim(batch.region_index(), run.first_page(), run.count(), round, guest_addr));
    target.destination.push_back(iovec{base + run.first_page() * kMigrationPageSize,
                                       run.count() * kMigrationPageSize});
  }
  return target;
}

}  // namespace livemig::migration_internal
