#include "tools/cli/guest_memory_flags.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "core/file_offset.h"
#include "core/mmap_region.h"
#include "core/status_macros.h"
#include "migration/protocol.h"
#include "tools/cli/units.h"

namespace livemig::cli {
namespace {

// Regions are whole migration pages.
constexpr uint64_t kPage = kMigrationPageSize;

absl::Status FillRegion(const MmapRegion<AtomicBitmap>& region, const std::string& fill,
                        uint64_t seed) {
  uint8_t* p = region.as_ptr();  // Untracked: the initial state is not dirtying.
  if (fill == "keep") return absl::OkStatus();
  if (fill == "zero") {
    if (region.file_offset().has_value()) std::memset(p, 0, region.size());
    return absl::OkStatus();
  }
  if (fill == "text") {
    static constexpr char kText[] =
        "livemig moves a running guest's memory while it keeps writing. ";
    for (uint64_t i = 0; i < region.size(); ++i) p[i] = kText[i % (sizeof(kText) - 1)];
    return absl::OkStatus();
  }
  if (fill == "random") {
    std::mt19937_64 rng(seed);
    for (uint64_t i = 0; i + 8 <= region.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(p + i, &v, 8);
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--fill=", fill, ": expected random, zero, text or keep"));
}

}  // namespace

absl::StatusOr<RegionFlag> ParseRegionFlag(const std::string& text) {
  RegionFlag region;
  bool have_gpa = false, have_size = false;
  std::set<std::string> seen;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (!seen.insert(kv.first).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--region=", text, ": ", kv.first, "= is given twice"));
    }
    auto bad = [&](const absl::Status& s) {
      return absl::InvalidArgumentError(absl::StrCat("--region=", text, ": ", kv.first, ": ",
                                                     s.message()));
    };
    if (kv.first == "gpa" || kv.first == "size" || kv.first == "offset") {
      absl::StatusOr<uint64_t> v = ParseSize(kv.second);
      if (!v.ok()) return bad(v.status());
      if (kv.first == "gpa") region.gpa = *v, have_gpa = true;
      if (kv.first == "size") region.size = *v, have_size = true;
      if (kv.first == "offset") region.offset = *v;
    } else if (kv.first == "file") {
      if (kv.second.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--region=", text, ": file= needs a path (leave it out for anonymous memory)"));
      }
      region.file = kv.second;
    } else if (kv.first == "name") {
      region.name = kv.second;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--region=", text, ": unknown key \"", kv.first,
          "\"; expected gpa=ADDR,size=SIZE[,file=PATH,offset=OFF,name=REL]"));
    }
  }
  if (!have_gpa || !have_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("--region=", text, ": gpa= and size= are required"));
  }
  if (region.gpa % kPage != 0 || region.offset % kPage != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--region=", text, ": ", region.gpa % kPage != 0 ? "gpa" : "offset",
        " is not a multiple of the page size 4096"));
  }
  if (region.size > ~uint64_t{0} - region.gpa) {
    return absl::InvalidArgumentError(
        absl::StrCat("--region=", text, ": gpa + size is past the end of the address space"));
  }
  if (!region.name.empty() && region.file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--region=", text, ": name= needs file= (anonymous regions are named "
                     "by the receiver)"));
  }
  if (!region.file.empty() && region.name.empty()) {
    region.name = std::filesystem::path(region.file).filename().string();
  }
  region.text = text;
  return region;
}

// Two regions the receiver would rebuild into one file must come from one
// source file (at different offsets); anything else would mix two files'
// bytes (e.g. a/guest.mem and b/guest.mem both arrive as guest.mem).
absl::Status CheckNamesAreDistinct(const std::vector<RegionFlag>& specs) {
  for (size_t i = 0; i < specs.size(); ++i) {
    for (size_t j = i + 1; j < specs.size(); ++j) {
      if (specs[i].name.empty() || specs[i].name != specs[j].name) continue;
      struct stat a, b;
      const bool same = ::stat(specs[i].file.c_str(), &a) == 0 &&
                        ::stat(specs[j].file.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
                        a.st_ino == b.st_ino;
      if (!same) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--region=", specs[j].text, " and --region=", specs[i].text,
            " would both be rebuilt as \"", specs[i].name,
            "\" from different files: give one of them name=REL"));
      }
    }
  }
  return absl::OkStatus();
}

uint64_t DeclaredBytes(const GuestMemoryFlags& flags) {
  uint64_t total = 0;
  if (!flags.memory.empty()) {
    absl::StatusOr<uint64_t> size = ParseSize(flags.memory);
    if (!size.ok()) return 0;
    total += *size;
  }
  for (const std::string& text : flags.regions) {
    absl::StatusOr<RegionFlag> region = ParseRegionFlag(text);
    if (!region.ok() || region->size > ~uint64_t{0} - total) return 0;
    total += region->size;
  }
  return total;
}

absl::StatusOr<GuestMemory<AtomicBitmap>> BuildMemory(
    const GuestMemoryFlags& flags, std::vector<std::string>* file_names,
    const std::function<absl::Status()>& before_fill) {
  std::vector<RegionFlag> specs;
  for (const std::string& text : flags.regions) {
    LIVEMIG_ASSIGN_OR_RETURN(RegionFlag r, ParseRegionFlag(text));
    specs.push_back(r);
  }
  const std::string& memory = flags.memory;
  if (!memory.empty()) {
    absl::StatusOr<uint64_t> size = ParseSize(memory);
    if (!size.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--memory: ", size.status().message()));
    }
    RegionFlag anonymous;
    anonymous.size = *size;
    anonymous.text = "--memory=" + memory;
    specs.push_back(anonymous);
  }
  if (specs.empty()) {
    return absl::InvalidArgumentError("give --memory=SIZE or at least one --region=...");
  }
  // Guest memory sorts its regions by address; names follow that order.
  std::sort(specs.begin(), specs.end(),
            [](const RegionFlag& a, const RegionFlag& b) { return a.gpa < b.gpa; });
  LIVEMIG_RETURN_IF_ERROR(CheckNamesAreDistinct(specs));
  // How each region was asked for, for messages.
  const auto flag_of = [](const RegionFlag& spec) {
    return absl::StartsWith(spec.text, "--") ? spec.text : absl::StrCat("--region=", spec.text);
  };
  for (size_t i = 1; i < specs.size(); ++i) {
    if (specs[i].gpa - specs[i - 1].gpa < specs[i - 1].size) {  // Sorted: no underflow.
      return absl::InvalidArgumentError(absl::StrCat(flag_of(specs[i]), " overlaps ",
                                                     flag_of(specs[i - 1])));
    }
  }
  std::vector<GuestRegion<AtomicBitmap>> regions;
  const std::string& fill = flags.fill;
  if (!fill.empty() && fill != "random" && fill != "zero" && fill != "text" && fill != "keep") {
    return absl::InvalidArgumentError(
        absl::StrCat("--fill=", fill, ": expected random, zero, text or keep"));
  }
  // Unless --fill says otherwise, a file= region keeps what its file holds
  // (it is the user's guest memory: never overwritten unasked); anonymous
  // memory has nothing to keep and gets random bytes.
  std::vector<std::string> fills;
  uint64_t seed = 1;
  for (const RegionFlag& spec : specs) {
    if (spec.size == 0 || spec.size % kPage != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag_of(spec), ": size ", spec.size, " is not a non-zero multiple of 4096"));
    }
    fills.push_back(!fill.empty() ? fill : spec.file.empty() ? "random" : "keep");
    std::optional<MmapRegion<AtomicBitmap>> mmap;
    if (spec.file.empty()) {
      LIVEMIG_ASSIGN_OR_RETURN(mmap, MmapRegion<AtomicBitmap>::Create(spec.size));
      file_names->push_back("");
    } else {
      // The flag in front: "file (fd 3) is 3 bytes" alone names neither.
      const auto named = [&](const absl::Status& s) {
        return absl::Status(s.code(), absl::StrCat(flag_of(spec), ": ", s.message()));
      };
      absl::StatusOr<FileOffset> file = FileOffset::Open(spec.file, spec.offset);
      if (!file.ok()) return named(file.status());
      auto mapped = MmapRegion<AtomicBitmap>::FromFile(std::move(*file), spec.size);
      if (!mapped.ok()) return named(mapped.status());
      mmap = std::move(*mapped);
      file_names->push_back(spec.name);
    }
    LIVEMIG_ASSIGN_OR_RETURN(auto region, GuestRegion<AtomicBitmap>::Create(
                                              std::move(*mmap), GuestAddress(spec.gpa)));
    regions.push_back(std::move(region));
  }
  LIVEMIG_RETURN_IF_ERROR(before_fill());
  uint64_t total = 0;
  for (size_t i = 0; i < regions.size(); ++i) {
    if (fills[i] != "keep") total += regions[i].len();
  }
  if (total > 0) {
    std::fprintf(stderr, "livemig: filling %s of guest memory (--fill=%s)\n",
                 FormatBytes(static_cast<double>(total)).c_str(),
                 fill.empty() ? "random, file= regions kept" : fill.c_str());
  }
  for (size_t i = 0; i < regions.size(); ++i) {
    LIVEMIG_RETURN_IF_ERROR(FillRegion(regions[i].region(), fills[i], seed++));
  }
  return GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

}  // namespace livemig::cli
