#include "migration/internal/dirty_harvest.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

DirtyHarvest::DirtyHarvest(const GuestMemory<AtomicBitmap>& memory, VmControl& vm,
                           std::span<DirtySource* const> sources, uint32_t batch_pages)
    : memory_(memory), vm_(vm), sources_(sources), batch_pages_(batch_pages) {
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    taken_.emplace_back(memory_.region(r).bitmap().num_words(), 0);
  }
}

DirtyHarvest::~DirtyHarvest() {
  while (started_ > 0) sources_[--started_]->Stop();
}

absl::Status DirtyHarvest::CollectSources() {
  for (size_t i = 0; i < started_; ++i) {
    absl::Status status = sources_[i]->Collect();
    if (!status.ok()) {
      collect_failed_ = true;
      return absl::Status(status.code(), absl::StrCat("dirty source ", sources_[i]->name(),
                                                      ": collect: ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status DirtyHarvest::MergeHypervisorLog(size_t r) {
  const AtomicBitmap& bitmap = memory_.region(r).bitmap();
  scratch_.assign(bitmap.num_words(), 0);
  absl::Status status = vm_.CollectDirty(r, std::span<uint64_t>(scratch_));
  if (status.ok()) status = bitmap.Merge(scratch_.data(), scratch_.size());
  if (!status.ok()) collect_failed_ = true;
  return status;
}

void DirtyHarvest::RememberTaken(size_t r) {
  for (size_t w = 0; w < scratch_.size(); ++w) taken_[r][w] |= scratch_[w];
}

absl::Status DirtyHarvest::TakeAll(const Queue& queue) {
  // Sources start before any page is copied (dirty_source.h): every write
  // from here on is reported by a later Collect.
  for (; started_ < sources_.size(); ++started_) {
    absl::Status status = sources_[started_]->Start();
    if (!status.ok()) {
      sources_[started_]->Stop();  // The contract: Stop also after a failed Start.
      return absl::Status(status.code(), absl::StrCat("dirty source ",
                                                      sources_[started_]->name(),
                                                      ": start: ", status.message()));
    }
  }
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
  LIVEMIG_RETURN_IF_ERROR(CollectSources());
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
  LIVEMIG_RETURN_IF_ERROR(CollectSources());
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    LIVEMIG_RETURN_IF_ERROR(MergeHypervisorLog(r));
    pending += memory_.region(r).bitmap().CountDirty();
  }
  return pending;
}

void DirtyHarvest::StopSources() {
  bool missed = collect_failed_;
  while (started_ > 0) {
    DirtySource* source = sources_[--started_];
    missed |= !source->Collect().ok();
    source->Stop();
  }
  if (!missed) return;
  for (size_t r = 0; r < memory_.num_regions(); ++r) {
    memory_.region(r).bitmap().SetAddrRange(0, memory_.region(r).len());
  }
}

void DirtyHarvest::GiveBack() {
  for (size_t r = 0; r < taken_.size(); ++r) {
    // Merge only fails for a word count mismatch, impossible here.
    (void)memory_.region(r).bitmap().Merge(taken_[r].data(), taken_[r].size());
  }
}

}  // namespace livemig::migration_internal
