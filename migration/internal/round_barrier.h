// File: migration/internal/round_barrier.h
//
// RoundBarrier: where every channel's reader waits at the end of each round
// until all channels finished it, so a page of round r+1 never lands before
// the same page of round r arriving on another channel. The last channel to
// arrive runs a callback while the others wait (the receiver refreshes its
// page-hash digests there).
//
// A channel that is still receiving its part of the round is waited for as
// long as bytes keep arriving: the wait fails only after a whole timeout in
// which `progress` (the bytes read on all channels) did not move. (With a
// timeout counted from the arrival alone, a fast channel that had finished
// gave up on a slow one that still had seconds of data in flight, and the
// migration failed although every channel was moving.)
//
// Thread safety: Arrive() and Break() from any thread; `progress` is
// called under the barrier's lock and must not block.
#ifndef LIVEMIG_MIGRATION_INTERNAL_ROUND_BARRIER_H_
#define LIVEMIG_MIGRATION_INTERNAL_ROUND_BARRIER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace livemig::migration_internal {

class RoundBarrier {
 public:
  // `cancelled` must outlive the barrier. `on_round` runs on the last channel
  // to arrive at each round's end, while every other channel waits: nothing
  // lands meanwhile. `progress` counts what arrived so far (any monotonic
  // count; null: the timeout counts from the arrival only).
  RoundBarrier(size_t parties, const std::atomic<bool>* cancelled,
               std::function<void(uint32_t round, bool final)> on_round,
               std::function<uint64_t()> progress = nullptr)
      : parties_(parties),
        cancelled_(cancelled),
        on_round_(std::move(on_round)),
        progress_(std::move(progress)) {}

  // Waits until every channel ended round `round`. Fails if the channels
  // disagree on whether it was the final round (DataLoss), if the barrier was
  // broken by a failure or Cancel() (Aborted), or after `timeout` in which
  // `progress` did not change (DeadlineExceeded).
  absl::Status Arrive(uint32_t round, bool final, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    Round& r = rounds_[round];
    r.finals += final ? 1 : 0;
    // The others cannot leave before this thread unlocks: on_round_ runs
    // before any of them reads page hashes or lands round + 1.
    if (r.arrived + 1 == parties_ && !broken_) on_round_(round, r.finals == parties_);
    ++r.arrived;
    // Every channel left the rounds before (it arrived here after leaving
    // them), so nobody refers to them: forgotten, one entry per round kept.
    if (r.arrived == parties_) rounds_.erase(rounds_.begin(), rounds_.find(round));
    changed_.notify_all();
    absl::Time deadline = absl::Now() + timeout;
    uint64_t seen = progress_ ? progress_() : 0;
    while (!broken_ && r.arrived < parties_) {
      if (cancelled_->load(std::memory_order_relaxed)) broken_ = true;
      if (absl::Now() >= deadline) {
        const uint64_t now_seen = progress_ ? progress_() : seen;
        if (now_seen == seen) {
          return absl::DeadlineExceededError(absl::StrCat(
              "other channels did not finish round ", round, ": nothing arrived for ",
              absl::FormatDuration(timeout)));
        }
        seen = now_seen;  // Still moving: another whole timeout.
        deadline = absl::Now() + timeout;
      }
      changed_.wait_for(lock, std::chrono::milliseconds(50));
    }
    if (broken_) return absl::AbortedError("another channel failed");
    if (r.finals != 0 && r.finals != parties_) {
      return absl::DataLossError(absl::StrCat(
          "channels disagree on whether round ", round, " is the final one (",
          r.finals, " of ", parties_, " say so)"));
    }
    return absl::OkStatus();
  }

  void Break() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = true;
    }
    changed_.notify_all();
  }

 private:
  struct Round {
    size_t arrived = 0;
    size_t finals = 0;
  };
  const size_t parties_;
  const std::atomic<bool>* cancelled_;
  const std::function<void(uint32_t, bool)> on_round_;
  const std::function<uint64_t()> progress_;
  // std::mutex: see migration/internal/send_channel.h. Guards the rest.
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<uint32_t, Round> rounds_;
  bool broken_ = false;
};


}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_ROUND_BARRIER_H_
