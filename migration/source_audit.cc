#include "migration/source_audit.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migration/internal/known_zero.h"

namespace livemig {
namespace {

// Pages per unit of work handed to a thread: 64 MiB.
constexpr uint64_t kSlicePages = 16384;

struct Slice {
  uint32_t region;
  uint64_t first;
  uint64_t count;
};

}  // namespace

SourceAudit AuditSource(const GuestMemory<AtomicBitmap>& memory,
                        const std::vector<PageHashes>& sent, size_t max_listed,
                        unsigned threads) {
  std::vector<Slice> slices;
  SourceAudit out;
  for (uint32_t r = 0; r < memory.num_regions(); ++r) {
    const uint64_t pages = sent[r].pages();
    for (uint64_t first = 0; first < pages; first += kSlicePages) {
      slices.push_back({r, first, std::min(kSlicePages, pages - first)});
    }
    out.bytes += pages * kHashedPageSize;
  }
  if (slices.empty()) return out;
  if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  threads = static_cast<unsigned>(std::clamp<size_t>(threads, 1, slices.size()));
  // Slices are handed out one at a time (relaxed: the counter only
  // distributes work); results are merged under `mu`, and join() publishes
  // them to this thread.
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::vector<migration_internal::KnownZero> known;
  for (uint32_t r = 0; r < memory.num_regions(); ++r) {
    known.push_back(migration_internal::KnownZero::For(memory.region(r).region()));
  }
  auto work = [&] {
    std::vector<uint8_t> zero;
    uint64_t changed = 0;
    std::vector<ChangedPage> found;
    for (size_t s; (s = next.fetch_add(1, std::memory_order_relaxed)) < slices.size();) {
      const Slice& slice = slices[s];
      const GuestRegion<AtomicBitmap>& region = memory.region(slice.region);
      const uint8_t* base = region.region().as_ptr();
      known[slice.region].Find(slice.first, slice.count, &zero);
      for (uint64_t p = slice.first; p < slice.first + slice.count; ++p) {
        // A page the kernel knows is zero is not read (known_zero.h).
        const uint64_t now = zero[p - slice.first] != 0 ? ZeroPageHash()
                                                        : HashPage(base + p * kHashedPageSize);
        if (now == sent[slice.region].Get(p)) continue;
        ++changed;
        if (found.size() < max_listed) {
          found.push_back({slice.region, p, region.start_addr().value + p * kHashedPageSize});
        }
      }
    }
    std::lock_guard<std::mutex> lock(mu);
    out.changed += changed;
    out.first.insert(out.first.end(), found.begin(), found.end());
  };
  std::vector<std::thread> helpers;
  for (unsigned t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& h : helpers) h.join();
  std::sort(out.first.begin(), out.first.end(),
            [](const ChangedPage& a, const ChangedPage& b) { return a.guest_addr < b.guest_addr; });
  if (out.first.size() > max_listed) out.first.resize(max_listed);
  return out;
}

std::string DescribeChangedPages(const SourceAudit& audit) {
  std::vector<std::string> named;
  for (const ChangedPage& p : audit.first) {
    named.push_back(absl::StrCat("region ", p.region, " page ", p.page, " (guest 0x",
                                 absl::Hex(p.guest_addr), ")"));
  }
  return absl::StrCat(audit.changed, audit.changed == 1 ? " page" : " pages",
                      " changed without being marked dirty",
                      named.empty() ? "" : ": ", absl::StrJoin(named, ", "),
                      !named.empty() && audit.changed > audit.first.size() ? ", ..." : "");
}

}  // namespace livemig
