// File: migration/internal/round_barrier_test.cc
//
// The round barrier waits for a channel still receiving its part of the
// round for as long as bytes keep arriving, and gives up only after a whole
// timeout in which nothing did. Progress is counted in calls of the
// barrier's progress function, not in time, so the verdicts do not depend
// on the machine's speed.
#include "migration/internal/round_barrier.h"

#include <atomic>
#include <cstdint>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Milliseconds(20);

TEST(RoundBarrier, WithoutProgressGivesUpAfterOneTimeoutNamingTheRound) {
  std::atomic<bool> cancelled{false};
  int rounds_done = 0;
  RoundBarrier barrier(2, &cancelled, [&](uint32_t, bool) { ++rounds_done; },
                       [] { return uint64_t{42}; });
  EXPECT_THAT(barrier.Arrive(3, false, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "other channels did not finish round 3: nothing arrived for 20ms"));
  EXPECT_EQ(rounds_done, 0);
}

TEST(RoundBarrier, KeepsWaitingWhileBytesArriveThenGivesUpWhenTheyStop) {
  std::atomic<bool> cancelled{false};
  int calls = 0;
  // Moves for the first four looks (the one at the arrival and three at
  // deadlines), then stops: three timeouts extended, the fourth ends it.
  RoundBarrier barrier(2, &cancelled, [](uint32_t, bool) {},
                       [&] { return uint64_t(std::min(++calls, 4)); });
  EXPECT_THAT(barrier.Arrive(0, false, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "other channels did not finish round 0"));
  EXPECT_EQ(calls, 5);
}

TEST(RoundBarrier, ASlowChannelThatArrivesAfterSeveralTimeoutsIsWaitedFor) {
  std::atomic<bool> cancelled{false};
  std::atomic<int> calls{0};
  std::atomic<bool> final_seen{false};
  RoundBarrier barrier(2, &cancelled,
                       [&](uint32_t round, bool final) { final_seen = final && round == 7; },
                       [&] { return uint64_t(++calls); });  // Always moving.
  std::thread slow;
  std::atomic<bool> started{false};
  // The slow channel arrives once the first has waited through three timeouts.
  std::thread watcher([&] {
    while (calls.load() < 4) std::this_thread::yield();
    started = true;
    slow = std::thread([&] { EXPECT_OK(barrier.Arrive(7, true, kTimeout)); });
  });
  EXPECT_OK(barrier.Arrive(7, true, kTimeout));
  watcher.join();
  ASSERT_TRUE(started.load());
  slow.join();
  EXPECT_TRUE(final_seen.load());
  EXPECT_GE(calls.load(), 4);
}

TEST(RoundBarrier, WithoutAProgressFunctionTheTimeoutCountsFromTheArrival) {
  std::atomic<bool> cancelled{false};
  RoundBarrier barrier(2, &cancelled, [](uint32_t, bool) {});
  EXPECT_THAT(barrier.Arrive(1, false, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "nothing arrived for 20ms"));
}

TEST(RoundBarrier, ACancelBreaksTheWaitEvenWhileBytesArrive) {
  std::atomic<bool> cancelled{false};
  int calls = 0;
  RoundBarrier barrier(2, &cancelled, [](uint32_t, bool) {}, [&] {
    if (++calls == 3) cancelled = true;  // Read by the barrier's own loop.
    return uint64_t(calls);
  });
  EXPECT_THAT(barrier.Arrive(0, false, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kAborted, "another channel failed"));
}

}  // namespace
}  // namespace livemig::migration_internal
