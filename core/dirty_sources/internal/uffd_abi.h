// File: core/dirty_sources/internal/uffd_abi.h
//
// The Linux 6.7+ kernel ABI that UffdWriteTracker needs and that Debian 12's
// linux-libc-dev (6.1 headers) lacks: the userfaultfd WP_ASYNC and
// WP_UNPOPULATED feature bits, and the PAGEMAP_SCAN ioctl on /proc/self/pagemap
// with its argument and result structures (include/uapi/linux/fs.h upstream).
// What the 6.1 headers do have (struct uffdio_api/_register/_writeprotect,
// USERFAULTFD_IOC_NEW) is taken from <linux/userfaultfd.h>. Every value here
// is checked at compile time against the numbers measured on this kernel
// (/work/shared/notes/KVM-AND-UFFD.md), so a layout mistake cannot build.
//
// Internal to core/dirty_sources: not part of any public header.
#ifndef LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_ABI_H_
#define LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_ABI_H_

#include <linux/ioctl.h>
#include <linux/userfaultfd.h>
#include <sys/syscall.h>

#include <cstddef>
#include <cstdint>

namespace livemig::uffd_internal {

// --- userfaultfd (include/uapi/linux/userfaultfd.h, 6.7) ---

// Write-protect also pages that were never populated (pte markers), so a
// first write to a never-touched page is seen. 6.4+.
inline constexpr uint64_t kFeatureWpUnpopulated = uint64_t{1} << 13;
// Write faults on protected pages are resolved by the kernel itself (the bit
// is dropped, the page counts as written) instead of being queued on the fd
// for a handler thread. 6.7+. Implies kFeatureWpUnpopulated.
inline constexpr uint64_t kFeatureWpAsync = uint64_t{1} << 15;
// Report-only bit: WP works on hugetlbfs and shmem.
inline constexpr uint64_t kFeatureWpHugetlbfsShmem = uint64_t{1} << 12;
static_assert(UFFD_FEATURE_WP_HUGETLBFS_SHMEM == kFeatureWpHugetlbfsShmem);

inline constexpr unsigned long kUserfaultfdIocNew = USERFAULTFD_IOC_NEW;
static_assert(kUserfaultfdIocNew == 0xaa00);
static_assert(UFFDIO_API == 0xc018aa3f);
static_assert(UFFDIO_REGISTER == 0xc020aa00);
static_assert(UFFDIO_WRITEPROTECT == 0xc018aa06);
static_assert(UFFDIO_UNREGISTER == 0x8010aa01);
static_assert(SYS_userfaultfd == 323, "x86-64 syscall number");
static_assert(sizeof(struct uffdio_api) == 24);
static_assert(sizeof(struct uffdio_register) == 32);
static_assert(sizeof(struct uffdio_writeprotect) == 24);

// --- PAGEMAP_SCAN (include/uapi/linux/fs.h, 6.7) ---

// One reported run of pages with identical categories: [start, end) in
// virtual addresses (end exclusive).
struct PageRegion {
  uint64_t start;
  uint64_t end;
  uint64_t categories;
};
static_assert(sizeof(PageRegion) == 24);

// struct pm_scan_arg. `size` must be sizeof(PmScanArg) (96) and `start`
// page-aligned (EINVAL otherwise). The kernel writes `walk_end`: where the
// walk stopped (== end when it covered the range; less when `vec` filled).
struct PmScanArg {
  uint64_t size;
  uint64_t flags;
  uint64_t start;
  uint64_t end;
  uint64_t walk_end;
  uint64_t vec;  // PageRegion*
  uint64_t vec_len;
  uint64_t max_pages;  // 0: no limit.
  uint64_t category_inverted;
  uint64_t category_mask;
  uint64_t category_anyof_mask;
  uint64_t return_mask;
};
static_assert(sizeof(PmScanArg) == 96);
static_assert(offsetof(PmScanArg, walk_end) == 32);
static_assert(offsetof(PmScanArg, return_mask) == 88);

// Re-protect (async WP) every page the scan reports, in the same walk.
inline constexpr uint64_t kPmScanWpMatching = uint64_t{1} << 0;
// Fail (EPERM) on a VMA in the range that is not registered for async WP,
// instead of silently skipping it.
inline constexpr uint64_t kPmScanCheckWpAsync = uint64_t{1} << 1;

// Page categories.
inline constexpr uint64_t kPageIsWpOnly = uint64_t{1} << 0;
inline constexpr uint64_t kPageIsWritten = uint64_t{1} << 1;

inline constexpr unsigned long kPagemapScan = _IOWR('f', 16, PmScanArg);
static_assert(kPagemapScan == 0xc0606610);

}  // namespace livemig::uffd_internal

#endif  // LIVEMIG_CORE_DIRTY_SOURCES_INTERNAL_UFFD_ABI_H_
