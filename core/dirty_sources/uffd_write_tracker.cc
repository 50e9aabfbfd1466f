#include "core/dirty_sources/uffd_write_tracker.h"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/dirty_sources/internal/uffd_abi.h"
#include "core/dirty_sources/internal/uffd_fd.h"
#include "core/internal/guest_copy.h"
#include "core/internal/mapping.h"
#include "core/posix_error.h"
#include "core/status_macros.h"

namespace livemig {
namespace {

using uffd_internal::PageRegion;
using uffd_internal::PmScanArg;

// Protection chunks end on 2 MiB boundaries where they can, so that Start()
// does not split a transparent huge page that a chunk edge would cut.
constexpr uint64_t kHugePage = uint64_t{2} << 20;

// An ioctl retried while the kernel says "try again": EINTR (a signal), and
// EAGAIN for UFFDIO_* while the mm is changing (fork, mremap in progress).
// Bounded, so a mm that keeps changing turns into an error, not a hang.
template <typename Arg>
int RetryingIoctl(int fd, unsigned long request, Arg* arg) {
  int rc = -1;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    rc = ::ioctl(fd, request, arg);
    if (rc >= 0 || (errno != EINTR && errno != EAGAIN)) return rc;
  }
  return rc;
}

std::string RangeName(size_t index, uint64_t start, uint64_t end) {
  return absl::StrCat("region ", index, " [0x", absl::Hex(start), ", 0x",
                      absl::Hex(end), ")");
}

absl::Status Register(int uffd, uint64_t start, uint64_t end,
                      const std::string& what) {
  struct uffdio_register reg = {};
  reg.range.start = start;
  reg.range.len = end - start;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (RetryingIoctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    return PosixError(absl::StrCat("uffd tracker: UFFDIO_REGISTER (WP) of ", what),
                      errno);
  }
  if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) == 0) {
    return absl::UnimplementedError(absl::StrCat(
        "uffd tracker: ", what, " was registered but cannot be write-protected"));
  }
  return absl::OkStatus();
}

void Unregister(int uffd, uint64_t start, uint64_t end) {
  struct uffdio_range range = {};
  range.start = start;
  range.len = end - start;
  // Nothing to do on failure: closing the fd afterwards drops every
  // registration and protection anyway.
  (void)RetryingIoctl(uffd, UFFDIO_UNREGISTER, &range);
}

absl::Status Protect(int uffd, uint64_t start, uint64_t end, size_t chunk,
                     const std::string& what) {
  uint64_t at = start;
  while (at < end) {
    uint64_t next = std::min(end, at + chunk);
    if (next < end && next / kHugePage * kHugePage > at) {
      next = next / kHugePage * kHugePage;
    }
    struct uffdio_writeprotect wp = {};
    wp.range.start = at;
    wp.range.len = next - at;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    if (RetryingIoctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
      return PosixError(absl::StrCat("uffd tracker: UFFDIO_WRITEPROTECT of ", what,
                                     " at 0x", absl::Hex(at)),
                        errno);
    }
    at = next;
  }
  return absl::OkStatus();
}

// The fast path's arguments for [start, end): list the pages written since
// they were last protected (PAGE_IS_WRITTEN), re-protect exactly those in the
// same walk (WP_MATCHING), and fail on any part of the range that is not
// registered for async WP (CHECK_WPASYNC) instead of silently skipping it.
PmScanArg WrittenPagesScan(uint64_t start, uint64_t end, PageRegion* vec,
                           size_t vec_len) {
  PmScanArg arg = {};
  arg.size = sizeof(arg);
  arg.flags = uffd_internal::kPmScanWpMatching | uffd_internal::kPmScanCheckWpAsync;
  arg.start = start;
  arg.end = end;
  arg.vec = reinterpret_cast<uint64_t>(vec);
  arg.vec_len = vec_len;
  arg.category_mask = uffd_internal::kPageIsWritten;
  arg.return_mask = uffd_internal::kPageIsWritten;
  return arg;
}

}  // namespace

UffdWriteTracker::UffdWriteTracker(const GuestMemory<AtomicBitmap>& memory)
    : UffdWriteTracker(memory, Options()) {}

UffdWriteTracker::UffdWriteTracker(const GuestMemory<AtomicBitmap>& memory,
                                   Options options)
    : memory_(memory), options_(options) {
  assert(options_.scan_vec_len > 0);
  assert(options_.protect_chunk_bytes > 0);
  const uint64_t page = core_internal::SystemPageSize();
  ranges_.reserve(memory_.num_regions());
  for (const auto& region : memory_.regions()) {
    const uint64_t start = reinterpret_cast<uint64_t>(region.region().as_ptr());
    const uint64_t end = start + (region.len() + page - 1) / page * page;
    ranges_.push_back({start, end});
  }
  vec_.resize(options_.scan_vec_len);
}

UffdWriteTracker::~UffdWriteTracker() { Stop(); }

absl::Status UffdWriteTracker::Start() {
  if (started()) {
    return absl::FailedPreconditionError(
        "uffd tracker: Start() while already started (Stop() it first)");
  }
  absl::Status status = [&]() -> absl::Status {
    LIVEMIG_ASSIGN_OR_RETURN(uffd_, uffd_internal::OpenUserfaultfd());
    LIVEMIG_RETURN_IF_ERROR(uffd_internal::EnableAsyncWriteProtect(uffd_.get()));
    LIVEMIG_ASSIGN_OR_RETURN(pagemap_, uffd_internal::OpenPagemap());
    for (size_t i = 0; i < ranges_.size(); ++i) {
      LIVEMIG_RETURN_IF_ERROR(RegisterAndProtect(i));
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    Stop();
    return status;
  }
  ++stats_.starts;
  return absl::OkStatus();
}

absl::Status UffdWriteTracker::RegisterAndProtect(size_t i) {
  const Range r = ranges_[i];
  const std::string what = RangeName(i, r.start, r.end);
  LIVEMIG_RETURN_IF_ERROR(Register(uffd_.get(), r.start, r.end, what));
  registered_ = i + 1;
  return Protect(uffd_.get(), r.start, r.end, options_.protect_chunk_bytes, what);
}

absl::Status UffdWriteTracker::Collect() {
  if (!started()) {
    return absl::FailedPreconditionError("uffd tracker: Collect() before Start()");
  }
  ++stats_.collects;
  for (size_t i = 0; i < ranges_.size(); ++i) {
    LIVEMIG_RETURN_IF_ERROR(ScanRegion(i));
  }
  return absl::OkStatus();
}

absl::Status UffdWriteTracker::ScanRegion(size_t i) {
  const Range r = ranges_[i];
  const AtomicBitmap& bitmap = memory_.region(i).bitmap();
  uint64_t at = r.start;
  while (at < r.end) {
    PmScanArg arg = WrittenPagesScan(at, r.end, vec_.data(), vec_.size());
    const int n = RetryingIoctl(pagemap_.get(), uffd_internal::kPagemapScan, &arg);
    ++stats_.scan_ioctls;
    if (n < 0) {
      const int error_number = errno;
      return uffd_internal::ScanFailure(
          absl::StrCat("uffd tracker: PAGEMAP_SCAN of ", RangeName(i, r.start, r.end),
                       " at 0x", absl::Hex(at))
              .c_str(),
          error_number);
    }
    // The ordering rule: every range listed here was re-protected by this
    // same call, before its bits are set below.
    for (int k = 0; k < n; ++k) {
      const PageRegion& got = vec_[static_cast<size_t>(k)];
      if (got.start < r.start || got.end > r.end || got.end <= got.start) {
        return absl::InternalError(absl::StrCat(
            "uffd tracker: PAGEMAP_SCAN of ", RangeName(i, r.start, r.end),
            " returned the range [0x", absl::Hex(got.start), ", 0x",
            absl::Hex(got.end), ")"));
      }
      bitmap.SetAddrRange(got.start - r.start, got.end - got.start);
      stats_.pages_reported += (got.end - got.start) / bitmap.page_size();
    }
    stats_.ranges_reported += static_cast<uint64_t>(n);
    // The walk stops early when vec fills; only what it reported was
    // re-protected, so the rest is scanned from where it stopped.
    if (arg.walk_end <= at || arg.walk_end > r.end) {
      return absl::InternalError(absl::StrCat(
          "uffd tracker: PAGEMAP_SCAN of ", RangeName(i, r.start, r.end),
          " from 0x", absl::Hex(at), " made no progress (walk_end 0x",
          absl::Hex(arg.walk_end), ")"));
    }
    at = arg.walk_end;
  }
  return absl::OkStatus();
}

void UffdWriteTracker::Stop() {
  if (uffd_.valid()) {
    for (size_t i = 0; i < registered_; ++i) {
      Unregister(uffd_.get(), ranges_[i].start, ranges_[i].end);
    }
  }
  registered_ = 0;
  pagemap_.Reset();
  uffd_.Reset();
}

absl::Status UffdWriteTracker::Probe() {
  LIVEMIG_ASSIGN_OR_RETURN(ScopedFd uffd, uffd_internal::OpenUserfaultfd());
  LIVEMIG_RETURN_IF_ERROR(uffd_internal::EnableAsyncWriteProtect(uffd.get()));
  LIVEMIG_ASSIGN_OR_RETURN(ScopedFd pagemap, uffd_internal::OpenPagemap());
  const size_t page = core_internal::SystemPageSize();
  // Two pages: one written, one not, so the probe also sees that a page
  // that was not written is not reported.
  LIVEMIG_ASSIGN_OR_RETURN(
      core_internal::Mapping scratch,
      core_internal::Mapping::Map(std::nullopt, 2 * page, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE));
  const uint64_t start = reinterpret_cast<uint64_t>(scratch.addr());
  const uint64_t end = start + 2 * page;
  const std::string what = "the probe's scratch page";
  LIVEMIG_RETURN_IF_ERROR(Register(uffd.get(), start, end, what));
  LIVEMIG_RETURN_IF_ERROR(Protect(uffd.get(), start, end, 2 * page, what));
  core_internal::StoreToGuest<uint8_t>(scratch.addr() + page, 1);
  PageRegion vec[2] = {};
  PmScanArg arg = WrittenPagesScan(start, end, vec, 2);
  const int n = RetryingIoctl(pagemap.get(), uffd_internal::kPagemapScan, &arg);
  if (n < 0) {
    return uffd_internal::ScanFailure("uffd probe: PAGEMAP_SCAN", errno);
  }
  if (n != 1 || vec[0].start != start + page || vec[0].end != end) {
    return absl::InternalError(absl::StrCat(
        "uffd probe: PAGEMAP_SCAN reported ", n,
        " ranges for one written page out of two (write tracking does not work "
        "as expected on this kernel)"));
  }
  Unregister(uffd.get(), start, end);
  return absl::OkStatus();
}

}  // namespace livemig
