#include "migration/region_digest.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace livemig {

uint64_t DigestBytes(const uint8_t* data, size_t len, unsigned threads) {
  if (len <= kDigestChunk) return XXH3_64bits(data, len);
  const size_t chunks = (len + kDigestChunk - 1) / kDigestChunk;
  std::vector<uint64_t> digests(chunks);
  if (threads == 0) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  threads = static_cast<unsigned>(std::min<size_t>(threads, chunks));
  // Chunks are handed out one at a time; each digest slot has one writer,
  // and join() publishes them to this thread. Relaxed: the counter only
  // distributes work.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const size_t begin = c * kDigestChunk;
      digests[c] = XXH3_64bits(data + begin, std::min(kDigestChunk, len - begin));
    }
  };
  std::vector<std::thread> helpers;
  for (unsigned t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& h : helpers) h.join();
  // The array is hashed as stored: little-endian on every target we build.
  return XXH3_64bits(digests.data(), digests.size() * sizeof(uint64_t));
}

}  // namespace livemig
