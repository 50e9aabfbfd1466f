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
// Only a later round clears a note (and a page arriving twice in one round
// is refused anyway, round_pages.h): a source cannot clear its own tear
// within the round that made it.
//
// Memory: at most one note per page of the regions, bounded by the table.
//
// Thread safety: every member may be called from any channel reader. While
// nothing is noted, Landed() costs one relaxed load: a note made in round r
// reaches a reader of round r+1 through the round barrier, which every
// reader passes (under its mutex) after the note and before round r+1 lands;
// within a round, a note is never cleared, so a reader that misses one
// concurrent note loses nothing.
#ifndef LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_
#define LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"

namespace livemig::migration_internal {

// "region R page P (guest 0x…) of round N did not land as sent: hash 0x…,
// the source sent 0x…": a page whose landed bytes do not match its hash,
// refused on arrival (no FEATURE_TORN_PAGES) or still torn at the end.
std::string NotLandedAsSent(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round,
                            uint64_t landed, uint64_t sent);

class TornPages {
 public:
  // Page `page` of region `region` (at guest address `guest_addr`) landed in
  // `round` with page hash `landed` instead of `sent`. A page noted already
  // keeps only this, its latest tear.
  void Tore(uint32_t region, uint64_t page, uint64_t guest_addr, uint32_t round, uint64_t landed,
            uint64_t sent);

  // Pages [first, first + count) of `region` landed whole in `round`: notes
  // of earlier rounds on them are cleared.
  void Landed(uint32_t region, uint64_t first, uint64_t count, uint32_t round);

  // OK when no page is noted; else DataLoss naming the first noted page
  // (lowest region, then page): "region 1 page 100 (guest 0x40064000) of
  // round 1 did not land as sent: hash 0x…, the source sent 0x…, and it
  // was not sent again (N pages like it)".
  absl::Status Unresolved() const;

  // Pages that tore during the migration (each counted once per tear).
  uint64_t tears() const { return tears_.load(std::memory_order_relaxed); }

 private:
  struct Note {
    uint64_t guest_addr;
    uint32_t round;
    uint64_t landed;
    uint64_t sent;
  };

  mutable std::mutex mu_;
  std::map<std::pair<uint32_t, uint64_t>, Note> notes_;  // Guarded by mu_.
  // notes_.size(), readable without mu_ (see the file comment).
  std::atomic<uint64_t> pending_{0};
  std::atomic<uint64_t> tears_{0};  // A counter only: relaxed.
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_TORN_PAGES_H_
