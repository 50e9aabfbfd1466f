// File: migration/fuzz/handshake_fuzzer.cc
//
// libFuzzer target for what a receiver checks before any page arrives: a
// source's Hello (protocol.h CheckHello, and the reply the receiver builds
// from it) and a RegionTable (RegionStore::Create with the limits
// ReceiverOptions give it, region_store.h). Input: one control byte, then a
// serialized protobuf message.
//
//   control bit 0  0: the message is a Hello; 1: a RegionTable
//   control bit 1  RegionTable: rewrite anonymous regions as files first, as
//                  the receiver does with anonymous_regions_as_files
//
// Invariants:
//   - CheckHello accepts exactly the Hellos its contract describes (magic,
//     versions, FEATURE_PAGE_HASHES, page size, role, channel index < count),
//     with the documented code for the first rule broken; the reply a
//     receiver builds for an accepted Hello is itself acceptable to the
//     source; PeerText of the migration id is printable and bounded; a
//     compression request is refused (FailedPrecondition) exactly when its
//     codec is unknown, and the answer to an accepted one satisfies the
//     source.
//   - RegionStore::Create accepts only tables within the documented limits:
//     dense indexes, sizes non-zero multiples of the page sizes, no overlap in
//     guest addresses or within a file, canonical relative paths of few
//     enough components, no reserved path, total size and region count under
//     the caps; an accepted file-backed region is mapped from a staging file
//     under root_dir. A refused table creates nothing, and abandoning an
//     accepted one leaves root_dir as empty as it was.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "migration/fuzz/fuzz_check.h"
#include "migration/fuzz/quiet_protobuf.h"
#include "migration/fuzz/scratch_dir.h"
#include "migration/protocol.h"
#include "migration/region_store.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig::fuzz {
namespace {

constexpr uint64_t kMaxTotalBytes = uint64_t{8} << 20;  // Keeps each input fast.
constexpr uint64_t kMaxRegions = 8;
constexpr uint64_t kMaxPathComponents = 4;
constexpr char kReserved[] = "manifest.json";

bool Printable(absl::string_view text) {
  for (const char c : text) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// The Hello rules in protocol.h's order, each with its documented code.
absl::StatusCode ExpectedHelloCode(const proto::Hello& h) {
  if (h.magic() != wire::kHelloMagic) return absl::StatusCode::kDataLoss;
  if (h.max_version() < wire::kProtocolVersion || h.min_version() > wire::kProtocolVersion) {
    return absl::StatusCode::kFailedPrecondition;
  }
  if ((h.features() & proto::FEATURE_PAGE_HASHES) == 0) {
    return absl::StatusCode::kFailedPrecondition;
  }
  if (h.page_size() != kMigrationPageSize) return absl::StatusCode::kInvalidArgument;
  if (h.role() != proto::ROLE_SOURCE) return absl::StatusCode::kInvalidArgument;
  if (h.channel_count() == 0 || h.channel_index() >= h.channel_count()) {
    return absl::StatusCode::kInvalidArgument;
  }
  return absl::StatusCode::kOk;
}

void CheckHelloInput(absl::string_view bytes) {
  proto::Hello hello;
  if (!hello.ParseFromString(std::string(bytes))) return;
  const absl::Status status = CheckHello(hello, proto::ROLE_SOURCE);
  LIVEMIG_FUZZ_CHECK(status.code() == ExpectedHelloCode(hello), "CheckHello said ",
                     status.ToString(), "; the contract says code ",
                     absl::StatusCodeToString(ExpectedHelloCode(hello)));
  const std::string id = PeerText(hello.migration_id());
  LIVEMIG_FUZZ_CHECK(Printable(id) && id.size() <= 4 * kMaxPeerText + 64,
                     "PeerText of the migration id is not printable or not bounded");
  if (!status.ok()) return;
  // What the acceptor answers (channel_acceptor.cc): the source must accept it.
  proto::Hello reply = MakeHello(proto::ROLE_DESTINATION, hello.channel_index(),
                                 hello.channel_count(), hello.migration_id());
  reply.set_features(hello.features() & kSupportedFeatures);
  const absl::Status back = CheckHello(reply, proto::ROLE_DESTINATION);
  LIVEMIG_FUZZ_CHECK(back.ok(), "the reply to an accepted Hello is refused: ", back.ToString());
  // Compression: a destination accepting both codecs refuses only a value
  // this build does not know, and its answer satisfies the source.
  const wire::Codec both[] = {wire::Codec::kZstd, wire::Codec::kLz4};
  const absl::Status codec = CheckCompressionRequest(hello, both);
  const bool known = hello.compression() >= proto::COMPRESSION_UNSPECIFIED &&
                     hello.compression() <= proto::COMPRESSION_LZ4;
  LIVEMIG_FUZZ_CHECK(codec.ok() == known, "compression ", static_cast<int>(hello.compression()),
                     ": ", codec.ToString());
  if (!codec.ok()) {
    LIVEMIG_FUZZ_CHECK(absl::IsFailedPrecondition(codec), "refused with ", codec.ToString());
    return;
  }
  if (hello.compression() != proto::COMPRESSION_UNSPECIFIED) {
    reply.set_compression(hello.compression());
  }
  const absl::Status answer =
      CheckCompressionAnswer(reply, CodecFromWire(hello.compression()).value());
  LIVEMIG_FUZZ_CHECK(answer.ok(), "the compression answer is refused: ", answer.ToString());
}

bool PowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The file-path rules of region_store.h.
bool PathAcceptable(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') return false;
  if (path.find('\0') != std::string::npos) return false;
  if (absl::EndsWith(path, kStagingSuffix) || path == kReserved) return false;
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  if (parts.size() > kMaxPathComponents) return false;
  for (absl::string_view part : parts) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

void CheckAccepted(const proto::RegionTable& table, RegionStore& store, const std::string& root) {
  const std::vector<StoredRegion>& regions = store.regions();
  LIVEMIG_FUZZ_CHECK(regions.size() == static_cast<size_t>(table.regions_size()) &&
                         !regions.empty() && regions.size() <= kMaxRegions,
                     "accepted ", regions.size(), " regions of a table of ", table.regions_size());
  uint64_t total = 0;
  std::vector<std::pair<uint64_t, uint64_t>> guest;  // [start, end)
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> files;
  for (size_t i = 0; i < regions.size(); ++i) {
    const proto::RegionInfo& info = regions[i].info;
    LIVEMIG_FUZZ_CHECK(info.index() == i, "region ", i, " has index ", info.index());
    LIVEMIG_FUZZ_CHECK(info.size() > 0 && info.size() % kMigrationPageSize == 0 &&
                           (info.page_size() == 0 ||
                            (PowerOfTwo(info.page_size()) && info.size() % info.page_size() == 0)),
                       "region ", i, " size ", info.size(), " page size ", info.page_size());
    LIVEMIG_FUZZ_CHECK(regions[i].region.size() == info.size(), "region ", i, " is mapped with ",
                       regions[i].region.size(), " bytes, not ", info.size());
    LIVEMIG_FUZZ_CHECK(info.guest_addr() + info.size() > info.guest_addr() ||
                           info.guest_addr() + info.size() == 0,
                       "region ", i, " overflows the guest address space");
    total += info.size();
    guest.emplace_back(info.guest_addr(), info.guest_addr() + info.size());
    if (info.backing() == proto::BACKING_ANONYMOUS) {
      LIVEMIG_FUZZ_CHECK(info.file_path().empty() && info.file_offset() == 0 &&
                             regions[i].staging_path.empty(),
                         "anonymous region ", i, " has a file");
      continue;
    }
    LIVEMIG_FUZZ_CHECK(info.backing() == proto::BACKING_FILE, "region ", i, " backing ",
                       info.backing());
    LIVEMIG_FUZZ_CHECK(PathAcceptable(info.file_path()), "region ", i, " path '",
                       info.file_path(), "' breaks the path rules");
    LIVEMIG_FUZZ_CHECK(info.file_offset() % kMigrationPageSize == 0 &&
                           info.file_offset() + info.size() > info.file_offset(),
                       "region ", i, " file offset ", info.file_offset());
    LIVEMIG_FUZZ_CHECK(regions[i].final_path == absl::StrCat(root, "/", info.file_path()) &&
                           regions[i].staging_path ==
                               absl::StrCat(regions[i].final_path, kStagingSuffix),
                       "region ", i, " files ", regions[i].final_path, " ",
                       regions[i].staging_path);
    std::error_code ec;
    LIVEMIG_FUZZ_CHECK(std::filesystem::is_regular_file(regions[i].staging_path, ec) &&
                           !std::filesystem::is_symlink(regions[i].staging_path, ec),
                       "region ", i, " staging file missing or not regular");
    files[info.file_path()].emplace_back(info.file_offset(), info.file_offset() + info.size());
  }
  LIVEMIG_FUZZ_CHECK(total <= kMaxTotalBytes, "accepted ", total, " bytes, above the cap");
  auto no_overlap = [](std::vector<std::pair<uint64_t, uint64_t>> ranges) {
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
      // end 0 means "up to 2^64": nothing may follow it.
      if (ranges[i - 1].second == 0 || ranges[i].first < ranges[i - 1].second) return false;
    }
    return true;
  };
  LIVEMIG_FUZZ_CHECK(no_overlap(guest), "accepted regions overlap in guest memory");
  for (const auto& [path, ranges] : files) {
    LIVEMIG_FUZZ_CHECK(no_overlap(ranges), "accepted regions overlap in file ", path);
  }
}

void CheckTableInput(absl::string_view bytes, bool anonymous_as_files) {
  proto::RegionTable table;
  if (!table.ParseFromString(std::string(bytes))) return;
  if (anonymous_as_files) {  // As receiver.cc does before creating the store.
    for (proto::RegionInfo& info : *table.mutable_regions()) {
      if (info.backing() != proto::BACKING_ANONYMOUS) continue;
      info.set_backing(proto::BACKING_FILE);
      info.set_file_path(DefaultRegionFileName(info.index()));
      info.set_file_offset(0);
    }
  }
  const std::string root = absl::StrCat(ScratchDir::Get(), "/root");
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  RegionStoreOptions options;
  options.root_dir = root;
  options.max_total_bytes = kMaxTotalBytes;
  options.max_regions = kMaxRegions;
  options.max_path_components = kMaxPathComponents;
  options.reserved_paths = {kReserved};
  {
    absl::StatusOr<RegionStore> store = RegionStore::Create(table, kMigrationPageSize, options);
    if (store.ok()) {
      CheckAccepted(table, *store, root);
    } else {
      const absl::StatusCode code = store.status().code();
      LIVEMIG_FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                             code == absl::StatusCode::kResourceExhausted ||
                             code == absl::StatusCode::kPermissionDenied,
                         "a refused table: ", store.status().ToString());
    }
  }  // The store is abandoned here.
  LIVEMIG_FUZZ_CHECK(std::filesystem::is_empty(root, ec),
                     "a refused or abandoned table left files in root_dir");
  ScratchDir::Empty(root);
}

}  // namespace
}  // namespace livemig::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  livemig::fuzz::QuietProtobuf();
  if (size == 0) return 0;
  const absl::string_view message(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) == 0) {
    livemig::fuzz::CheckHelloInput(message);
  } else {
    livemig::fuzz::CheckTableInput(message, (data[0] & 2) != 0);
  }
  return 0;
}
