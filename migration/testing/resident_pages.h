// File: migration/testing/resident_pages.h
//
// ResidentPages: how many 4 KiB pages of [addr, addr + size) this process
// has mapped right now (the page table entry is present), read from
// /proc/self/pagemap (bit 63; readable without privileges). Unlike
// mincore(2), which reports a shared file's page cache, this counts the
// mappings' own page table entries: what a write would find without a page
// fault. For tests; -1 with a test failure when pagemap cannot be read.
#ifndef LIVEMIG_MIGRATION_TESTING_RESIDENT_PAGES_H_
#define LIVEMIG_MIGRATION_TESTING_RESIDENT_PAGES_H_

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace livemig::testing {

inline int64_t ResidentPages(const void* addr, size_t size) {
  constexpr uint64_t kPage = 4096;
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ADD_FAILURE() << "cannot open /proc/self/pagemap";
    return -1;
  }
  const uint64_t first = reinterpret_cast<uintptr_t>(addr) / kPage;
  const uint64_t count = (size + kPage - 1) / kPage;
  std::vector<uint64_t> entries(4096);
  int64_t resident = 0;
  for (uint64_t done = 0; done < count;) {
    const uint64_t n = std::min<uint64_t>(entries.size(), count - done);
    const ssize_t got = ::pread(fd, entries.data(), n * 8, static_cast<off_t>((first + done) * 8));
    if (got != static_cast<ssize_t>(n * 8)) {
      ADD_FAILURE() << "short read of /proc/self/pagemap";
      ::close(fd);
      return -1;
    }
    for (uint64_t i = 0; i < n; ++i) resident += (entries[i] >> 63) & 1;
    done += n;
  }
  ::close(fd);
  return resident;
}

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_RESIDENT_PAGES_H_
