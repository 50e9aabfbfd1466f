#include "migration/internal/known_zero.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "migration/internal/process_maps.h"

namespace livemig::migration_internal {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPresent = 1ull << 63;  // pagemap: a page is mapped.
constexpr uint64_t kSwapped = 1ull << 62;  // pagemap: swap or migration entry.

// Every mapping over [lo, hi) private, anonymous, and no gap.
bool IsPrivateAnonymous(uintptr_t lo, uintptr_t hi) {
  absl::StatusOr<std::vector<ProcessMapping>> mappings = MappingsOver(lo, hi);
  if (!mappings.ok()) return false;
  uintptr_t covered = lo;
  for (const ProcessMapping& m : *mappings) {
    if (m.start > covered || m.shared || m.inode != 0) return false;
    covered = m.end;
  }
  return covered >= hi;
}

}  // namespace

KnownZero KnownZero::For(const MmapRegion<AtomicBitmap>& region) {
  KnownZero k;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(region.as_ptr());
  if (region.file_offset().has_value()) {
    struct stat st;
    // Blocks that cover the whole file: no hole to find (tmpfs counts them
    // exactly; elsewhere metadata blocks may hide one, which is then merely
    // read), and SEEK_HOLE would walk all of its page cache on every
    // thread that asks first (16 ms per 2 GiB here, twice per migration).
    const bool no_holes = ::fstat(region.file_offset()->fd(), &st) == 0 &&
                          static_cast<uint64_t>(st.st_blocks) * 512 >=
                              static_cast<uint64_t>(st.st_size);
    if ((region.flags() & MAP_SHARED) != 0 && !no_holes) {
      k.source_ = Source::kFileHoles;
      k.data_ = std::make_unique<DataExtent>();
      k.file_fd_ = region.file_offset()->fd();
      k.file_start_ = region.file_offset()->start();
    }
    return k;
  }
  if (lo % kPage != 0 || !IsPrivateAnonymous(lo, lo + region.size())) return k;
  ScopedFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return k;
  k.source_ = Source::kPagemap;
  k.pagemap_ = std::move(pagemap);
  k.first_vpage_ = lo / kPage;
  return k;
}

void KnownZero::Find(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const {
  zero->assign(count, 0);
  switch (source_) {
    case Source::kNothing:
      return;
    case Source::kFileHoles:
      return FindHoles(first, count, zero);
    case Source::kPagemap:
      return FindUnmapped(first, count, zero);
  }
}

void KnownZero::FindHoles(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const {
  const off_t start = static_cast<off_t>(file_start_ + first * kPage);
  const off_t end = static_cast<off_t>(file_start_ + (first + count) * kPage);
  constexpr off_t kPageOff = static_cast<off_t>(kPage);
  off_t at = start;
  while (at < end) {
    // Held across the lseeks too: a thread that asks while another walks
    // waits for its extent instead of walking the same page cache again.
    std::lock_guard<std::mutex> lock(data_->mu);
    if (at >= data_->start && at < data_->end) {  // Data: skip its pages.
      at = (data_->end + kPageOff - 1) / kPageOff * kPageOff;
      continue;
    }
    off_t data = ::lseek(file_fd_, at, SEEK_DATA);
    if (data < 0) {
      if (errno != ENXIO) return;  // Unknown: the rest stays "not known".
      data = end;                  // No data from `at` to the end of file.
    }
    // [at, data) is a hole: whole pages of it are zero.
    for (off_t p = at; p + static_cast<off_t>(kPage) <= std::min(data, end); p += kPage) {
      (*zero)[static_cast<size_t>((p - start) / static_cast<off_t>(kPage))] = 1;
    }
    if (data >= end) return;
    const off_t hole = ::lseek(file_fd_, data, SEEK_HOLE);
    if (hole < 0) return;
    data_->start = data;
    data_->end = hole;
    // Data up to the hole; a hole that starts inside a page leaves that
    // page data.
    at = (hole + kPageOff - 1) / kPageOff * kPageOff;
  }
}

void KnownZero::FindUnmapped(uint64_t first, uint64_t count, std::vector<uint8_t>* zero) const {
  std::array<uint64_t, 512> entries;
  for (uint64_t done = 0; done < count;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(entries.size(), count - done));
    const ssize_t got =
        ::pread(pagemap_.get(), entries.data(), n * sizeof(uint64_t),
                static_cast<off_t>((first_vpage_ + first + done) * sizeof(uint64_t)));
    if (got != static_cast<ssize_t>(n * sizeof(uint64_t))) return;  // Unknown.
    for (size_t i = 0; i < n; ++i) {
      (*zero)[done + i] = (entries[i] & (kPresent | kSwapped)) == 0 ? 1 : 0;
    }
    done += n;
  }
}

}  // namespace livemig::migration_internal
