// File: core/testing/status_matchers.h
//
// GoogleTest matchers for absl::Status and absl::StatusOr<T>. Abseil 20220623
// has none (absl_testing::StatusIs arrived in 20240722), so tests use these:
//
//   EXPECT_THAT(region.status(), StatusIs(absl::StatusCode::kInvalidArgument));
//   EXPECT_THAT(bitmap.GetAndReset(words), IsOk());
//   ASSERT_OK_AND_ASSIGN(auto region, MmapRegion<>::Create(4096));
#ifndef LIVEMIG_CORE_TESTING_STATUS_MATCHERS_H_
#define LIVEMIG_CORE_TESTING_STATUS_MATCHERS_H_

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// Matches an absl::Status or absl::StatusOr<T> whose code is `code`.
MATCHER_P(StatusIs, code,
          std::string("has status code ") +
              absl::StatusCodeToString(static_cast<absl::StatusCode>(code))) {
  const absl::Status& status = ::livemig::testing::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code;
}

// Matches an absl::Status or absl::StatusOr<T> whose code is `code` and whose
// message contains `substring`.
MATCHER_P2(StatusIsWithMessage, code, substring,
           std::string("has status code ") +
               absl::StatusCodeToString(static_cast<absl::StatusCode>(code)) +
               " and a message containing \"" + std::string(substring) +
               "\"") {
  const absl::Status& status = ::livemig::testing::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.code() == code &&
         status.message().find(substring) != absl::string_view::npos;
}

// Matches an OK absl::Status or absl::StatusOr<T>.
MATCHER(IsOk, "is OK") {
  const absl::Status& status = ::livemig::testing::GetStatus(arg);
  *result_listener << "whose status is " << status;
  return status.ok();
}

}  // namespace livemig::testing

#define LIVEMIG_TESTING_CONCAT_INNER(a, b) a##b
#define LIVEMIG_TESTING_CONCAT(a, b) LIVEMIG_TESTING_CONCAT_INNER(a, b)

// ASSERT_OK(expr): fails the test (fatally) unless `expr` is OK.
#define ASSERT_OK(expr) ASSERT_THAT((expr), ::livemig::testing::IsOk())
#define EXPECT_OK(expr) EXPECT_THAT((expr), ::livemig::testing::IsOk())

// ASSERT_OK_AND_ASSIGN(lhs, rexpr): asserts that the StatusOr `rexpr` is OK and
// moves its value into `lhs`.
#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                                     \
  ASSERT_OK_AND_ASSIGN_IMPL(LIVEMIG_TESTING_CONCAT(statusor_, __LINE__), lhs, \
                            rexpr)
#define ASSERT_OK_AND_ASSIGN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  ASSERT_TRUE(statusor.ok()) << statusor.status();      \
  lhs = std::move(statusor).value()

#endif  // LIVEMIG_CORE_TESTING_STATUS_MATCHERS_H_
