#include "migration/internal/prealloc.h"

#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14 (uapi asm-generic/mman-common.h).
#endif

namespace livemig::migration_internal {
namespace {

int64_t NowNs() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

int Populator::DefaultThreads() {
  const unsigned cores = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp(cores, 1u, 8u));
}

Populator::Populator(std::vector<PopulateTarget> targets)
    : targets_(std::move(targets)) {
  uint64_t chunks = 0;
  for (size_t t = 0; t < targets_.size(); ++t) {
    first_chunk_.push_back(chunks);
    chunks += (targets_[t].size + kChunkBytes - 1) / kChunkBytes;
  }
  first_chunk_.push_back(chunks);
}

void Populator::Start(int threads) {
  start_ns_ = NowNs();
  last_end_ns_.store(start_ns_, std::memory_order_relaxed);
  const uint64_t chunks = first_chunk_.back();
  const uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(std::max(threads, 1)), chunks);
  threads_.reserve(static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; ++i) threads_.emplace_back([this] { Work(); });
}

Populator::~Populator() { Stop(); }

Populator::Chunk Populator::ChunkAt(uint64_t index) const {
  // The last target whose first chunk is <= index.
  const auto it = std::upper_bound(first_chunk_.begin(), first_chunk_.end() - 1, index);
  const size_t target = static_cast<size_t>(it - first_chunk_.begin()) - 1;
  const uint64_t offset = (index - first_chunk_[target]) * kChunkBytes;
  return Chunk{target, offset, std::min<uint64_t>(kChunkBytes, targets_[target].size - offset)};
}

absl::Status Populator::ErrorFor(const PopulateTarget& target, uint64_t offset,
                                 int error) const {
  const std::string what = absl::StrCat(
      "region ", target.region,
      target.backing.empty() ? std::string(" (anonymous memory)")
                             : absl::StrCat(" (\"", target.backing, "\")"),
      ": cannot allocate its ", target.size,
      " bytes of destination memory: MADV_POPULATE_WRITE at byte ", offset, " failed");
  switch (error) {
    case ENOMEM:
      return absl::ResourceExhaustedError(
          absl::StrCat(what, ": ", std::strerror(error), " (this machine is out of memory)"));
    case EFAULT:
      return absl::ResourceExhaustedError(absl::StrCat(
          what, ": ", std::strerror(error),
          " (the backing cannot provide the page: a file too short, or its filesystem full)"));
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", std::strerror(error)));
    case EINVAL:
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": ", std::strerror(error),
          " (needs Linux >= 5.14 and memory the kernel can populate)"));
    default:
      return PosixError(what, error);
  }
}

void Populator::Work() {
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t index = next_.fetch_add(1, std::memory_order_relaxed);
    if (index >= first_chunk_.back()) break;
    const Chunk chunk = ChunkAt(index);
    const PopulateTarget& target = targets_[chunk.target];
    int rc;
    do {
      rc = ::madvise(target.addr + chunk.offset, chunk.len, MADV_POPULATE_WRITE);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int error = errno;
      absl::Status failed = ErrorFor(target, chunk.offset, error);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (error_.ok()) error_ = std::move(failed);
      }
      stop_.store(true, std::memory_order_relaxed);
      break;
    }
    populated_.fetch_add(chunk.len, std::memory_order_relaxed);
  }
  const int64_t end = NowNs();
  int64_t seen = last_end_ns_.load(std::memory_order_relaxed);
  while (seen < end &&
         !last_end_ns_.compare_exchange_weak(seen, end, std::memory_order_relaxed)) {
  }
}

void Populator::Join() {
  if (joined_) return;
  for (std::thread& t : threads_) t.join();
  joined_ = true;
}

absl::Status Populator::Wait() {
  Join();
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void Populator::Stop() {
  stop_.store(true, std::memory_order_relaxed);
  Join();
}

PopulateStats Populator::stats() const {
  PopulateStats out;
  out.populated_bytes = populated_.load(std::memory_order_relaxed);
  out.ms = static_cast<double>(last_end_ns_.load(std::memory_order_relaxed) - start_ns_) / 1e6;
  out.threads = static_cast<int>(threads_.size());
  return out;
}

absl::Status PopulateAll(std::vector<PopulateTarget> targets, int threads,
                         PopulateStats* stats) {
  Populator populator(std::move(targets));
  populator.Start(threads);
  absl::Status status = populator.Wait();
  if (stats != nullptr) *stats = populator.stats();
  return status;
}

}  // namespace livemig::migration_internal
