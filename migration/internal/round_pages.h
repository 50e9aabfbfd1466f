// File: migration/internal/round_pages.h
//
// RoundPages: the pages of each region that have arrived in the current
// round, so that a page a source sends twice in one round is refused before
// it lands.
//
// A source sends each page at most once per round (its harvest hands every
// dirty page to one channel; protocol.h). The receiver depends on it: each
// channel records the page hash of what it landed, and two channels landing
// one page in one round can interleave so that the recorded hash is of the
// bytes the other overwrote — through a file (round 0, file_landing.h) the
// hash is taken in the reader's buffer, before its pwrite(2), and recorded
// after the whole batch — and the Completion compares the source's hashes
// with the recorded ones, not with the memory. So a second arrival in one
// round is a broken or hostile source: DataLoss, before any of that batch
// lands. Within a round, a ZERO page, a RAW page and a compressed page are
// the same claim.
//
// Memory: one bit per page (32 KiB per GiB of guest memory).
//
// Thread safety: Claim() from any channel reader, concurrently; NextRound()
// only while no reader claims (the receiver calls it in EndOfRound, which
// runs while every other reader waits in the round barrier, whose mutex
// orders the clearing before the next round's claims).
#ifndef LIVEMIG_MIGRATION_INTERNAL_ROUND_PAGES_H_
#define LIVEMIG_MIGRATION_INTERNAL_ROUND_PAGES_H_

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace livemig::migration_internal {

class RoundPages {
 public:
  // region_pages[r]: how many pages region r has.
  explicit RoundPages(const std::vector<uint64_t>& region_pages);

  // Claims pages [first, first + count) of `region` (at guest address
  // `region_guest_addr`) for round `round`. REQUIRES the run is inside the
  // region. DataLoss when one of them arrived already in this round, naming
  // the first: "region 1 page 5 (guest 0x40005000) arrived twice in round
  // 3: a source sends a page at most once a round". The pages before it stay
  // claimed (the migration fails anyway).
  absl::Status Claim(uint32_t region, uint64_t first, uint64_t count, uint32_t round,
                     uint64_t region_guest_addr);

  // Whether every page of every region was claimed in this round, which
  // must be so at the end of round 0 (it sends every page; protocol.h).
  // DataLoss naming the first page missing and how many are: "round 0
  // ended without region 1 page 5 (guest 0x40005000) and 10 more of its
  // 16 pages: round 0 sends every page". Region r starts at guest_addrs[r].
  // Call while no reader claims (as NextRound()).
  absl::Status Complete(uint32_t round, const std::vector<uint64_t>& guest_addrs) const;

  // Forgets every claim: the next round begins.
  void NextRound();

 private:
  // Relaxed: a claim publishes nothing; fetch_or alone decides which of two
  // claims of one page comes second, and that one fails the migration.
  std::vector<std::vector<std::atomic<uint64_t>>> words_;  // Per region, zeroed.
  std::vector<uint64_t> pages_;                             // Per region.
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_ROUND_PAGES_H_
