// File: migration/internal/pause_budget.h
//
// PauseBudget: how long the source guest may still stay paused before the
// handover (SenderOptions::max_pause). From the Pause() on, every read and
// write of the final round, the device state and the verification waits at
// most for what is left of it (and for at most the io timeout, as before),
// so a destination that reads or answers just fast enough to beat each io
// timeout cannot keep the guest paused for many of them; past the budget the
// attempt fails with DeadlineExceeded and the guest resumes. The HANDOVER
// is the last write it bounds: after it the guest stays paused anyway (in
// doubt) until the destination's answer.
//
//   PauseBudget pause;                       // Not paused: the io timeout.
//   pause.Start(absl::Now(), options.max_pause);
//   ... WriteFrame(conn, ..., pause.Timeout(options.io_timeout)) ...
//   return pause.Check(status);              // The pause's error once over.
//
// Thread safety: a value; the migration thread's.
#ifndef LIVEMIG_MIGRATION_INTERNAL_PAUSE_BUDGET_H_
#define LIVEMIG_MIGRATION_INTERNAL_PAUSE_BUDGET_H_

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace livemig::migration_internal {

class PauseBudget {
 public:
  // The guest was paused at `paused_at`; InfiniteDuration: no budget.
  void Start(absl::Time paused_at, absl::Duration max_pause) {
    max_pause_ = max_pause;
    deadline_ =
        max_pause == absl::InfiniteDuration() ? absl::InfiniteFuture() : paused_at + max_pause;
  }

  // The timeout of one read or write now: `io_timeout`, or less when less of
  // the pause is left (at least 1 ms, so a wait still happens and fails).
  absl::Duration Timeout(absl::Duration io_timeout) const {
    if (deadline_ == absl::InfiniteFuture()) return io_timeout;
    return std::clamp(deadline_ - absl::Now(), absl::Milliseconds(1), io_timeout);
  }

  bool Over() const { return absl::Now() >= deadline_; }

  // `status`; but an error once the budget is spent (most likely its
  // shortened wait) becomes the DeadlineExceeded that says so.
  absl::Status Check(absl::Status status) const {
    if (status.ok() || !Over()) return status;
    return absl::DeadlineExceededError(
        absl::StrCat("the guest stayed paused for max_pause (", absl::FormatDuration(max_pause_),
                     ") before the destination verified the migration: it reads or answers too "
                     "slowly; the guest was resumed (",
                     status.message(), ")"));
  }

 private:
  absl::Duration max_pause_ = absl::InfiniteDuration();
  absl::Time deadline_ = absl::InfiniteFuture();
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_PAUSE_BUDGET_H_
