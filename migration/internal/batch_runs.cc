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

bool IsCompressedEncoding(proto::Encoding encoding) {
  return encoding == proto::ENCODING_ZSTD || encoding == proto::ENCODING_LZ4;
}

absl::Status CheckBatchFrame(const proto::PageBatch& batch, const wire::FrameHeader& header,
                             uint64_t pages, uint64_t features) {
  const bool compressed = IsCompressedEncoding(batch.encoding());
  if (batch.encoding() == proto::ENCODING_RAW || compressed) {
    if (!compressed && header.payload_len != pages * kMigrationPageSize) {
      return absl::DataLossError(absl::StrCat("PAGE_BATCH of ", pages, " pages carries ",
                                              header.payload_len, " payload bytes"));
    }
    if (wire::PayloadIsChecksummed(header) ||
        static_cast<uint64_t>(batch.page_hashes_size()) != pages) {
      return absl::DataLossError(absl::StrCat(
          compressed ? proto::Encoding_Name(batch.encoding()) : "RAW", " PAGE_BATCH of ", pages,
          " pages carries ", batch.page_hashes_size(), " page hashes",
          wire::PayloadIsChecksummed(header) ? " and no PAGES_HASHED flag" : ""));
    }
    return absl::OkStatus();
  }
  if (batch.encoding() != proto::ENCODING_ZERO) {
    return absl::DataLossError(
        absl::StrCat("PAGE_BATCH encoding ", static_cast<int>(batch.encoding())));
  }
  if ((features & proto::FEATURE_ZERO_PAGES) == 0) {
    return absl::DataLossError("ZERO PAGE_BATCH, but the source did not offer FEATURE_ZERO_PAGES");
  }
  if (header.payload_len != 0) return absl::DataLossError("ZERO PAGE_BATCH carries a payload");
  return absl::OkStatus();
}

}  // namespace livemig::migration_internal
