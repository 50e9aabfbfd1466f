// File: migration/convergence.h
//
// Convergence: the sender's decision, after each non-final pre-copy round,
// whether to keep copying, throttle the guest, switch over to the paused final
// round, or give up. The sender measures a round and passes a RoundSample in;
// AfterRound() answers with a Decision and the sender carries it out (sockets,
// Pause(), SetThrottle() stay in sender.cc).
//
// The estimate budgets the whole pause a switchover would cost now:
//   final round  = pending_bytes      / bandwidth
//   device state = device_state_bytes / bandwidth
//   completion   = the sample's completion_ms (verification, flush, handover
//                  round trips, as measured by the caller)
// QEMU's rule budgets only the first two, so a guest whose memory fits the
// limit could still blow it in the completion step; here it does not switch.
//
// The rules, checked in this order after each round:
//   1. estimate.total_ms() <= downtime_limit: kSwitchover, converged = true.
//   2. Stall: the round's pending_bytes >= the minimum of the earlier rounds'
//      (round 0 never stalls), `stall_rounds` rounds in a row (0: never).
//   3. Fast dirtying (QEMU's auto-converge trigger): pending_bytes +
//      device_state_bytes > bytes_sent / 2, two rounds in a row.
//   4. auto_converge and (fast dirtying or stall) and throttle < throttle_max:
//      kThrottle, the throttle goes to throttle_initial, then up by
//      throttle_increment, capped at throttle_max; both counters restart.
//   5. Otherwise a stall without auto_converge: kFail (Aborted), or with
//      force_at_limit kSwitchover, converged = false.
//   6. round + 1 >= max_rounds or elapsed >= timeout: kFail (Aborted for
//      rounds, DeadlineExceeded for time), or with force_at_limit kSwitchover,
//      converged = false. A limit hit in the round of a throttle step wins over
//      kThrottle, but the new throttle is still in effect and reported.
//   7. Otherwise kContinue.
// The timeout also holds while a round is going out or awaits its
// acknowledgement (DuringRound(), RoundWait()): past it the round is cut
// short with DeadlineExceeded, so a slow link or a destination that reads or
// answers just fast enough for every io timeout cannot stretch one round past
// the timeout; with force_at_limit the round in flight is finished instead,
// and rule 6 then switches over.
// kSwitchover and kFail end the migration: the caller stops calling.
//
// Deterministic: no clocks, no I/O, no threads; time arrives as
// RoundSample::elapsed. Not thread-safe: one migration thread owns it.
#ifndef LIVEMIG_MIGRATION_CONVERGENCE_H_
#define LIVEMIG_MIGRATION_CONVERGENCE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace livemig {

// The knobs, as in SenderOptions.
struct ConvergencePolicy {
  absl::Duration downtime_limit = absl::Milliseconds(300);
  uint32_t max_rounds = 30;
  absl::Duration timeout = absl::Minutes(10);  // SenderOptions::timeout's default.
  bool force_at_limit = false;  // SenderOptions::OnLimit::kForce: switch over instead of failing
  uint32_t stall_rounds = 5;    // 0: never
  bool auto_converge = false;
  int throttle_initial = 20;
  int throttle_increment = 10;
  int throttle_max = 99;
};

// What one finished, non-final pre-copy round measured.
struct RoundSample {
  uint64_t bytes_sent = 0;          // bytes the link carried during the round
  double seconds = 0;               // how long the round took (clamped to >= 1e-6 when dividing)
  // Dirty bytes found right after it (pages * page size; with compression,
  // scaled by the round's wire bytes per page byte, so they compare with
  // bytes_sent).
  uint64_t pending_bytes = 0;
  uint64_t device_state_bytes = 0;  // VmControl::DeviceStateSizeHint()
  double completion_ms = 0;         // expected cost of the completion step (verification, flush,
                                    // handover round trips), measured by the caller
  absl::Duration elapsed;           // since the migration started, at the round's end
};

// The pause a switchover right now would cost, by part (milliseconds).
struct PauseEstimate {
  double bandwidth_bytes_per_s = 0;  // bytes_sent / seconds
  double final_round_ms = 0;         // pending_bytes / bandwidth
  double device_state_ms = 0;        // device_state_bytes / bandwidth
  double completion_ms = 0;          // the sample's completion_ms
  double total_ms() const { return final_round_ms + device_state_ms + completion_ms; }
};

// Bandwidth 0 (nothing sent): the transfer parts use `fallback_bandwidth`
// (bytes/s; Convergence passes the last round's that sent anything), and
// are 0 without one; the total is then the completion step alone.
PauseEstimate EstimatePause(const RoundSample& sample, double fallback_bandwidth = 0);

struct Decision {
  enum class Action {
    kContinue,    // run another pre-copy round
    kSwitchover,  // pause the guest and send the final round
    kThrottle,    // apply throttle_percent, then run another round
    kFail,        // give up: roll back and return `error`
  };
  Action action = Action::kContinue;
  bool converged = false;     // kSwitchover: the estimate fits the limit (false: forced at a limit)
  int throttle_percent = 0;   // the throttle in effect after this decision (new value for kThrottle)
  absl::Status error;         // kFail only: why (Aborted or DeadlineExceeded)
  PauseEstimate estimate;     // of the sample just given
};

class Convergence {
 public:
  explicit Convergence(ConvergencePolicy policy);

  // Called after every non-final round 0, 1, 2, ... in order. `round` is the
  // round's number.
  // REQUIRES: `round` is the previous call's plus one (0 first), and no
  // earlier call returned kSwitchover or kFail.
  Decision AfterRound(uint32_t round, const RoundSample& sample);

  // While round `round` is still going out or awaiting its acknowledgement,
  // `elapsed` after the migration began: DeadlineExceeded once elapsed >=
  // timeout ("did not converge within the 1s timeout: round 0 had not ended
  // ..."), unless force_at_limit; OK otherwise. Changes nothing: AfterRound
  // still decides.
  absl::Status DuringRound(uint32_t round, absl::Duration elapsed) const;

  // How long one wait of a live round may take: `io_timeout`, or less when
  // less of the timeout is left (at least 1 ms), unless force_at_limit.
  absl::Duration RoundWait(absl::Duration elapsed, absl::Duration io_timeout) const;

  // The throttle in effect now (0: none).
  int throttle() const { return throttle_; }

 private:
  Decision Limit(Decision d, absl::Status error) const;

  const ConvergencePolicy policy_;
  uint32_t next_round_ = 0;
  bool finished_ = false;
  uint64_t min_pending_ = 0;  // over the rounds so far; meaningless before round 1
  uint32_t stalled_ = 0;
  uint32_t fast_dirtying_ = 0;
  int throttle_ = 0;
  double last_bandwidth_ = 0;  // of the last round that sent anything
  bool remeasured_ = false;    // the fixed part got its one more round
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_CONVERGENCE_H_
