// Why a userfaultfd cannot be had: every explanation the probe can give,
// checked from the errnos and feature bits that produce it.
#include "core/dirty_sources/internal/uffd_fd.h"

#include <cerrno>

#include "core/dirty_sources/internal/uffd_abi.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::uffd_internal {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

TEST(UffdOpenFailure, SyscallRefusedIsPermissionDeniedNamingTheWaysToGetAccess) {
  const absl::Status status = OpenFailure(EACCES, EPERM);
  EXPECT_THAT(status, StatusIsWithMessage(absl::StatusCode::kPermissionDenied,
                                          "/dev/userfaultfd: EACCES, userfaultfd(2): EPERM"));
  EXPECT_THAT(status, StatusIsWithMessage(absl::StatusCode::kPermissionDenied,
                                          "vm.unprivileged_userfaultfd=1"));
  EXPECT_THAT(status,
              StatusIsWithMessage(absl::StatusCode::kPermissionDenied, "CAP_SYS_PTRACE"));
}

TEST(UffdOpenFailure, NoDeviceAndNoSyscallIsUnimplemented) {
  EXPECT_THAT(OpenFailure(ENOENT, ENOSYS),
              StatusIsWithMessage(absl::StatusCode::kUnimplemented,
                                  "/dev/userfaultfd: ENOENT, userfaultfd(2): ENOSYS "
                                  "(kernel built without CONFIG_USERFAULTFD)"));
}

TEST(UffdOpenFailure, OtherSyscallErrorsKeepTheirCanonicalCode) {
  EXPECT_THAT(OpenFailure(ENOENT, EMFILE), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(UffdFeatures, WpAsyncWithWpUnpopulatedIsEnough) {
  EXPECT_THAT(CheckFeatures(kFeatureWpAsync | kFeatureWpUnpopulated), IsOk());
  EXPECT_THAT(CheckFeatures(0x1ffff), IsOk());  // What Linux 6.18 reports.
}

TEST(UffdFeatures, AKernelWithoutWpAsyncIsUnimplementedNamingTheFeature) {
  EXPECT_THAT(CheckFeatures(kFeatureWpUnpopulated),
              StatusIsWithMessage(absl::StatusCode::kUnimplemented,
                                  "kernel lacks UFFD_FEATURE_WP_ASYNC (Linux 6.7+)"));
}

TEST(UffdFeatures, AKernelWithNeitherNamesBoth) {
  EXPECT_THAT(CheckFeatures(0x1fff),  // Linux 6.1: up to WP_HUGETLBFS_SHMEM.
              StatusIsWithMessage(absl::StatusCode::kUnimplemented,
                                  "UFFD_FEATURE_WP_ASYNC (Linux 6.7+) and "
                                  "UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+)"));
}

TEST(UffdScanFailure, NoPagemapScanIsUnimplemented) {
  EXPECT_THAT(ScanFailure("PAGEMAP_SCAN", ENOTTY),
              StatusIsWithMessage(absl::StatusCode::kUnimplemented,
                                  "PAGEMAP_SCAN: kernel lacks PAGEMAP_SCAN (Linux 6.7+)"));
}

TEST(UffdScanFailure, AnUnregisteredRangeIsFailedPrecondition) {
  EXPECT_THAT(ScanFailure("scan", EPERM),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                  "not registered for async write-protect"));
}

TEST(UffdScanFailure, OtherErrorsKeepTheirCanonicalCode) {
  EXPECT_THAT(ScanFailure("scan", EINVAL), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace livemig::uffd_internal
