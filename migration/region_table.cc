#include "migration/region_table.h"

#include "absl/strings/str_cat.h"
#include "migration/protocol.h"

namespace livemig {

absl::StatusOr<proto::RegionTable> RegionTableFor(const GuestMemory<AtomicBitmap>& memory,
                                                  const std::vector<std::string>& file_names) {
  proto::RegionTable table;
  for (size_t r = 0; r < memory.num_regions(); ++r) {
    const GuestRegion<AtomicBitmap>& region = memory.region(r);
    if (region.len() % kMigrationPageSize != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region ", r, " size ", region.len(), " is not a multiple of ", kMigrationPageSize));
    }
    proto::RegionInfo* info = table.add_regions();
    info->set_index(static_cast<uint32_t>(r));
    info->set_guest_addr(region.start_addr().value);
    info->set_size(region.len());
    info->set_page_size(kMigrationPageSize);
    info->set_prot(static_cast<uint32_t>(region.region().prot()));
    info->set_flags(static_cast<uint32_t>(region.region().flags()));
    info->set_hugetlbfs(region.region().is_hugetlbfs().value_or(false));
    if (region.region().file_offset().has_value()) {
      info->set_backing(proto::BACKING_FILE);
      info->set_file_offset(region.region().file_offset()->start());
      const bool named = r < file_names.size() && !file_names[r].empty();
      info->set_file_path(named ? file_names[r]
                                : DefaultRegionFileName(static_cast<uint32_t>(r)));
    } else {
      info->set_backing(proto::BACKING_ANONYMOUS);
    }
  }
  return table;
}

}  // namespace livemig
