#include "migration/internal/torn_pages.h"

#include "absl/strings/str_cat.h"

namespace livemig::migration_internal {

std::string NotLandedAsSent(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round,
                            uint64_t landed, uint64_t sent) {
  return absl::StrCat("region ", region, " page ", page, " (guest 0x", absl::Hex(guest_addr),
                      ") of round ", round, " did not land as sent: hash 0x", absl::Hex(landed),
                      ", the source sent 0x", absl::Hex(sent));
}

void TornPages::Tore(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round,
                     uint64_t landed, uint64_t sent) {
  tears_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(mu_);
  notes_.insert_or_assign(std::make_pair(region, page), Note{guest_addr, round, landed, sent});
  pending_.store(notes_.size(), std::memory_order_relaxed);
}

void TornPages::Landed(uint32_t region, uint64_t first, uint64_t count, uint32_t round) {
  if (pending_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = notes_.lower_bound({region, first});
  while (it != notes_.end() && it->first.first == region && it->first.second < first + count) {
    it = it->second.round < round ? notes_.erase(it) : std::next(it);
  }
  pending_.store(notes_.size(), std::memory_order_relaxed);
}

absl::Status TornPages::Unresolved() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (notes_.empty()) return absl::OkStatus();
  const auto& [key, note] = *notes_.begin();
  return absl::DataLossError(absl::StrCat(
      NotLandedAsSent(key.first, key.second, note.guest_addr, note.round, note.landed, note.sent),
      ", and it was not sent again (", notes_.size(),
      notes_.size() == 1 ? " page like it)" : " pages like it)"));
}

}  // namespace livemig::migration_internal
