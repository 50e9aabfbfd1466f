#include "migration/verification.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "proto/migration.pb.h"

namespace livemig {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::StatusIsWithMessage;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::IsEmpty;

constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;
// Region 0: one short chunk. Region 1: three chunks, the last 4046 pages.
constexpr uint64_t kPages0 = 100;
constexpr uint64_t kPages1 = 3 * kHashChunkPages - 50;

uint64_t FakeHash(uint32_t region, uint64_t p) {
  return (uint64_t{region} << 48) + p * 0x9e3779b97f4a7c15ULL + 1;
}

// Both sides build the same two regions from this.
std::vector<PageHashes> TwoRegions() {
  std::vector<PageHashes> regions;
  for (uint64_t pages : {kPages0, kPages1}) {
    const uint32_t r = static_cast<uint32_t>(regions.size());
    PageHashes& hashes = regions.emplace_back(pages);
    for (uint64_t p = 0; p < pages; ++p) hashes.Set(p, FakeHash(r, p));
  }
  return regions;
}

proto::Completion SentDigests() {
  std::vector<PageHashes> sent = TwoRegions();
  proto::Completion completion;
  AddDigests(sent, &completion);
  return completion;
}

// Matches a ChunkMismatch {region, first_page, count, any source digest}.
auto Chunk(uint32_t region, uint64_t first_page, uint64_t count) {
  return ::testing::FieldsAre(region, first_page, count, ::testing::_);
}

TEST(AddDigests, AddsOneDigestPerRegionInRegionOrder) {
  std::vector<PageHashes> sent = TwoRegions();
  proto::Completion completion;
  AddDigests(sent, &completion);
  ASSERT_EQ(completion.digests_size(), 2);
  for (int r = 0; r < 2; ++r) {
    const proto::RegionDigest& d = completion.digests(r);
    EXPECT_EQ(d.region_index(), static_cast<uint32_t>(r));
    EXPECT_EQ(d.page_count(), sent[r].pages());
    EXPECT_EQ(d.root(), sent[r].Root());
    EXPECT_THAT(d.chunk_digests(), ElementsAreArray(sent[r].chunk_digests()));
  }
  EXPECT_EQ(completion.digests(1).chunk_digests_size(), 3);
}

// 9 bytes per chunk and 32 per region against the 1 MiB message limit: one
// page per region is one chunk, 41 bytes; 25575 of them fit, 25576 do not.
TEST(CheckDigestsFit, RefusesDigestsLargerThanOneCompletionNamingTheWayOut) {
  std::vector<PageHashes> sent;
  for (int i = 0; i < 25575; ++i) sent.emplace_back(1);
  EXPECT_OK(CheckDigestsFit(sent, 25575 * 4096));
  sent.emplace_back(1);
  EXPECT_THAT(CheckDigestsFit(sent, 25576 * 4096),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "104759296 bytes of guest memory need 25576 chunk digests, "
                                  "more than one COMPLETION frame carries; use verify=off"));
}

TEST(CompareDigests, IdenticalHashesHaveNoMismatch) {
  std::vector<PageHashes> landed = TwoRegions();
  ASSERT_OK_AND_ASSIGN(auto mismatches, CompareDigests(SentDigests(), landed));
  EXPECT_THAT(mismatches, IsEmpty());
}

TEST(CompareDigests, OnePageNamesItsChunk) {
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kHashChunkPages + 9, kNoPageHash);  // A page that never arrived.
  ASSERT_OK_AND_ASSIGN(auto mismatches, CompareDigests(SentDigests(), landed));
  EXPECT_THAT(mismatches, ElementsAre(Chunk(1, 4096, 4096)));
}

TEST(CompareDigests, ALastChunkMismatchCountsOnlyItsPages) {
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kPages1 - 1, 42);
  ASSERT_OK_AND_ASSIGN(auto mismatches, CompareDigests(SentDigests(), landed));
  EXPECT_THAT(mismatches, ElementsAre(Chunk(1, 8192, 4046)));
}

TEST(CompareDigests, NamesTheFirstDifferingChunkOfEachDifferingRegion) {
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kPages1 - 1, 42);
  landed[1].Set(kHashChunkPages + 1, 42);
  landed[0].Set(3, 42);
  ASSERT_OK_AND_ASSIGN(auto mismatches, CompareDigests(SentDigests(), landed));
  EXPECT_THAT(mismatches, ElementsAre(Chunk(0, 0, 100), Chunk(1, 4096, 4096)));
}

TEST(CompareDigests, DigestsInAnyOrderAreMatchedByRegionIndex) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests()->SwapElements(0, 1);
  std::vector<PageHashes> landed = TwoRegions();
  landed[0].Set(0, 42);
  ASSERT_OK_AND_ASSIGN(auto mismatches, CompareDigests(completion, landed));
  EXPECT_THAT(mismatches, ElementsAre(Chunk(0, 0, 100)));
}

TEST(CompareDigests, RefusesAWrongDigestCount) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests()->RemoveLast();
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss, "completion has 1 digests for 2 regions"));
}

TEST(CompareDigests, RefusesARegionGivenTwice) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests(1)->set_region_index(0);
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss, "completion digest for region 0, given twice"));
}

TEST(CompareDigests, RefusesAnUnknownRegion) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests(1)->set_region_index(2);
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss,
                                  "completion digest for region 2, which does not exist"));
}

TEST(CompareDigests, RefusesAPageCountMismatch) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests(1)->set_page_count(kPages1 + 1);
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss,
                                  "completion digest for region 1 covers 12239 pages in 3 "
                                  "chunks; the region has 12238 pages in 3 chunks"));
}

TEST(CompareDigests, RefusesAChunkCountMismatch) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests(0)->add_chunk_digests(0);
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss,
                                  "completion digest for region 0 covers 100 pages in 2 "
                                  "chunks; the region has 100 pages in 1 chunks"));
}

TEST(CompareDigests, RefusesARootThatDisagreesWithMatchingChunks) {
  proto::Completion completion = SentDigests();
  completion.mutable_digests(1)->set_root(0x1234abcd);
  std::vector<PageHashes> landed = TwoRegions();
  EXPECT_THAT(CompareDigests(completion, landed),
              StatusIsWithMessage(kDataLoss,
                                  "completion digest for region 1: root 0x1234abcd does "
                                  "not match its chunk digests"));
}

TEST(QueryFor, AsksForTheMismatchedChunk) {
  const proto::PageHashQuery q = QueryFor({1, 8192, 4046});
  EXPECT_EQ(q.region_index(), 1u);
  EXPECT_EQ(q.first_page(), 8192u);
  EXPECT_EQ(q.count(), 4046u);
}

TEST(AnswerPageHashQuery, ReturnsExactlyTheHashesAskedFor) {
  const std::vector<PageHashes> sent = TwoRegions();
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list,
                       AnswerPageHashQuery(QueryFor({1, 4096, 3}), sent));
  EXPECT_EQ(list.region_index(), 1u);
  EXPECT_EQ(list.first_page(), 4096u);
  EXPECT_THAT(list.hashes(),
              ElementsAre(FakeHash(1, 4096), FakeHash(1, 4097), FakeHash(1, 4098)));
}

TEST(AnswerPageHashQuery, AnswersAWholeChunkUpToTheLastPage) {
  const std::vector<PageHashes> sent = TwoRegions();
  ASSERT_OK_AND_ASSIGN(proto::PageHashList full,
                       AnswerPageHashQuery(QueryFor({1, 0, kHashChunkPages}), sent));
  EXPECT_EQ(full.hashes_size(), 4096);
  EXPECT_EQ(full.hashes(4095), FakeHash(1, 4095));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList last,
                       AnswerPageHashQuery(QueryFor({1, kPages1 - 1, 1}), sent));
  EXPECT_THAT(last.hashes(), ElementsAre(FakeHash(1, kPages1 - 1)));
}

TEST(AnswerPageHashQuery, RefusesAnUnknownRegion) {
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({2, 0, 1}), TwoRegions()),
              StatusIsWithMessage(kDataLoss, "PAGE_HASH_QUERY names region 2; there are 2"));
}

TEST(AnswerPageHashQuery, RefusesEmptyTooLongAndOutOfRangeQueries) {
  const std::vector<PageHashes> sent = TwoRegions();
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({1, 0, 0}), sent),
              StatusIsWithMessage(kDataLoss,
                                  "PAGE_HASH_QUERY range [0, +0) is empty, outside region 1 "
                                  "(12238 pages) or longer than 4096"));
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({1, 0, 4097}), sent),
              StatusIsWithMessage(kDataLoss, "range [0, +4097) is empty, outside region 1"));
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({1, kPages1 - 2, 3}), sent),
              StatusIsWithMessage(kDataLoss, "range [12236, +3) is empty, outside region 1"));
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({0, 100, 1}), sent),
              StatusIsWithMessage(kDataLoss,
                                  "range [100, +1) is empty, outside region 0 (100 pages)"));
  // first_page + count would wrap around 2^64.
  EXPECT_THAT(AnswerPageHashQuery(QueryFor({0, 1, UINT64_MAX}), sent),
              StatusIsWithMessage(kDataLoss, "outside region 0"));
}

TEST(CheckPageHashList, AcceptsTheAnswerToTheQuery) {
  const proto::PageHashQuery query = QueryFor({1, 4096, 5});
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(query, TwoRegions()));
  EXPECT_THAT(CheckPageHashList(query, list), IsOk());
}

TEST(CheckPageHashList, RefusesAnAnswerToAnotherQuery) {
  const proto::PageHashQuery query = QueryFor({1, 4096, 5});
  const std::vector<PageHashes> sent = TwoRegions();
  ASSERT_OK_AND_ASSIGN(proto::PageHashList region0,
                       AnswerPageHashQuery(QueryFor({0, 0, 5}), sent));
  EXPECT_THAT(CheckPageHashList(QueryFor({1, 0, 5}), region0),
              StatusIsWithMessage(kDataLoss,
                                  "PAGE_HASH_LIST for region 0 pages [0, +5) does not "
                                  "answer the query for region 1 pages [0, +5)"));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList shifted,
                       AnswerPageHashQuery(QueryFor({1, 4097, 5}), sent));
  EXPECT_THAT(CheckPageHashList(query, shifted),
              StatusIsWithMessage(kDataLoss,
                                  "PAGE_HASH_LIST for region 1 pages [4097, +5) does not "
                                  "answer the query for region 1 pages [4096, +5)"));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList shorter,
                       AnswerPageHashQuery(QueryFor({1, 4096, 4}), sent));
  EXPECT_THAT(CheckPageHashList(query, shorter),
              StatusIsWithMessage(kDataLoss,
                                  "PAGE_HASH_LIST for region 1 pages [4096, +4) does not "
                                  "answer the query for region 1 pages [4096, +5)"));
}

// The destination's whole narrowing, as verification.h describes it.
TEST(Verification, NarrowsAMismatchToTheDifferingPage) {
  std::vector<PageHashes> sent = TwoRegions();
  proto::Completion completion;
  AddDigests(sent, &completion);
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kHashChunkPages + 9, 42);

  ASSERT_OK_AND_ASSIGN(auto differ, CompareDigests(completion, landed));
  ASSERT_THAT(differ, ElementsAre(Chunk(1, 4096, 4096)));
  const proto::PageHashQuery query = QueryFor(differ[0]);
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(query, sent));
  ASSERT_OK(CheckPageHashList(query, list));
  ASSERT_OK(CheckPageHashListDigest(differ[0], list));
  const std::span<const uint64_t> theirs(list.hashes().data(), list.hashes().size());
  EXPECT_THAT(DifferingPages(landed[1], list.first_page(), theirs, 8),
              ElementsAre(kHashChunkPages + 9));
}

// A list that answers the query but is not what the chunk's digest was made
// of cannot name the pages: the source's word is all it would be.
TEST(Verification, APageListThatDoesNotMakeTheChunksDigestIsRefused) {
  std::vector<PageHashes> sent = TwoRegions();
  proto::Completion completion;
  AddDigests(sent, &completion);
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kHashChunkPages + 9, 42);
  ASSERT_OK_AND_ASSIGN(auto differ, CompareDigests(completion, landed));
  ASSERT_EQ(differ.size(), 1u);
  EXPECT_EQ(differ[0].source_digest, completion.digests(1).chunk_digests(1));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(QueryFor(differ[0]), sent));
  list.set_hashes(3, list.hashes(3) ^ 1);  // Blames page 4099 instead of 4105.
  ASSERT_OK(CheckPageHashList(QueryFor(differ[0]), list));
  EXPECT_THAT(CheckPageHashListDigest(differ[0], list),
              StatusIsWithMessage(kDataLoss,
                                  absl::StrCat("PAGE_HASH_LIST for region 1 pages [4096, +4096) "
                                               "hashes to 0x",
                                               absl::Hex(ChunkDigest(std::span<const uint64_t>(
                                                   list.hashes().data(), list.hashes_size()))),
                                               ", not to the chunk digest the source's "
                                               "completion gave (0x",
                                               absl::Hex(differ[0].source_digest),
                                               "): the pages it names cannot be trusted")));
}

// ExplainMismatch: the destination's last step, the checks and the naming in one.
TEST(Verification, ExplainMismatchNamesThePageOrRefusesAListThatDoesNotAnswer) {
  std::vector<PageHashes> sent = TwoRegions();
  proto::Completion completion;
  AddDigests(sent, &completion);
  std::vector<PageHashes> landed = TwoRegions();
  landed[1].Set(kHashChunkPages + 9, 42);
  ASSERT_OK_AND_ASSIGN(auto differ, CompareDigests(completion, landed));
  proto::RegionInfo region;
  region.set_guest_addr(0x100000000);
  ASSERT_OK_AND_ASSIGN(proto::PageHashList list, AnswerPageHashQuery(QueryFor(differ[0]), sent));
  EXPECT_THAT(ExplainMismatch(differ, list, landed[1], region),
              StatusIsWithMessage(kDataLoss, absl::StrCat(kHashChunkPages + 9, " (guest 0x",
                                                          absl::Hex(0x100000000 +
                                                                    (kHashChunkPages + 9) *
                                                                        kHashedPageSize),
                                                          ")")));
  proto::PageHashList forged = list;
  forged.set_hashes(3, forged.hashes(3) ^ 1);
  EXPECT_THAT(ExplainMismatch(differ, forged, landed[1], region),
              StatusIsWithMessage(kDataLoss, "the pages it names cannot be trusted"));
  ASSERT_OK_AND_ASSIGN(proto::PageHashList other,
                       AnswerPageHashQuery(QueryFor({0, 0, 5}), sent));
  EXPECT_THAT(ExplainMismatch(differ, other, landed[1], region),
              StatusIsWithMessage(kDataLoss, "does not answer the query for region 1"));
}

class MismatchErrorTest : public ::testing::Test {
 protected:
  MismatchErrorTest() {
    region_.set_index(1);
    region_.set_guest_addr(0x100000000);
    region_.set_size(2 << 20);
  }
  proto::RegionInfo region_;
  static constexpr char kPrefix[] =
      "region 1 (guest 0x100000000, 2097152 bytes) does not hold what the source sent: ";
};

TEST_F(MismatchErrorTest, NamesOnePage) {
  const absl::Status status = MismatchError({1, 0, 512}, region_, {5}, 1);
  EXPECT_EQ(status, absl::DataLossError(std::string(kPrefix) +
                                        "page 5 (guest 0x100005000) differs"));
}

TEST_F(MismatchErrorTest, NamesSeveralPagesAndHowManyRegionsDiffer) {
  EXPECT_EQ(MismatchError({1, 0, 512}, region_, {5, 0x1ff}, 3),
            absl::DataLossError(std::string(kPrefix) +
                                "pages 5 (guest 0x100005000), 511 (guest 0x1001ff000) "
                                "differ (3 regions differ)"));
  EXPECT_EQ(MismatchError({1, 0, 512}, region_, {5, 6}, 1),
            absl::DataLossError(std::string(kPrefix) +
                                "pages 5 (guest 0x100005000), 6 (guest 0x100006000) differ"));
}

// A chunk of many differing pages names the first eight and counts the rest
// (they were cut at eight without a word).
TEST_F(MismatchErrorTest, NamesTheFirstEightPagesAndCountsTheRest) {
  std::vector<uint64_t> pages;
  for (uint64_t p = 0; p < 20; ++p) pages.push_back(p);
  const absl::Status status = MismatchError({1, 0, 512}, region_, pages, 1);
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("7 (guest 0x100007000) and 12 more differ"));
  EXPECT_THAT(std::string(status.message()), ::testing::Not(::testing::HasSubstr("8 (guest")));
}

TEST_F(MismatchErrorTest, NamesTheRangeWhenNoPageIsListed) {
  EXPECT_EQ(MismatchError({1, 4096, 4046}, region_, {}, 2),
            absl::DataLossError(std::string(kPrefix) +
                                "pages [4096, +4046) differ (2 regions differ)"));
}

}  // namespace
}  // namespace livemig
