#include "migration/internal/torn_pages.h"

#include <algorithm>
#include <bit>

#include "absl/strings/str_cat.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

std::string NotLandedAsSent(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round,
                            uint64_t landed, uint64_t sent) {
  return absl::StrCat("region ", region, " page ", page, " (guest 0x", absl::Hex(guest_addr),
                      ") of round ", round, " did not land as sent: hash 0x", absl::Hex(landed),
                      ", the source sent 0x", absl::Hex(sent));
}

TornPages::TornPages(const std::vector<Region>& regions) : regions_(regions) {
  words_.reserve(regions.size());
  for (const Region& r : regions) words_.emplace_back((r.pages + 63) / 64);
}

void TornPages::Landing(uint32_t region, uint64_t first, uint64_t count) {
  if (pending_.load(std::memory_order_relaxed) == 0) return;
  std::vector<std::atomic<uint64_t>>& words = words_[region];
  const uint64_t end = first + count;
  uint64_t cleared = 0;
  for (uint64_t page = first; page < end;) {
    const uint64_t bit = page % 64;
    const uint64_t bits = std::min<uint64_t>(64 - bit, end - page);
    const uint64_t mask = (bits == 64 ? ~uint64_t{0} : ((uint64_t{1} << bits) - 1)) << bit;
    std::atomic<uint64_t>& word = words[page / 64];
    if ((word.load(std::memory_order_relaxed) & mask) != 0) {
      cleared += std::popcount(word.fetch_and(~mask, std::memory_order_relaxed) & mask);
    }
    page += bits;
  }
  if (cleared == 0) return;
  pending_.fetch_sub(cleared, std::memory_order_relaxed);
  if (detailed_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  details_.erase(details_.lower_bound({region, first}), details_.lower_bound({region, end}));
  detailed_.store(details_.size(), std::memory_order_relaxed);
}

void TornPages::Tore(uint32_t region, uint64_t page, uint32_t round, uint64_t landed,
                     uint64_t sent) {
  tears_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t mask = uint64_t{1} << (page % 64);
  if ((words_[region][page / 64].fetch_or(mask, std::memory_order_relaxed) & mask) == 0) {
    pending_.fetch_add(1, std::memory_order_relaxed);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = details_.find({region, page});
  if (it != details_.end()) {
    it->second = Note{round, landed, sent};  // Only its latest tear.
  } else if (details_.size() < kDetailedTears) {
    details_.emplace(std::make_pair(region, page), Note{round, landed, sent});
    detailed_.store(details_.size(), std::memory_order_relaxed);
  }
}

absl::Status TornPages::Unresolved() const {
  const uint64_t pending = pending_.load(std::memory_order_relaxed);
  if (pending == 0) return absl::OkStatus();
  const std::string like =
      absl::StrCat(", and it was not sent again (", pending,
                   pending == 1 ? " page like it)" : " pages like it)");
  for (uint32_t r = 0; r < words_.size(); ++r) {
    for (uint64_t w = 0; w < words_[r].size(); ++w) {
      const uint64_t bits = words_[r][w].load(std::memory_order_relaxed);
      if (bits == 0) continue;
      const uint64_t page = w * 64 + static_cast<uint64_t>(std::countr_zero(bits));
      const uint64_t guest = regions_[r].guest_addr + page * kMigrationPageSize;
      std::lock_guard<std::mutex> lock(mu_);
      auto it = details_.find({r, page});
      if (it == details_.end()) {
        return absl::DataLossError(absl::StrCat("region ", r, " page ", page, " (guest 0x",
                                                absl::Hex(guest), ") did not land as sent", like));
      }
      const Note& n = it->second;
      return absl::DataLossError(
          absl::StrCat(NotLandedAsSent(r, page, guest, n.round, n.landed, n.sent), like));
    }
  }
  return absl::InternalError("torn pages: counted but not found");  // Never: pending_ counts bits.
}

}  // namespace livemig::migration_internal
