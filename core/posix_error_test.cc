#include "core/posix_error.h"

#include <cerrno>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

TEST(PosixError, MapsErrnoToCanonicalCode) {
  EXPECT_THAT(PosixError("open", ENOENT), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(PosixError("mmap", ENOMEM),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(PosixError("connect", ECONNREFUSED),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(PosixError("ioctl", EINVAL),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PosixError("read", EIO), StatusIs(absl::StatusCode::kInternal));
}

TEST(PosixError, MessageCarriesContextAndStrerror) {
  EXPECT_THAT(PosixError("open /tmp/x", ENOENT),
              StatusIsWithMessage(absl::StatusCode::kNotFound,
                                  "open /tmp/x: No such file or directory"));
}

}  // namespace
}  // namespace livemig
