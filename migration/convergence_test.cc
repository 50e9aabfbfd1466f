#include "migration/convergence.h"

#include <ostream>
#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {

// Readable actions in failure messages (found by ADL, so not in the
// anonymous namespace).
void PrintTo(Decision::Action action, std::ostream* os) {
  switch (action) {
    case Decision::Action::kContinue: *os << "kContinue"; return;
    case Decision::Action::kThrottle: *os << "kThrottle"; return;
    case Decision::Action::kSwitchover: *os << "kSwitchover"; return;
    case Decision::Action::kFail: *os << "kFail"; return;
  }
}

namespace {

using Action = Decision::Action;
using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One second at 1 MB/s: every 1000 pending bytes cost 1 ms of pause.
RoundSample Sample(uint64_t pending_bytes, double completion_ms = 0,
                   uint64_t device_state_bytes = 0,
                   absl::Duration elapsed = absl::ZeroDuration()) {
  RoundSample s;
  s.bytes_sent = 1'000'000;
  s.seconds = 1;
  s.pending_bytes = pending_bytes;
  s.device_state_bytes = device_state_bytes;
  s.completion_ms = completion_ms;
  s.elapsed = elapsed;
  return s;
}

// No stall detection, no round limit: only what a test turns on.
ConvergencePolicy Lenient() {
  ConvergencePolicy p;
  p.stall_rounds = 0;
  p.max_rounds = 1000;
  return p;
}

TEST(EstimatePause, SplitsThePauseIntoFinalRoundDeviceStateAndCompletion) {
  const PauseEstimate e = EstimatePause(Sample(100'000, 30, 50'000));
  EXPECT_EQ(e.bandwidth_bytes_per_s, 1'000'000);
  EXPECT_EQ(e.final_round_ms, 100);
  EXPECT_EQ(e.device_state_ms, 50);
  EXPECT_EQ(e.completion_ms, 30);
  EXPECT_EQ(e.total_ms(), 180);
}

TEST(EstimatePause, ZeroBandwidthLeavesOnlyTheCompletionStep) {
  RoundSample s = Sample(100'000, 7, 50'000);
  s.bytes_sent = 0;
  const PauseEstimate e = EstimatePause(s);
  EXPECT_EQ(e.bandwidth_bytes_per_s, 0);
  EXPECT_EQ(e.final_round_ms, 0);
  EXPECT_EQ(e.device_state_ms, 0);
  EXPECT_EQ(e.total_ms(), 7);
}

TEST(EstimatePause, ClampsAZeroLengthRoundToOneMicrosecond) {
  RoundSample s = Sample(1'000);
  s.bytes_sent = 1;
  s.seconds = 0;
  EXPECT_EQ(EstimatePause(s).bandwidth_bytes_per_s, 1e6);
}

TEST(Convergence, SwitchesOverWhenTheWholePauseFitsTheLimit) {
  Convergence c(Lenient());
  const Decision d = c.AfterRound(0, Sample(100'000, 30, 50'000));
  EXPECT_EQ(d.action, Action::kSwitchover);
  EXPECT_TRUE(d.converged);
  EXPECT_EQ(d.throttle_percent, 0);
  EXPECT_THAT(d.error, IsOk());
  EXPECT_EQ(d.estimate.total_ms(), 180);
}

TEST(Convergence, SwitchesOverWhenThePauseEqualsTheLimit) {
  Convergence c(Lenient());
  const Decision d = c.AfterRound(0, Sample(250'000, 50));
  EXPECT_EQ(d.estimate.total_ms(), 300);
  EXPECT_EQ(d.action, Action::kSwitchover);
  EXPECT_TRUE(d.converged);
}

TEST(Convergence, DoesNotSwitchOverWhenTheCompletionStepPushesThePauseOverTheLimit) {
  Convergence c(Lenient());
  // Memory and device state alone (QEMU's rule) fit: 250 + 40 = 290 ms.
  const Decision d = c.AfterRound(0, Sample(250'000, 20, 40'000));
  EXPECT_EQ(d.estimate.final_round_ms + d.estimate.device_state_ms, 290);
  EXPECT_EQ(d.estimate.total_ms(), 310);
  EXPECT_EQ(d.action, Action::kContinue);
  EXPECT_FALSE(d.converged);
  EXPECT_THAT(d.error, IsOk());
}

TEST(Convergence, ZeroBandwidthSwitchesOverOnlyWhenTheCompletionStepFits) {
  RoundSample s = Sample(10'000'000, 10);
  s.bytes_sent = 0;
  Convergence fits(Lenient());
  EXPECT_EQ(fits.AfterRound(0, s).action, Action::kSwitchover);

  s.completion_ms = 301;
  Convergence too_slow(Lenient());
  const Decision d = too_slow.AfterRound(0, s);
  EXPECT_EQ(d.action, Action::kContinue);
  EXPECT_EQ(d.estimate.total_ms(), 301);
}

// The completion figure of a round that carried pages is that round's
// (round 0: all of memory; durable: its flush): one more round, with
// nothing to send, measures the pause's own; only that figure fails, at
// once, not after stall_rounds of sending nothing. The empty round's
// estimate keeps the bandwidth of the round before it for the device state.
TEST(Convergence, NothingPendingButAFixedPartOverTheLimitIsMeasuredOnceMoreThenEnds) {
  Convergence fails(Lenient());
  const Decision first = fails.AfterRound(0, Sample(0, 350, 20'000));
  EXPECT_EQ(first.action, Action::kContinue);
  RoundSample empty = Sample(0, 350, 20'000);
  empty.bytes_sent = 0;
  const Decision d = fails.AfterRound(1, empty);
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_THAT(d.error, StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(d.error.message(),
            "nothing is left to send, but the pause's fixed part, 370 ms (device state 20 ms, "
            "completion 350 ms), exceeds the downtime limit of 300 ms");
  ConvergencePolicy force = Lenient();
  force.force_at_limit = true;
  Convergence forced(force);
  EXPECT_EQ(forced.AfterRound(0, Sample(0, 350)).action, Action::kContinue);
  const Decision f = forced.AfterRound(1, Sample(0, 350));
  EXPECT_EQ(f.action, Action::kSwitchover);
  EXPECT_FALSE(f.converged);
  // With no round left there is no second measurement.
  ConvergencePolicy one = Lenient();
  one.max_rounds = 1;
  Convergence only(one);
  EXPECT_EQ(only.AfterRound(0, Sample(0, 350)).action, Action::kFail);
  // Measured again on the empty round, the fixed part fits: switch over.
  Convergence recovers(Lenient());
  EXPECT_EQ(recovers.AfterRound(0, Sample(0, 350)).action, Action::kContinue);
  RoundSample small = Sample(0, 3);
  small.bytes_sent = 0;
  const Decision ok = recovers.AfterRound(1, small);
  EXPECT_EQ(ok.action, Action::kSwitchover);
  EXPECT_TRUE(ok.converged);
}

TEST(Convergence, StallWithoutAutoConvergeFailsWithAborted) {
  ConvergencePolicy p = Lenient();
  p.stall_rounds = 3;
  Convergence c(p);
  for (uint32_t round = 0; round < 3; ++round) {
    EXPECT_EQ(c.AfterRound(round, Sample(500'000)).action, Action::kContinue) << round;
  }
  const Decision d = c.AfterRound(3, Sample(500'000));
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_THAT(d.error, StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(d.error.message(), "dirty volume did not shrink for 3 rounds (500000 bytes pending)");
}

TEST(Convergence, StallCountsRoundsNotBelowTheMinimumSoFar) {
  ConvergencePolicy p = Lenient();
  p.stall_rounds = 2;
  Convergence c(p);
  // 450k and 420k do not shrink below 400k; 390k does and restarts the count.
  const std::vector<uint64_t> pending = {500'000, 400'000, 450'000, 390'000, 395'000};
  for (uint32_t round = 0; round < pending.size(); ++round) {
    EXPECT_EQ(c.AfterRound(round, Sample(pending[round])).action, Action::kContinue) << round;
  }
  const Decision d = c.AfterRound(5, Sample(420'000));
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_EQ(d.error.message(), "dirty volume did not shrink for 2 rounds (420000 bytes pending)");
}

TEST(Convergence, StallWithForceSwitchesOverUnconverged) {
  ConvergencePolicy p = Lenient();
  p.stall_rounds = 1;
  p.force_at_limit = true;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(500'000)).action, Action::kContinue);
  const Decision d = c.AfterRound(1, Sample(500'000));
  EXPECT_EQ(d.action, Action::kSwitchover);
  EXPECT_FALSE(d.converged);
  EXPECT_THAT(d.error, IsOk());
}

// Drives a fresh Convergence through `rounds` rounds of `sample`; returns the
// throttle of every kThrottle and expects every other round to be kContinue.
std::vector<int> ThrottleSteps(const ConvergencePolicy& policy, uint32_t rounds,
                               const RoundSample& sample) {
  Convergence c(policy);
  std::vector<int> steps;
  for (uint32_t round = 0; round < rounds; ++round) {
    const Decision d = c.AfterRound(round, sample);
    EXPECT_EQ(d.throttle_percent, c.throttle()) << round;
    if (d.action == Action::kThrottle) {
      EXPECT_EQ(round % 2, 1u) << "a step needs two fast-dirtying rounds";
      steps.push_back(d.throttle_percent);
    } else {
      EXPECT_EQ(d.action, Action::kContinue) << round;
    }
  }
  return steps;
}

TEST(Convergence, AutoConvergeThrottlesAfterTwoFastDirtyingRoundsUpToTheMax) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  // 600k dirty > half of the 1M sent: every round dirties fast.
  EXPECT_THAT(ThrottleSteps(p, 40, Sample(600'000)),
              ElementsAre(20, 30, 40, 50, 60, 70, 80, 90, 99));
}

TEST(Convergence, AutoConvergeUsesTheConfiguredInitialIncrementAndMax) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  p.throttle_initial = 5;
  p.throttle_increment = 25;
  p.throttle_max = 50;
  EXPECT_THAT(ThrottleSteps(p, 20, Sample(600'000)), ElementsAre(5, 30, 50));
}

TEST(Convergence, DeviceStateCountsTowardFastDirtying) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  // 310k + 300k > 500k, though the pages alone are not.
  EXPECT_THAT(ThrottleSteps(p, 4, Sample(310'000, 0, 300'000)), ElementsAre(20, 30));
  EXPECT_THAT(ThrottleSteps(p, 4, Sample(310'000)), ElementsAre());
}

TEST(Convergence, FastDirtyingMustBeConsecutive) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(600'000)).action, Action::kContinue);
  EXPECT_EQ(c.AfterRound(1, Sample(400'000)).action, Action::kContinue);
  EXPECT_EQ(c.AfterRound(2, Sample(600'000)).action, Action::kContinue);
  EXPECT_EQ(c.AfterRound(3, Sample(600'000)).action, Action::kThrottle);
  EXPECT_EQ(c.throttle(), 20);
}

TEST(Convergence, StallTakesAThrottleStepUnderAutoConverge) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  p.stall_rounds = 2;
  // 400k is not fast dirtying (<= 500k), but it never shrinks: a step every
  // second stalled round, the stall count restarting after each.
  const std::vector<int> expected = {0, 0, 20, 20, 30, 30, 40};
  Convergence c(p);
  for (uint32_t round = 0; round < expected.size(); ++round) {
    const Decision d = c.AfterRound(round, Sample(400'000));
    const bool step = round > 0 && expected[round] != expected[round - 1];
    EXPECT_EQ(d.action, step ? Action::kThrottle : Action::kContinue) << round;
    EXPECT_EQ(d.throttle_percent, expected[round]) << round;
  }
}

TEST(Convergence, StallAtTheThrottleMaxFallsThroughToTheLimits) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  p.stall_rounds = 1;
  p.throttle_initial = 99;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(400'000)).action, Action::kContinue);
  EXPECT_EQ(c.AfterRound(1, Sample(400'000)).action, Action::kThrottle);
  for (uint32_t round = 2; round < 10; ++round) {
    EXPECT_EQ(c.AfterRound(round, Sample(400'000)).action, Action::kContinue) << round;
  }
  EXPECT_EQ(c.throttle(), 99);
}

TEST(Convergence, RoundLimitFailsWithAborted) {
  ConvergencePolicy p = Lenient();
  p.max_rounds = 3;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(500'000)).action, Action::kContinue);
  EXPECT_EQ(c.AfterRound(1, Sample(500'000)).action, Action::kContinue);
  const Decision d = c.AfterRound(2, Sample(450'000, 5));
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_THAT(d.error, StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(d.error.message(),
            "did not converge within 3 rounds (450000 bytes pending, expected downtime "
            "455 ms > limit 300 ms)");
}

TEST(Convergence, TimeoutFailsWithDeadlineExceeded) {
  ConvergencePolicy p = Lenient();
  p.timeout = absl::Seconds(10);
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(500'000, 0, 0, absl::Seconds(9))).action,
            Action::kContinue);
  const Decision d = c.AfterRound(1, Sample(500'000, 0, 20'000, absl::Seconds(10)));
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_THAT(d.error, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(d.error.message(),
            "did not converge within the 10s timeout (500000 bytes pending, expected downtime 520 ms)");
}

TEST(Convergence, TheTimeoutCutsARoundStillGoingOut) {
  ConvergencePolicy p = Lenient();
  p.timeout = absl::Seconds(10);
  Convergence c(p);
  EXPECT_THAT(c.DuringRound(0, absl::Seconds(9)), IsOk());
  const absl::Status cut = c.DuringRound(0, absl::Seconds(10));
  EXPECT_THAT(cut, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(cut.message(),
            "did not converge within the 10s timeout: round 0 had not ended (the link or the "
            "destination is too slow)");
  p.timeout = absl::InfiniteDuration();
  EXPECT_THAT(Convergence(p).DuringRound(3, absl::Hours(1000)), IsOk());
}

TEST(Convergence, ForcedTheRoundInFlightFinishesAndThenSwitchesOver) {
  ConvergencePolicy p = Lenient();
  p.timeout = absl::Seconds(1);
  p.force_at_limit = true;
  Convergence c(p);
  EXPECT_THAT(c.DuringRound(0, absl::Seconds(5)), IsOk());
  EXPECT_EQ(c.AfterRound(0, Sample(500'000, 0, 0, absl::Seconds(6))).action,
            Action::kSwitchover);
}

TEST(Convergence, ForceAtTheRoundLimitSwitchesOverUnconverged) {
  ConvergencePolicy p = Lenient();
  p.max_rounds = 2;
  p.force_at_limit = true;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(500'000)).action, Action::kContinue);
  const Decision d = c.AfterRound(1, Sample(500'000));
  EXPECT_EQ(d.action, Action::kSwitchover);
  EXPECT_FALSE(d.converged);
  EXPECT_THAT(d.error, IsOk());
  EXPECT_EQ(d.estimate.total_ms(), 500);
}

TEST(Convergence, ForceAtTheTimeoutSwitchesOverUnconverged) {
  ConvergencePolicy p = Lenient();
  p.timeout = absl::Seconds(1);
  p.force_at_limit = true;
  Convergence c(p);
  const Decision d = c.AfterRound(0, Sample(500'000, 0, 0, absl::Seconds(2)));
  EXPECT_EQ(d.action, Action::kSwitchover);
  EXPECT_FALSE(d.converged);
}

TEST(Convergence, LimitInTheRoundOfAThrottleStepWinsButTheStepIsReported) {
  ConvergencePolicy p = Lenient();
  p.auto_converge = true;
  p.max_rounds = 2;
  Convergence c(p);
  EXPECT_EQ(c.AfterRound(0, Sample(600'000)).action, Action::kContinue);
  const Decision d = c.AfterRound(1, Sample(600'000));
  EXPECT_EQ(d.action, Action::kFail);
  EXPECT_THAT(d.error, StatusIs(absl::StatusCode::kAborted));
  EXPECT_THAT(std::string(d.error.message()), HasSubstr("within 2 rounds"));
  EXPECT_EQ(d.throttle_percent, 20);
  EXPECT_EQ(c.throttle(), 20);
}

}  // namespace
}  // namespace livemig
