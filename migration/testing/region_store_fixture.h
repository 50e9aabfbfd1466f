// File: migration/testing/region_store_fixture.h
//
// For RegionStore tests: region tables built in one line (Anonymous,
// FileBacked, Table), whole-file reads and writes, and RegionStoreTest, a
// fixture that gives each test its own root_dir (and an "outside" directory
// next to it for escape attempts) under TEST_TMPDIR.
#ifndef LIVEMIG_MIGRATION_TESTING_REGION_STORE_FIXTURE_H_
#define LIVEMIG_MIGRATION_TESTING_REGION_STORE_FIXTURE_H_

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "migration/region_store.h"
#include "proto/migration.pb.h"

namespace livemig::testing {

inline const uint64_t kPage = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));

inline proto::RegionInfo Anonymous(uint32_t index, uint64_t guest_addr, uint64_t size) {
  proto::RegionInfo info;
  info.set_index(index);
  info.set_guest_addr(guest_addr);
  info.set_size(size);
  info.set_page_size(static_cast<uint32_t>(kPage));
  info.set_backing(proto::BACKING_ANONYMOUS);
  info.set_prot(3);
  return info;
}

inline proto::RegionInfo FileBacked(uint32_t index, uint64_t guest_addr, uint64_t size,
                                    const std::string& path, uint64_t file_offset) {
  proto::RegionInfo info = Anonymous(index, guest_addr, size);
  info.set_backing(proto::BACKING_FILE);
  info.set_file_path(path);
  info.set_file_offset(file_offset);
  return info;
}

inline proto::RegionTable Table(std::vector<proto::RegionInfo> regions) {
  proto::RegionTable table;
  for (auto& r : regions) *table.add_regions() = std::move(r);
  return table;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

// Each test gets its own root_dir (and an "outside" directory next to it for
// escape attempts) under TEST_TMPDIR.
class RegionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::filesystem::path base =
        std::filesystem::path(tmp != nullptr ? tmp : "/tmp") / "region_store_test" /
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(base);
    root_ = (base / "root").string();
    outside_ = (base / "outside").string();
    std::filesystem::create_directories(root_);
    std::filesystem::create_directories(outside_);
    options_.root_dir = root_;
  }

  absl::StatusOr<RegionStore> Create(const proto::RegionTable& table) {
    return RegionStore::Create(table, kPage, options_);
  }

  std::string Root(const std::string& rel) const { return root_ + "/" + rel; }
  bool RootIsEmpty() const { return std::filesystem::is_empty(root_); }

  std::string root_;
  std::string outside_;
  RegionStoreOptions options_;
};

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_REGION_STORE_FIXTURE_H_
