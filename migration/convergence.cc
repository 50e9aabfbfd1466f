#include "migration/convergence.h"

#include <algorithm>
#include <cassert>
#include <utility>

#include "absl/strings/str_cat.h"

namespace livemig {

PauseEstimate EstimatePause(const RoundSample& sample, double fallback_bandwidth) {
  PauseEstimate e;
  e.bandwidth_bytes_per_s =
      static_cast<double>(sample.bytes_sent) / std::max(sample.seconds, 1e-6);
  const double bandwidth =
      e.bandwidth_bytes_per_s > 0 ? e.bandwidth_bytes_per_s : fallback_bandwidth;
  if (bandwidth > 0) {
    e.final_round_ms = 1000.0 * static_cast<double>(sample.pending_bytes) / bandwidth;
    e.device_state_ms = 1000.0 * static_cast<double>(sample.device_state_bytes) / bandwidth;
  }
  e.completion_ms = sample.completion_ms;
  return e;
}

Convergence::Convergence(ConvergencePolicy policy) : policy_(std::move(policy)) {}

// At a limit: force_at_limit switches over unconverged, otherwise `error`.
Decision Convergence::Limit(Decision d, absl::Status error) const {
  if (policy_.force_at_limit) {
    d.action = Decision::Action::kSwitchover;
    d.converged = false;
  } else {
    d.action = Decision::Action::kFail;
    d.error = std::move(error);
  }
  return d;
}

absl::Status Convergence::DuringRound(uint32_t round, absl::Duration elapsed) const {
  if (policy_.force_at_limit || elapsed < policy_.timeout) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      "did not converge within the ", absl::FormatDuration(policy_.timeout), " timeout: round ",
      round, " had not ended (the link or the destination is too slow)"));
}

absl::Duration Convergence::RoundWait(absl::Duration elapsed, absl::Duration io_timeout) const {
  if (policy_.force_at_limit) return io_timeout;
  return std::clamp(policy_.timeout - elapsed, absl::Milliseconds(1), io_timeout);
}

Decision Convergence::AfterRound(uint32_t round, const RoundSample& sample) {
  assert(!finished_ && round == next_round_);
  ++next_round_;
  Decision d;
  d.estimate = EstimatePause(sample, last_bandwidth_);
  if (d.estimate.bandwidth_bytes_per_s > 0) last_bandwidth_ = d.estimate.bandwidth_bytes_per_s;
  const double expected_ms = d.estimate.total_ms();
  const double limit_ms = absl::ToDoubleMilliseconds(policy_.downtime_limit);
  if (expected_ms <= limit_ms) {
    finished_ = true;
    d.action = Decision::Action::kSwitchover;
    d.converged = true;
    d.throttle_percent = throttle_;
    return d;
  }

  // Nothing left to send and still over the limit: the pause's fixed part
  // (device state, completion) alone exceeds it. The receiver measured that
  // completion at the end of this round, so a round that carried pages
  // (round 0: all of memory; durable: its flush) can make it look far larger
  // than the pause's: once per migration, when the completion is what goes
  // over, one more round, with nothing to send, measures it again (unless
  // no round or time is left), and only that figure, which no further round
  // changes, fails. Device state over the limit fails at once.
  const uint64_t pending = sample.pending_bytes;
  const bool last_round =
      round + 1 >= policy_.max_rounds || sample.elapsed >= policy_.timeout;
  const bool completion_decides = expected_ms - d.estimate.completion_ms <= limit_ms;
  if (pending == 0 && completion_decides && !remeasured_ && !last_round) {
    remeasured_ = true;
    d.throttle_percent = throttle_;
    return d;  // kContinue.
  }
  if (pending == 0) {
    finished_ = true;
    d.throttle_percent = throttle_;
    return Limit(d, absl::AbortedError(absl::StrCat(
                        "nothing is left to send, but the pause's fixed part, ", expected_ms,
                        " ms (device state ", d.estimate.device_state_ms, " ms, completion ",
                        d.estimate.completion_ms, " ms), exceeds the downtime limit of ",
                        limit_ms, " ms")));
  }

  // Stall: the dirty volume did not shrink below its minimum so far.
  stalled_ = round > 0 && pending >= min_pending_ ? stalled_ + 1 : 0;
  min_pending_ = round == 0 ? pending : std::min(min_pending_, pending);
  const bool stall = policy_.stall_rounds > 0 && stalled_ >= policy_.stall_rounds;
  // Auto-converge trigger (QEMU): the guest dirtied more than half of what
  // the round sent, twice in a row. Doubles: the sum cannot overflow.
  const double dirty = static_cast<double>(pending) +
                       static_cast<double>(sample.device_state_bytes);
  fast_dirtying_ = dirty > 0.5 * std::max<double>(static_cast<double>(sample.bytes_sent), 1)
                       ? fast_dirtying_ + 1
                       : 0;

  if (policy_.auto_converge && (fast_dirtying_ >= 2 || stall) &&
      throttle_ < policy_.throttle_max) {
    throttle_ = throttle_ == 0
                    ? policy_.throttle_initial
                    : std::min(policy_.throttle_max, throttle_ + policy_.throttle_increment);
    fast_dirtying_ = 0;
    stalled_ = 0;
    d.action = Decision::Action::kThrottle;
  } else if (stall && !policy_.auto_converge) {
    finished_ = true;
    d.throttle_percent = throttle_;
    return Limit(d, absl::AbortedError(absl::StrCat(
                        "dirty volume did not shrink for ", policy_.stall_rounds,
                        " rounds (", pending, " bytes pending)")));
  }
  d.throttle_percent = throttle_;

  const bool out_of_rounds = round + 1 >= policy_.max_rounds;
  const bool out_of_time = sample.elapsed >= policy_.timeout;
  if (!out_of_rounds && !out_of_time) return d;
  finished_ = true;
  if (out_of_time) {
    return Limit(d, absl::DeadlineExceededError(absl::StrCat(
                        "did not converge within the ",
                        absl::FormatDuration(policy_.timeout), " timeout (", pending, " bytes pending, expected downtime ",
                        expected_ms, " ms)")));
  }
  return Limit(d, absl::AbortedError(absl::StrCat(
                      "did not converge within ", policy_.max_rounds, " rounds (",
                      pending, " bytes pending, expected downtime ", expected_ms,
                      " ms > limit ", limit_ms, " ms)")));
}

}  // namespace livemig
