// File: migration/capi/abi5_test.cc
//
// ABI 5's additions to the C ABI (livemig_abi5.h), from C++ over livemig.h
// only: the received migration as JSON, by the size-query convention,
// parsed and held against what the ABI 3 accessors report of the same
// result; the pause budget's setter.
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "migration/capi/livemig.h"
#include "migration/capi/testing/c_fixtures.h"
#include "migration/capi/testing/json_reader.h"

namespace {

using ::livemig::capi_testing::CReceiver;
using ::livemig::capi_testing::Err;
using ::livemig::capi_testing::FakeVm;
using ::livemig::capi_testing::Guest;
using ::livemig::capi_testing::Json;
using ::livemig::capi_testing::kOps;

// The JSON by the size-query convention.
std::string ReceivedJson(const livemig_received* r) {
  const size_t n = livemig_received_stats_json(r, nullptr, 0);
  std::string json(n + 1, 'x');
  EXPECT_EQ(livemig_received_stats_json(r, json.data(), json.size()), n);
  EXPECT_EQ(json[n], '\0');
  json.resize(n);
  return json;
}

// Each test starts after one migration of a Guest into a receiver that
// rebuilds both regions as files under a fresh directory.
class CapiReceivedJson : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/livemig-abi5-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    receiver_ = std::make_unique<CReceiver>([&](livemig_options* o) {
      Err err;
      EXPECT_EQ(livemig_options_set_root_dir(o, dir_.c_str(), 1, err.out()), LIVEMIG_OK);
    });
    livemig_sender* s = receiver_->NewSender();
    FakeVm vm;
    Err err;
    ASSERT_EQ(livemig_sender_migrate(s, guest_.memory, &kOps, &vm, nullptr, err.out()), LIVEMIG_OK)
        << err.message();
    livemig_sender_free(s);
    receiver_->Join();
    ASSERT_EQ(receiver_->rc_, LIVEMIG_OK) << receiver_->error_.message();
    result_ = receiver_->result_;
  }
  void TearDown() override {
    receiver_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  Guest guest_;
  std::unique_ptr<CReceiver> receiver_;
  const livemig_received* result_ = nullptr;  // receiver_'s.
};

TEST_F(CapiReceivedJson, FollowsTheSizeQueryConventionAndNullIsEmpty) {
  char buf[8];
  std::memset(buf, 'x', sizeof buf);
  EXPECT_EQ(livemig_received_stats_json(nullptr, buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "");
  const size_t n = livemig_received_stats_json(result_, nullptr, 0);
  ASSERT_GT(n, sizeof buf);
  std::memset(buf, 'x', sizeof buf);
  EXPECT_EQ(livemig_received_stats_json(result_, buf, sizeof buf), n);
  EXPECT_STREQ(buf, "{\"statu") << "truncated to buf_size - 1, NUL-terminated";
  EXPECT_EQ(livemig_received_stats_json(result_, buf, 1), n);
  EXPECT_STREQ(buf, "");
  const std::string json = ReceivedJson(result_);
  EXPECT_EQ(json.size(), n);
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

TEST_F(CapiReceivedJson, HoldsWhatTheAccessorsReportPlusTheTornPageCount) {
  std::string error;
  const std::optional<Json> parsed =
      livemig::capi_testing::ParseJson(ReceivedJson(result_), &error);
  ASSERT_TRUE(parsed.has_value()) << error;
  const Json& json = *parsed;
  EXPECT_EQ(json["status"].string, "completed");
  EXPECT_EQ(json["verified"].kind, Json::Kind::kBool);
  EXPECT_EQ(json["verified"].boolean, livemig_received_verified(result_) == 1);
  EXPECT_TRUE(json["verified"].boolean);

  const std::vector<Json>& regions = json["regions"].array;
  ASSERT_EQ(regions.size(), livemig_received_num_regions(result_));
  ASSERT_EQ(regions.size(), 2u);
  for (size_t i = 0; i < regions.size(); ++i) {
    SCOPED_TRACE(i);
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(result_, i, &region), LIVEMIG_OK);
    EXPECT_EQ(regions[i]["index"].number, i);
    EXPECT_EQ(regions[i]["guest_addr"].number, region.guest_addr);
    EXPECT_EQ(regions[i]["size"].number, region.size);
    ASSERT_NE(region.file_path, nullptr);
    EXPECT_EQ(regions[i]["file"].string, region.file_path);
    EXPECT_EQ(regions[i]["file_offset"].number, 0);
    EXPECT_EQ(regions[i]["page_hash_root"].string.size(), 16u);
  }

  livemig_received_stats r;
  Err err;
  ASSERT_EQ(livemig_received_get_stats(result_, &r, err.out()), LIVEMIG_OK);
  const Json& st = json["stats"];
  EXPECT_EQ(st["raw_pages"].number, r.raw_pages);
  EXPECT_EQ(st["zero_pages"].number, r.zero_pages);
  EXPECT_EQ(st["bytes_received"].number, r.bytes_received);
  EXPECT_EQ(st["rounds"].number, r.rounds);
  EXPECT_EQ(st["channels"].number, r.channels);
  EXPECT_EQ(st["compression"].string, "none");
  EXPECT_EQ(st["compressed_batches"].number, 0);
  // What the C struct cannot carry: the guest never wrote, nothing tore.
  EXPECT_EQ(st["torn_pages"].kind, Json::Kind::kNumber);
  EXPECT_EQ(st["torn_pages"].number, 0);
  EXPECT_EQ(r.raw_pages, 64u) << "half of each region's 64 pages carry bytes";
  EXPECT_EQ(st["device_state_bytes"].kind, Json::Kind::kNumber);
}

TEST(CapiMaxPause, TakesNoneOrOneMillisecondToADayAndRefusesMoreNamingIt) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_max_pause(o, 0, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_max_pause(o, 1, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_max_pause(o, 86400000, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_options_set_max_pause(o, 86400001, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "max_pause_ms: must be 0 (none) or 1 .. 86400000 ms, got 86400001");
  livemig_options_free(o);
  Err null;
  EXPECT_EQ(livemig_options_set_max_pause(nullptr, 5, null.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(null.message(), "options: NULL");
}

}  // namespace
