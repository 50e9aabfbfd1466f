#include "migration/verification.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migration/wire/frame_format.h"

namespace livemig {

void AddDigests(std::vector<PageHashes>& sent, proto::Completion* completion) {
  for (size_t r = 0; r < sent.size(); ++r) {
    PageHashes& hashes = sent[r];
    hashes.RefreshChunks();
    proto::RegionDigest* d = completion->add_digests();
    d->set_region_index(static_cast<uint32_t>(r));
    d->set_page_count(hashes.pages());
    d->set_root(hashes.Root());
    const std::span<const uint64_t> chunks = hashes.chunk_digests();
    d->mutable_chunk_digests()->Add(chunks.begin(), chunks.end());
  }
}

absl::Status CheckDigestsFit(const std::vector<PageHashes>& sent, uint64_t total_bytes) {
  uint64_t chunks = 0;
  for (const PageHashes& hashes : sent) chunks += hashes.chunks();
  if (chunks * 9 + sent.size() * 32 <= wire::kMaxMessageSize) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      total_bytes, " bytes of guest memory need ", chunks,
      " chunk digests, more than one COMPLETION frame carries; use verify=off"));
}

absl::StatusOr<std::vector<ChunkMismatch>> CompareDigests(
    const proto::Completion& completion, std::vector<PageHashes>& landed) {
  if (static_cast<size_t>(completion.digests_size()) != landed.size()) {
    return absl::DataLossError(absl::StrCat("completion has ", completion.digests_size(),
                                            " digests for ", landed.size(), " regions"));
  }
  std::vector<const proto::RegionDigest*> by_region(landed.size(), nullptr);
  for (const proto::RegionDigest& d : completion.digests()) {
    if (d.region_index() >= landed.size() || by_region[d.region_index()] != nullptr) {
      return absl::DataLossError(absl::StrCat(
          "completion digest for region ", d.region_index(),
          d.region_index() >= landed.size() ? ", which does not exist" : ", given twice"));
    }
    by_region[d.region_index()] = &d;
  }
  std::vector<ChunkMismatch> out;
  for (uint32_t r = 0; r < landed.size(); ++r) {
    const proto::RegionDigest& d = *by_region[r];
    PageHashes& ours = landed[r];
    ours.RefreshChunks();
    if (d.page_count() != ours.pages() ||
        static_cast<uint64_t>(d.chunk_digests_size()) != ours.chunks()) {
      return absl::DataLossError(absl::StrCat(
          "completion digest for region ", r, " covers ", d.page_count(), " pages in ",
          d.chunk_digests_size(), " chunks; the region has ", ours.pages(), " pages in ",
          ours.chunks(), " chunks"));
    }
    if (d.root() == ours.Root()) continue;
    const std::span<const uint64_t> chunks = ours.chunk_digests();
    for (uint64_t c = 0; c < chunks.size(); ++c) {
      if (chunks[c] == d.chunk_digests(static_cast<int>(c))) continue;
      const uint64_t first = c * kHashChunkPages;
      out.push_back({r, first, std::min(kHashChunkPages, ours.pages() - first),
                     d.chunk_digests(static_cast<int>(c))});
      break;
    }
    if (out.empty() || out.back().region != r) {
      // The root differs although every chunk matches: the root is wrong.
      return absl::DataLossError(absl::StrCat(
          "completion digest for region ", r, ": root 0x", absl::Hex(d.root()),
          " does not match its chunk digests"));
    }
  }
  return out;
}

absl::StatusOr<proto::PageHashList> AnswerPageHashQuery(
    const proto::PageHashQuery& query, const std::vector<PageHashes>& sent) {
  if (query.region_index() >= sent.size()) {
    return absl::DataLossError(absl::StrCat("PAGE_HASH_QUERY names region ",
                                            query.region_index(), "; there are ",
                                            sent.size()));
  }
  const PageHashes& hashes = sent[query.region_index()];
  if (query.count() == 0 || query.count() > kHashChunkPages ||
      query.first_page() >= hashes.pages() ||
      query.count() > hashes.pages() - query.first_page()) {
    return absl::DataLossError(absl::StrCat(
        "PAGE_HASH_QUERY range [", query.first_page(), ", +", query.count(),
        ") is empty, outside region ", query.region_index(), " (", hashes.pages(),
        " pages) or longer than ", kHashChunkPages));
  }
  proto::PageHashList list;
  list.set_region_index(query.region_index());
  list.set_first_page(query.first_page());
  list.mutable_hashes()->Reserve(static_cast<int>(query.count()));
  for (uint64_t p = query.first_page(); p < query.first_page() + query.count(); ++p) {
    list.add_hashes(hashes.Get(p));
  }
  return list;
}

absl::Status CheckPageHashList(const proto::PageHashQuery& query,
                               const proto::PageHashList& list) {
  if (list.region_index() != query.region_index() ||
      list.first_page() != query.first_page() ||
      static_cast<uint64_t>(list.hashes_size()) != query.count()) {
    return absl::DataLossError(absl::StrCat(
        "PAGE_HASH_LIST for region ", list.region_index(), " pages [", list.first_page(),
        ", +", list.hashes_size(), ") does not answer the query for region ",
        query.region_index(), " pages [", query.first_page(), ", +", query.count(), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckPageHashListDigest(const ChunkMismatch& mismatch,
                                     const proto::PageHashList& list) {
  const uint64_t digest =
      ChunkDigest(std::span<const uint64_t>(list.hashes().data(), list.hashes_size()));
  if (digest == mismatch.source_digest) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "PAGE_HASH_LIST for region ", list.region_index(), " pages [", list.first_page(), ", +",
      list.hashes_size(), ") hashes to 0x", absl::Hex(digest),
      ", not to the chunk digest the source's completion gave (0x",
      absl::Hex(mismatch.source_digest), "): the pages it names cannot be trusted"));
}

absl::Status MismatchError(const ChunkMismatch& mismatch, const proto::RegionInfo& region,
                           const std::vector<uint64_t>& pages, size_t regions_differing) {
  std::vector<std::string> named;
  for (size_t i = 0; i < pages.size() && i < kMismatchPagesNamed; ++i) {
    named.push_back(absl::StrCat(pages[i], " (guest 0x",
                                 absl::Hex(region.guest_addr() + pages[i] * kHashedPageSize),
                                 ")"));
  }
  if (pages.size() > named.size()) {
    named.back() += absl::StrCat(" and ", pages.size() - named.size(), " more");
  }
  return absl::DataLossError(absl::StrCat(
      "region ", mismatch.region, " (guest 0x", absl::Hex(region.guest_addr()), ", ",
      region.size(), " bytes) does not hold what the source sent: ",
      pages.empty() ? absl::StrCat("pages [", mismatch.first_page, ", +", mismatch.count,
                                   ") differ")
                    : absl::StrCat("page", pages.size() > 1 ? "s " : " ",
                                   absl::StrJoin(named, ", "), " differ",
                                   pages.size() > 1 ? "" : "s"),
      regions_differing > 1 ? absl::StrCat(" (", regions_differing, " regions differ)")
                            : ""));
}

absl::Status ExplainMismatch(const std::vector<ChunkMismatch>& differ,
                             const proto::PageHashList& list, const PageHashes& landed,
                             const proto::RegionInfo& region) {
  const ChunkMismatch& first = differ.front();
  if (absl::Status s = CheckPageHashList(QueryFor(first), list); !s.ok()) return s;
  if (absl::Status s = CheckPageHashListDigest(first, list); !s.ok()) return s;
  const std::vector<uint64_t> pages = DifferingPages(
      landed, first.first_page, std::span<const uint64_t>(list.hashes().data(), list.hashes_size()),
      static_cast<size_t>(list.hashes_size()));
  return MismatchError(first, region, pages, differ.size());
}

}  // namespace livemig
