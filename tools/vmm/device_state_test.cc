// The device-state format: round trip, and every kind of bad input is a
// clear InvalidArgument, never a crash.
#include "tools/vmm/device_state.h"

#include <string>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig::vmm {
namespace {

using ::livemig::testing::StatusIsWithMessage;

DeviceStateData Sample() {
  DeviceStateData state;
  state.pattern = {Pattern::kHotset, 1000, 64, 7};
  state.layout = {0, kReservedBytes, 1000, 1ull << 30};
  state.device_seq = 42;
  for (int i = 0; i < 2; ++i) {
    VcpuRegs regs = BootControlState(state.layout);
    regs.rip = 0x40;
    regs.gpr[kRcx] = 100 + i;
    state.vcpus.push_back(regs);
  }
  return state;
}

TEST(DeviceState, RoundTripsEveryField) {
  const std::string bytes = SerializeDeviceState(Sample());
  EXPECT_EQ(bytes.size(), DeviceStateBytes(2));
  auto parsed = ParseDeviceState(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->pattern.pattern, Pattern::kHotset);
  EXPECT_EQ(parsed->pattern.hot_pages, 64u);
  EXPECT_EQ(parsed->device_seq, 42u);
  ASSERT_EQ(parsed->vcpus.size(), 2u);
  EXPECT_EQ(parsed->vcpus[1].gpr[kRcx], 101u);
  EXPECT_EQ(SerializeDeviceState(*parsed), bytes);
}

TEST(DeviceState, EveryTruncationIsInvalidArgument) {
  const std::string bytes = SerializeDeviceState(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THAT(ParseDeviceState(bytes.substr(0, n)),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "KVM device state"))
        << n << " bytes";
  }
  EXPECT_THAT(ParseDeviceState(bytes.substr(0, 10)),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "truncated"));
  EXPECT_THAT(ParseDeviceState(bytes + "x"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "too long"));
}

TEST(DeviceState, EveryFlippedByteIsInvalidArgument) {
  const std::string bytes = SerializeDeviceState(Sample());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x10;
    EXPECT_THAT(ParseDeviceState(bad),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "KVM device state"))
        << "byte " << i;
  }
}

TEST(DeviceState, NamesTheWrongField) {
  std::string bytes = SerializeDeviceState(Sample());
  EXPECT_THAT(ParseDeviceState(std::string(bytes.size(), 'x')),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "magic"));
  std::string version = bytes;
  version[8] = 9;
  EXPECT_THAT(ParseDeviceState(version),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "version 9"));
  std::string sum = bytes;
  sum[100] ^= 1;
  EXPECT_THAT(ParseDeviceState(sum),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "checksum"));
}

}  // namespace
}  // namespace livemig::vmm
