// Device-state sections (migration/device_state.h): what the source refuses
// to send, and what the destination refuses to take, each naming the section.
#include "migration/device_state.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::ElementsAre;

proto::DeviceState Frame(const std::string& id, const std::string& bytes, uint32_t index,
                         uint32_t count) {
  proto::DeviceState f;
  f.set_device_id(id);
  f.set_format_version(3);
  f.set_state(bytes);
  f.set_state_hash(HashDeviceState(bytes));
  f.set_index(index);
  f.set_count(count);
  return f;
}

TEST(DeviceSections, TheSourceRefusesWhatItCannotSendNamingTheSection) {
  EXPECT_THAT(CheckDeviceSections({}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "gave 0 sections"));
  EXPECT_THAT(CheckDeviceSections({{"vcpu0", 1, "a"}, {"", 1, "b"}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "device state section 1 has an empty id"));
  EXPECT_THAT(CheckDeviceSections({{"rtc", 1, "a"}, {"rtc", 1, "b"}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "section id \"rtc\" given twice"));
  EXPECT_THAT(CheckDeviceSections({{"ram-ish", 1, std::string(1 << 20, 'x')}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "section \"ram-ish\" holds 1048576 bytes"));
  EXPECT_THAT(CheckDeviceSections({{std::string(300, 'i'), 1, ""}}),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "id of 300 bytes"));
  EXPECT_THAT(CheckDeviceSections({{"vcpu0", 1, "a"}, {"vcpu1", 2, ""}}), IsOk());
}

TEST(DeviceSections, TheDestinationTakesSectionsInOrderUntilTheCount) {
  DeviceStateAssembler a;
  EXPECT_FALSE(a.complete());
  ASSERT_OK(a.Add(Frame("vcpu0", "regs0", 0, 2)));
  EXPECT_FALSE(a.complete());
  ASSERT_OK(a.Add(Frame("vcpu1", "", 1, 2)));
  EXPECT_TRUE(a.complete());
  EXPECT_THAT(a.Take(), ElementsAre(DeviceSection{"vcpu0", 3, "regs0"},
                                    DeviceSection{"vcpu1", 3, ""}));
}

// What the source writes is what the destination assembles back.
TEST(DeviceSections, TheSourcesFramesAssembleBackIntoTheSections) {
  const std::vector<DeviceSection> sections = {{"vcpu0", 3, "regs0"}, {"rtc", 7, ""}};
  const std::vector<proto::DeviceState> frames = DeviceStateFrames(sections);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[1].index(), 1u);
  EXPECT_EQ(frames[1].count(), 2u);
  EXPECT_EQ(frames[0].state_hash(), HashDeviceState("regs0"));
  DeviceStateAssembler a;
  for (const proto::DeviceState& f : frames) ASSERT_OK(a.Add(f));
  EXPECT_TRUE(a.complete());
  EXPECT_EQ(a.Take(), sections);
}

TEST(DeviceSections, AnOlderSourcesSingleFrameIsTheOnlySection) {
  DeviceStateAssembler a;
  proto::DeviceState legacy;
  legacy.set_device_id("vmm");
  legacy.set_format_version(1);
  legacy.set_state("blob");  // No index, count or hash.
  ASSERT_OK(a.Add(legacy));
  EXPECT_TRUE(a.complete());
  EXPECT_THAT(a.Take(), ElementsAre(DeviceSection{"vmm", 1, "blob"}));
}

TEST(DeviceSections, TheDestinationRefusesABrokenSequenceNamingTheSection) {
  {
    DeviceStateAssembler a;
    EXPECT_THAT(a.Add(Frame("b", "x", 1, 2)),
                StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                    "device state section 1 arrived where section 0 was due"));
  }
  {
    DeviceStateAssembler a;
    ASSERT_OK(a.Add(Frame("a", "x", 0, 3)));
    EXPECT_THAT(a.Add(Frame("b", "x", 1, 2)),
                StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                    "section 1 says 2 sections; the first said 3"));
  }
  {
    DeviceStateAssembler a;
    ASSERT_OK(a.Add(Frame("a", "x", 0, 2)));
    EXPECT_THAT(a.Add(Frame("a", "y", 1, 2)),
                StatusIsWithMessage(absl::StatusCode::kDataLoss, "id \"a\" arrived twice"));
  }
  {
    DeviceStateAssembler a;
    proto::DeviceState f = Frame("vcpu0", "regs", 0, 1);
    f.set_state("regz");  // Changed after it was hashed.
    EXPECT_THAT(a.Add(f), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                              "section \"vcpu0\" (4 bytes) does not match "
                                              "its hash"));
  }
  {
    DeviceStateAssembler a;
    EXPECT_THAT(a.Add(Frame("a", "x", 0, kMaxDeviceSections + 1)),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "at most 4096"));
    EXPECT_THAT(a.Add(Frame("", "x", 0, 1)),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "has an empty id"));
  }
}

// Every section fits a frame, but 4096 of them would be 4 GiB held before
// any is checked: the sections together are bounded too, on both sides.
TEST(DeviceSections, AllSectionsTogetherAreBoundedOnBothSides) {
  const std::string mib(size_t{1} << 20, 'x');  // Larger than one frame carries.
  const std::string section(mib.size() - 2048, 'x');
  const uint32_t fit = kMaxDeviceStateBytes / section.size();
  DeviceStateAssembler a;
  for (uint32_t i = 0; i < fit; ++i) {
    ASSERT_OK(a.Add(Frame(absl::StrCat("s", i), section, i, fit + 2)));
  }
  EXPECT_THAT(a.Add(Frame("last", section, fit, fit + 2)),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "device state section \"last\" brings the sections to"));
  std::vector<DeviceSection> sections;
  for (uint32_t i = 0; i <= fit; ++i) sections.push_back({absl::StrCat("s", i), 1, section});
  EXPECT_THAT(CheckDeviceSections(sections),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "a migration carries at most 67108864"));
}

}  // namespace
}  // namespace livemig
