#include "migration/internal/dirty_harvest.h"

#include <algorithm>
#include <span>

#include "core/status_macros.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

DirtyHarvest::DirtyHarvest(const GuestMemory<AtomicBitmap>& memory, VmControl& vm,
                           uint32_t batch_pages)
    : memory_(memory), vm_(vm), batch_pages_(batch_pages) {
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    taken_.emplace_back(memory_.region(r).bitmap().num_words(), 0);
  }
}

absl::Status DirtyHarvest::MergeHypervisorLog(size_t r) {
  const AtomicBitmap& bitmap = memory_.region(r).bitmap();
  scratch_.assign(bitmap.num_words(), 0);
  LIVEMIG_RETURN_IF_ERROR(vm_.CollectDirty(r, std::span<uint64_t>(scratch_)));
  return bitmap.Merge(scratch_.data(), scratch_.size());
}

void DirtyHarvest::RememberTaken(size_t r) {
  for (size_t w = 0; w < scratch_.size(); ++w) taken_[r][w] |= scratch_[w];
}

absl::Status DirtyHarvest::TakeAll(const Queue& queue) {
  ++syncs_;
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    const AtomicBitmap& bitmap = memory_.region(r).bitmap();
    scratch_.assign(bitmap.num_words(), 0);
    LIVEMIG_RETURN_IF_ERROR(bitmap.GetAndReset(scratch_));
    RememberTaken(r);
    const uint64_t pages = memory_.region(r).len() / kMigrationPageSize;
    for (uint64_t first = 0; first < pages; first += batch_pages_) {
      PageWork work;
      work.region = static_cast<uint32_t>(r);
      work.round = 0;
      work.pages = std::min<uint64_t>(batch_pages_, pages - first);
      work.runs.emplace_back(first, work.pages);
      queue(std::move(work));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> DirtyHarvest::Harvest(uint32_t round, const Queue& queue) {
  uint64_t total = 0;
  ++syncs_;
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    const AtomicBitmap& bitmap = memory_.region(r).bitmap();
    LIVEMIG_RETURN_IF_ERROR(MergeHypervisorLog(r));
    PageWork work;
    work.region = static_cast<uint32_t>(r);
    work.round = round;
    auto flush = [&] {
      if (work.pages == 0) return;
      queue(std::move(work));
      work.runs.clear();
      work.pages = 0;
    };
    size_t dirty = 0;
    LIVEMIG_RETURN_IF_ERROR(bitmap.HarvestRuns(
        scratch_,
        [&](size_t first, size_t count) {
          while (count > 0) {
            const uint64_t take = std::min<uint64_t>(count, batch_pages_ - work.pages);
            work.runs.emplace_back(first, take);
            work.pages += take;
            first += take;
            count -= take;
            if (work.pages == batch_pages_) flush();
          }
        },
        &dirty));
    flush();
    RememberTaken(r);
    total += dirty;
  }
  return total;
}

absl::StatusOr<uint64_t> DirtyHarvest::Pending() {
  uint64_t pending = 0;
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    LIVEMIG_RETURN_IF_ERROR(MergeHypervisorLog(r));
    pending += memory_.region(r).bitmap().CountDirty();
  }
  return pending;
}

void DirtyHarvest::GiveBack() {
  for (size_t r = 0; r < taken_.size(); ++r) {
    // Merge only fails for a word count mismatch, impossible here.
    (void)memory_.region(r).bitmap().Merge(taken_[r].data(), taken_[r].size());
  }
}

}  // namespace livemig::migration_internal
