// File: migration/internal/torn_pages.h
//
// TornPages: the receiver's record of pages that landed torn
// (proto::FEATURE_TORN_PAGES; migration/protocol.h says when).
//
// A source that sends a pre-copy round straight from live guest memory hashes
// a page and then hands the kernel the guest's own bytes. If the guest writes
// the page in between, what lands differs from the page hash: the page tore.
// It was written after its round's harvest, so it is dirty and the source
// sends it again in a later round (at the latest in the paused final round).
// The receiver keeps what landed (its page hash records what is there), notes
// the page here, and forgets it when a LATER round lands it whole (matching
// its hash, or as a ZERO page). A page still noted when the final round has
// ended fails the migration with DataLoss (Unresolved()): bytes that did not
// match their hash and were never replaced would be handed over as the guest.
//
// So the guarantee of the per-page check holds at the end instead of on
// arrival: a page corrupted on the wire in a pre-copy round is either sent
// again (and checked again) or fails the migration, with any verify mode.
// Only a later round clears a note: a page arriving twice in one round is
// refused before it lands (round_pages.h), and the caller clears a run's old
// notes before noting its new tears (Landing()), so a source cannot clear its
// own tear within the round that made it.
//
// Memory: one bit per page of the regions (32 KiB per GiB, as RoundPages),
// whatever a source sends, plus the details (round, hashes) of at most
// kDetailedTears notes for the error message; a tear past them is named
// without its hashes.
//
// Thread safety: every member may be called from any channel reader. While
// nothing is noted, Landing() costs one relaxed load: a note made in round r
// reaches a reader of round r+1 through the round barrier, which every
// reader passes (under its mutex) after the note and before round r+1 lands;
// within a round no reader clears a page another one notes (a page arrives
// once a round), so a reader that misses one concurrent note loses nothing.
#ifndef LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_
#define LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace livemig::migration_internal {

// "region R page P (guest 0x…) of round N did not land as sent: hash 0x…,
// the source sent 0x…": a page whose landed bytes do not match its hash,
// refused on arrival (no FEATURE_TORN_PAGES) or still torn at the end.
std::string NotLandedAsSent(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round,
                            uint64_t landed, uint64_t sent);

class TornPages {
 public:
  struct Region {
    uint64_t pages;
    uint64_t guest_addr;
  };
  // Notes past this many keep no details (about 4 KiB each way).
  static constexpr size_t kDetailedTears = 64;

  explicit TornPages(const std::vector<Region>& regions);

  // Pages [first, first + count) of `region` land now, in a round after any
  // note they carry (a page lands once a round): their notes are cleared.
  // Called for every run before Tore() for any of its pages.
  // REQUIRES the run is inside the region.
  void Landing(uint32_t region, uint64_t first, uint64_t count);

  // Page `page` of `region` landed in `round` with page hash `landed`
  // instead of `sent`. REQUIRES `page` is inside the region.
  void Tore(uint32_t region, uint64_t page, uint32_t round, uint64_t landed, uint64_t sent);

  // OK when no page is noted; else DataLoss naming the first noted page
  // (lowest region, then page): "region 1 page 100 (guest 0x40064000) of
  // round 1 did not land as sent: hash 0x…, the source sent 0x…, and it was
  // not sent again (N pages like it)"; a note without details: "region 1
  // page 100 (guest 0x40064000) did not land as sent, and it was not sent
  // again (N pages like it)".
  absl::Status Unresolved() const;

  // Pages that tore during the migration (each counted once per tear).
  uint64_t tears() const { return tears_.load(std::memory_order_relaxed); }

 private:
  struct Note {
    uint32_t round;
    uint64_t landed;
    uint64_t sent;
  };

  std::vector<Region> regions_;
  // Per region, one bit per page. Relaxed: see the file comment; fetch_or
  // and fetch_and alone decide whether a bit changed, so pending_ stays the
  // number of bits set.
  std::vector<std::vector<std::atomic<uint64_t>>> words_;
  std::atomic<uint64_t> pending_{0};  // Bits set, readable without mu_.
  std::atomic<uint64_t> tears_{0};    // A counter only: relaxed.
  mutable std::mutex mu_;
  std::map<std::pair<uint32_t, uint64_t>, Note> details_;  // Guarded by mu_.
  std::atomic<size_t> detailed_{0};  // details_.size(), readable without mu_.
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_
