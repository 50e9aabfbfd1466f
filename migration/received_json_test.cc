#include "migration/received_json.h"

#include <utility>
#include <vector>

#include "core/guest_memory.h"
#include "gtest/gtest.h"
#include "migration/json_escape.h"
#include "migration/receiver.h"

namespace livemig {
namespace {

ReceivedMigration OnePageMigration() {
  auto region = MmapRegion<NoBitmap>::Create(4096);
  EXPECT_TRUE(region.ok()) << region.status();
  auto placed = GuestRegion<NoBitmap>::Create(*std::move(region), GuestAddress(0x1000));
  EXPECT_TRUE(placed.ok()) << placed.status();
  std::vector<GuestRegion<NoBitmap>> regions;
  regions.push_back(*std::move(placed));
  auto memory = GuestMemory<NoBitmap>::FromRegions(std::move(regions));
  EXPECT_TRUE(memory.ok()) << memory.status();
  return ReceivedMigration(*std::move(memory));
}

TEST(ReceivedJsonTest, ListsEveryRegionAndWhatArrived) {
  ReceivedMigration got = OnePageMigration();
  RegionDescription info;
  info.index = 0;
  info.guest_addr = 0x1000;
  info.size = 4096;
  info.file_offset = 0;
  got.regions.push_back(info);
  got.files.push_back("/var/lib/vm/\"guest\"\n.mem");
  got.digests.push_back(0xabc);
  got.verified = true;
  got.raw_pages = 7;
  got.zero_pages = 3;
  got.torn_pages = 2;
  got.bytes_received = 40000;
  got.rounds = 4;
  got.channels = 2;
  got.device_state = "vmm!";
  got.compression = wire::Codec::kZstd;
  got.compressed_batches = 5;
  got.decompress_ms = 1.25;
  got.pages_written_to_files = 6;
  got.prealloc_ms = 12.5;
  got.prealloc_bytes = 4096;
  EXPECT_EQ(ReceivedJson(got),
            "{\"status\":\"completed\",\"verified\":true,\"regions\":[{\"index\":0,"
            "\"guest_addr\":4096,\"size\":4096,"
            "\"file\":\"/var/lib/vm/\\\"guest\\\"\\u000a.mem\",\"file_offset\":0,"
            "\"page_hash_root\":\"0000000000000abc\"}],\"stats\":{\"raw_pages\":7,"
            "\"zero_pages\":3,\"torn_pages\":2,\"bytes_received\":40000,\"rounds\":4,"
            "\"channels\":2,\"device_state_bytes\":4,\"compression\":\"zstd\","
            "\"compressed_batches\":5,\"decompress_ms\":1.250}}");
}

TEST(ReceivedJsonTest, MemoryThatIsNoFileHasAnEmptyPathAndUnverifiedSaysSo) {
  ReceivedMigration got = OnePageMigration();
  RegionDescription info;
  info.guest_addr = 0x1000;
  info.size = 4096;
  got.regions.push_back(info);
  got.files.push_back("");
  got.digests.push_back(0);
  const std::string json = ReceivedJson(got);
  EXPECT_NE(json.find("\"verified\":false"), std::string::npos) << json;
  EXPECT_NE(json.find("\"file\":\"\",\"file_offset\":0,\"page_hash_root\":\"0000000000000000\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"compression\":\"none\""), std::string::npos) << json;
}

TEST(JsonEscapeTest, EscapesQuotesBackslashesAndControlBytesOnly) {
  EXPECT_EQ(JsonEscape("a\"b\\c\n\x1f\x7f\xc3\xa9"), "a\\\"b\\\\c\\u000a\\u001f\x7f\xc3\xa9");
}

}  // namespace
}  // namespace livemig
