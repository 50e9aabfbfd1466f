#include "migration/internal/round_pages.h"

#include <algorithm>
#include <bit>

#include "absl/strings/str_cat.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

RoundPages::RoundPages(const std::vector<uint64_t>& region_pages) : pages_(region_pages) {
  words_.reserve(region_pages.size());
  for (uint64_t pages : region_pages) words_.emplace_back((pages + 63) / 64);
}

absl::Status RoundPages::Claim(uint32_t region, uint64_t first, uint64_t count, uint32_t round,
                               uint64_t region_guest_addr) {
  std::vector<std::atomic<uint64_t>>& words = words_[region];
  const uint64_t end = first + count;
  for (uint64_t page = first; page < end;) {
    const uint64_t word = page / 64;
    const uint64_t bit = page % 64;
    const uint64_t bits = std::min<uint64_t>(64 - bit, end - page);
    const uint64_t mask = (bits == 64 ? ~uint64_t{0} : ((uint64_t{1} << bits) - 1)) << bit;
    const uint64_t before = words[word].fetch_or(mask, std::memory_order_relaxed);
    if ((before & mask) != 0) {
      const uint64_t twice = word * 64 + static_cast<uint64_t>(std::countr_zero(before & mask));
      return absl::DataLossError(absl::StrCat(
          "region ", region, " page ", twice, " (guest 0x",
          absl::Hex(region_guest_addr + twice * kMigrationPageSize), ") arrived twice in round ",
          round, ": a source sends a page at most once a round"));
    }
    page += bits;
  }
  return absl::OkStatus();
}

absl::Status RoundPages::Complete(uint32_t round,
                                  const std::vector<uint64_t>& guest_addrs) const {
  for (size_t r = 0; r < words_.size(); ++r) {
    uint64_t arrived = 0;
    uint64_t first_missing = pages_[r];
    for (size_t w = 0; w < words_[r].size(); ++w) {
      const uint64_t word = words_[r][w].load(std::memory_order_relaxed);
      arrived += static_cast<uint64_t>(std::popcount(word));
      if (first_missing == pages_[r] && word != ~uint64_t{0}) {
        // Past the region's end only in its last word, whose high bits stay 0.
        first_missing = std::min(pages_[r], w * 64 + std::countr_one(word));
      }
    }
    if (arrived == pages_[r]) continue;
    const uint64_t missing = pages_[r] - arrived;
    return absl::DataLossError(absl::StrCat(
        "round ", round, " ended without region ", r, " page ", first_missing, " (guest 0x",
        absl::Hex(guest_addrs[r] + first_missing * kMigrationPageSize), ")",
        missing > 1 ? absl::StrCat(" and ", missing - 1, " more") : "", " of its ", pages_[r],
        " pages: round 0 sends every page"));
  }
  return absl::OkStatus();
}

void RoundPages::NextRound() {
  for (auto& words : words_) {
    for (std::atomic<uint64_t>& word : words) word.store(0, std::memory_order_relaxed);
  }
}

}  // namespace livemig::migration_internal
