#include "migration/page_hashes.h"

#include <xxhash.h>

#include <cstdint>
#include <span>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

// Three chunks, the last 100 pages short of a full one.
constexpr uint64_t kPages = 3 * kHashChunkPages - 100;

// A distinct, non-zero stand-in hash for page `p`.
uint64_t FakeHash(uint64_t p) { return p * 0x9e3779b97f4a7c15ULL + 1; }

std::vector<uint64_t> FakeHashes(uint64_t pages) {
  std::vector<uint64_t> hashes(pages);
  for (uint64_t p = 0; p < pages; ++p) hashes[p] = FakeHash(p);
  return hashes;
}

PageHashes Filled(uint64_t pages) {
  PageHashes hashes(pages);
  for (uint64_t p = 0; p < pages; ++p) hashes.Set(p, FakeHash(p));
  return hashes;
}

TEST(HashPage, IsXxh3OfTheWholePageAndNeverNoPageHash) {
  std::vector<uint8_t> page(kHashedPageSize);
  for (size_t i = 0; i < page.size(); ++i) page[i] = static_cast<uint8_t>(i * 31 + 7);
  for (size_t flip : {size_t{0}, size_t{2048}, kHashedPageSize - 1}) {
    page[flip] ^= 0x80;
    EXPECT_EQ(HashPage(page.data()), XXH3_64bits(page.data(), kHashedPageSize))
        << "byte " << flip << " flipped";
    EXPECT_NE(HashPage(page.data()), kNoPageHash);
  }
}

TEST(HashPage, ZeroPageHashIsHashOfAZeroPage) {
  const std::vector<uint8_t> zero(kHashedPageSize, 0);
  EXPECT_EQ(ZeroPageHash(), HashPage(zero.data()));
  EXPECT_EQ(ZeroPageHash(), XXH3_64bits(zero.data(), kHashedPageSize));
  EXPECT_NE(ZeroPageHash(), kNoPageHash);
}

TEST(PageHashes, FreshHashesAreNoPageHashWithOneChunkPer4096Pages) {
  const PageHashes hashes(kPages);
  EXPECT_EQ(hashes.pages(), kPages);
  EXPECT_EQ(hashes.chunks(), 3u);
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(hashes.Get(p), kNoPageHash) << p;

  EXPECT_EQ(PageHashes(0).chunks(), 0u);
  EXPECT_EQ(PageHashes(1).chunks(), 1u);
  EXPECT_EQ(PageHashes(kHashChunkPages).chunks(), 1u);
  EXPECT_EQ(PageHashes(kHashChunkPages + 1).chunks(), 2u);
}

TEST(PageHashes, GetReturnsWhatSetStored) {
  PageHashes hashes(kPages);
  hashes.Set(0, 11);
  hashes.Set(kPages - 1, 22);
  hashes.Set(0, 33);  // The last Set wins.
  EXPECT_EQ(hashes.Get(0), 33u);
  EXPECT_EQ(hashes.Get(1), kNoPageHash);
  EXPECT_EQ(hashes.Get(kPages - 1), 22u);
}

TEST(PageHashes, RefreshChunksRedigestsOnlyChunksSetSinceTheLastCall) {
  PageHashes hashes(kPages);
  EXPECT_EQ(hashes.RefreshChunks(), 3u);  // Every chunk starts stale.
  EXPECT_EQ(hashes.RefreshChunks(), 0u);

  hashes.Set(5, 1);
  hashes.Set(4095, 2);  // Same chunk.
  EXPECT_EQ(hashes.RefreshChunks(), 1u);
  EXPECT_EQ(hashes.RefreshChunks(), 0u);

  hashes.Set(kHashChunkPages, 3);
  hashes.Set(kPages - 1, 4);
  EXPECT_EQ(hashes.RefreshChunks(), 2u);
  EXPECT_EQ(hashes.RefreshChunks(), 0u);
}

TEST(PageHashes, ChunkDigestIsXxh3OfTheChunksHashesWithAShorterLastChunk) {
  PageHashes hashes = Filled(kPages);
  hashes.RefreshChunks();
  const std::vector<uint64_t> expected = FakeHashes(kPages);
  const uint64_t* e = expected.data();
  EXPECT_THAT(hashes.chunk_digests(),
              ElementsAre(XXH3_64bits(e, 4096 * 8), XXH3_64bits(e + 4096, 4096 * 8),
                          XXH3_64bits(e + 8192, (4096 - 100) * 8)));
}

TEST(PageHashes, ChunkDigestsChangeOnlyAtRefresh) {
  PageHashes hashes = Filled(kPages);
  hashes.RefreshChunks();
  const std::vector<uint64_t> before(hashes.chunk_digests().begin(),
                                     hashes.chunk_digests().end());
  hashes.Set(kHashChunkPages + 7, 12345);
  EXPECT_THAT(hashes.chunk_digests(), ElementsAre(before[0], before[1], before[2]));

  ASSERT_EQ(hashes.RefreshChunks(), 1u);
  std::vector<uint64_t> expected = FakeHashes(kPages);
  expected[kHashChunkPages + 7] = 12345;
  EXPECT_THAT(hashes.chunk_digests(),
              ElementsAre(before[0], XXH3_64bits(expected.data() + 4096, 4096 * 8),
                          before[2]));
}

TEST(PageHashes, RootIsXxh3OfTheChunkDigestsAndChangesWithOnePage) {
  PageHashes hashes = Filled(kPages);
  hashes.RefreshChunks();
  const std::span<const uint64_t> chunks = hashes.chunk_digests();
  const uint64_t root = hashes.Root();
  EXPECT_EQ(root, XXH3_64bits(chunks.data(), chunks.size() * sizeof(uint64_t)));

  hashes.Set(kPages - 1, FakeHash(kPages - 1) + 1);
  hashes.RefreshChunks();
  EXPECT_NE(hashes.Root(), root);
  EXPECT_EQ(hashes.Root(), XXH3_64bits(chunks.data(), chunks.size() * sizeof(uint64_t)));

  hashes.Set(kPages - 1, FakeHash(kPages - 1));  // Back to the original.
  hashes.RefreshChunks();
  EXPECT_EQ(hashes.Root(), root);
}

TEST(PageHashes, SameSetsInAnotherOrderGiveTheSameRoot) {
  PageHashes forward = Filled(kPages);
  PageHashes backward(kPages);
  for (uint64_t p = kPages; p-- > 0;) backward.Set(p, FakeHash(p));
  backward.Set(17, 99);
  forward.Set(17, 99);
  forward.RefreshChunks();
  backward.RefreshChunks();
  EXPECT_EQ(forward.Root(), backward.Root());
  EXPECT_THAT(forward.chunk_digests(), ElementsAreArray(backward.chunk_digests()));
}

// Run under --config=tsan: Set from several threads must not race.
TEST(PageHashes, ConcurrentSetsOnDisjointPagesAllLand) {
  constexpr unsigned kThreads = 4;
  PageHashes hashes(kPages);
  hashes.RefreshChunks();
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kThreads; ++t) {
    // Interleaved pages: every thread writes every chunk's stale flag.
    threads.emplace_back([&hashes, t] {
      for (uint64_t p = t; p < kPages; p += kThreads) hashes.Set(p, FakeHash(p));
    });
  }
  for (std::thread& t : threads) t.join();

  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(hashes.Get(p), FakeHash(p)) << p;
  EXPECT_EQ(hashes.RefreshChunks(), 3u);
  EXPECT_EQ(hashes.Root(), [] {
    PageHashes serial = Filled(kPages);
    serial.RefreshChunks();
    return serial.Root();
  }());
}

TEST(DifferingPages, ReturnsTheFirstMaxDifferingPagesInOrder) {
  const PageHashes ours = Filled(20);
  const std::vector<uint64_t> all = FakeHashes(20);
  std::vector<uint64_t> theirs(all.begin() + 4, all.end());  // Page 4 + i.
  theirs[1] = 0;   // Page 5.
  theirs[3] = 7;   // Page 7.
  theirs[10] = 8;  // Page 14.
  EXPECT_THAT(DifferingPages(ours, 4, theirs, 10), ElementsAre(5, 7, 14));
  EXPECT_THAT(DifferingPages(ours, 4, theirs, 2), ElementsAre(5, 7));
  EXPECT_THAT(DifferingPages(ours, 4, theirs, 0), IsEmpty());
}

TEST(DifferingPages, IsEmptyWhenEveryPageMatches) {
  const PageHashes ours = Filled(20);
  const std::vector<uint64_t> theirs = FakeHashes(20);
  EXPECT_THAT(DifferingPages(ours, 0, theirs, 10), IsEmpty());
  EXPECT_THAT(DifferingPages(ours, 0, {}, 10), IsEmpty());
}

TEST(DifferingPages, PagesPastTheEndCountAsDifferent) {
  const PageHashes ours = Filled(20);
  // Pages 18..21: the last two are past ours.pages() although theirs matches
  // what a longer region would hold.
  const std::vector<uint64_t> theirs = {FakeHash(18), FakeHash(19), FakeHash(20),
                                        FakeHash(21)};
  EXPECT_THAT(DifferingPages(ours, 18, theirs, 10), ElementsAre(20, 21));
  EXPECT_THAT(DifferingPages(ours, 18, theirs, 1), ElementsAre(20));
}

}  // namespace
}  // namespace livemig
