#include "migration/testing/fake_vm.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"
#include "core/status_macros.h"

namespace livemig::testing {

absl::StatusOr<std::unique_ptr<FakeVm>> FakeVm::Create(
    const std::vector<FakeRegionSpec>& specs, Fill fill, uint64_t seed) {
  std::vector<GuestRegion<AtomicBitmap>> regions;
  for (const FakeRegionSpec& spec : specs) {
    std::optional<MmapRegion<AtomicBitmap>> mmap;
    if (spec.file.empty()) {
      LIVEMIG_ASSIGN_OR_RETURN(mmap,
                               MmapRegion<AtomicBitmap>::Create(spec.size));
    } else {
      LIVEMIG_ASSIGN_OR_RETURN(
          FileOffset file,
          FileOffset::Open(spec.file, spec.file_offset, O_CREAT));
      struct stat st;
      if (::fstat(file.fd(), &st) != 0) return PosixError("fstat", errno);
      const uint64_t need = spec.file_offset + spec.size;
      if (static_cast<uint64_t>(st.st_size) < need &&
          ::ftruncate(file.fd(), static_cast<off_t>(need)) != 0) {
        return PosixError(absl::StrCat("ftruncate ", spec.file), errno);
      }
      LIVEMIG_ASSIGN_OR_RETURN(
          mmap, MmapRegion<AtomicBitmap>::FromFile(std::move(file), spec.size));
    }
    LIVEMIG_ASSIGN_OR_RETURN(
        auto region, GuestRegion<AtomicBitmap>::Create(
                         std::move(*mmap), GuestAddress(spec.guest_addr)));
    regions.push_back(std::move(region));
  }
  LIVEMIG_ASSIGN_OR_RETURN(
      auto memory, GuestMemory<AtomicBitmap>::FromRegions(std::move(regions)));
  auto vm = std::unique_ptr<FakeVm>(new FakeVm());
  vm->memory_ = std::make_unique<GuestMemory<AtomicBitmap>>(std::move(memory));
  std::mt19937_64 rng(seed);
  for (const auto& r : vm->memory_->regions()) {
    uint8_t* p = r.region().as_ptr();
    const size_t pages = r.len() / 4096;
    if (fill == Fill::kText) {
      static const char* const kWords[] = {"static ", "inline ", "return ", "const ",
                                           "{\n",     "};\n",    "if (",    ") ",
                                           "int ",    "x; "};
      for (size_t at = 0; at < r.len();) {
        const char* w = kWords[rng() % 10];
        const size_t n = std::min(std::strlen(w), r.len() - at);
        std::memcpy(p + at, w, n);
        at += n;
      }
      r.bitmap().ResetAddrRange(0, r.len());
      continue;
    }
    for (size_t page = 0; page < pages; ++page) {
      const bool random =
          fill == Fill::kRandom || (fill == Fill::kMixed && rng() % 2);
      if (random) {
        for (size_t i = 0; i < 4096; i += 8) {
          const uint64_t v = rng();
          std::memcpy(p + page * 4096 + i, &v, 8);
        }
      } else if (!r.region().file_offset().has_value()) {
        continue;  // Anonymous memory starts zeroed.
      } else {
        std::memset(p + page * 4096, 0, 4096);
      }
    }
    // The fill is the VM's state before migration, not dirtying under it.
    r.bitmap().ResetAddrRange(0, r.len());
  }
  return vm;
}

FakeVm::~FakeVm() { StopWorkload(); }

void FakeVm::StartWorkload(const WorkloadSpec& spec) {
  StopWorkload();
  spec_ = spec;
  if (spec.pages_per_second <= 0) return;
  stop_.store(false);
  for (int i = 0; i < spec.writers; ++i)
    writers_.emplace_back([this, i] { RunWriter(i); });
}

void FakeVm::StopWorkload() {
  stop_.store(true);
  for (auto& t : writers_) t.join();
  writers_.clear();
}

void FakeVm::RunWriter(int index) {
  std::mt19937_64 rng(spec_.seed * 7919 + index);
  const uint64_t total = memory_->total_size();
  const uint64_t span =
      spec_.hot_bytes == 0 ? total : std::min(spec_.hot_bytes, total);
  const auto start = std::chrono::steady_clock::now();
  uint64_t done = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    // Pick a byte offset in the first `span` bytes of guest memory, region
    // by region (regions may have gaps between them).
    uint64_t offset = (rng() % (span / 8)) * 8;
    for (const auto& r : memory_->regions()) {
      if (offset < r.len()) {
        (void)r.region().WriteObj<uint64_t>(rng(), offset);
        break;
      }
      offset -= r.len();
    }
    ++done;
    pages_written_.fetch_add(1, std::memory_order_relaxed);
    // Pace to the rate, slowed by the throttle (auto-converge).
    const int throttle = throttle_.load(std::memory_order_relaxed);
    const double rate = spec_.pages_per_second * (100 - throttle) / 100.0;
    const auto due =
        start + std::chrono::duration<double>(done / std::max(rate, 1.0));
    if (due >
        std::chrono::steady_clock::now() + std::chrono::microseconds(200)) {
      std::this_thread::sleep_until(due);
    }
  }
}

absl::Status FakeVm::Pause() {
  StopWorkload();
  paused_.store(true);
  return absl::OkStatus();
}

absl::Status FakeVm::Resume() {
  paused_.store(false);
  resumes_.fetch_add(1);
  StartWorkload(spec_);
  return absl::OkStatus();
}

void FakeVm::SetThrottle(int percent) {
  throttle_.store(percent);
  std::lock_guard<std::mutex> lock(mu_);
  throttles_.push_back(percent);
}

std::vector<int> FakeVm::throttles() const {
  std::lock_guard<std::mutex> lock(mu_);
  return throttles_;
}

absl::StatusOr<std::string> FakeVm::DeviceState() {
  return std::string("device-state-v1");
}

}  // namespace livemig::testing
