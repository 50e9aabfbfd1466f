// File: core/guest_memory.h
//
// Guest physical memory: GuestAddress, GuestRegion<B> (an MmapRegion placed
// at a guest physical address) and GuestMemory<B> (a sorted set of
// non-overlapping regions with address lookup and reads/writes that may cross
// region boundaries).
//
//   std::vector<GuestRegion<AtomicBitmap>> regions;
//   regions.push_back(*GuestRegion<AtomicBitmap>::Create(
//       *MmapRegion<AtomicBitmap>::Create(1 << 30), GuestAddress(0)));
//   ASSIGN_OR_RETURN(auto memory, GuestMemory<AtomicBitmap>::FromRegions(
//                                     std::move(regions)));
//   RETURN_IF_ERROR(memory.WriteObj<uint64_t>(GuestAddress(0x1000), 7));
//
// Every write marks the owning region's tracker after the bytes are written;
// each region's bitmap is reachable through regions()[i].bitmap() for the
// migration loop to harvest.
//
// Errors: an access that is not entirely inside mapped guest memory is
// OutOfRange, naming the first address that is not, and nothing is read or
// written; address arithmetic that overflows is InvalidArgument.
//
// Thread safety: immutable after FromRegions; every accessor is const and
// may run concurrently from any number of threads. Move-only.
#ifndef LIVEMIG_CORE_GUEST_MEMORY_H_
#define LIVEMIG_CORE_GUEST_MEMORY_H_

#include <algorithm>
#include <compare>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/mmap_region.h"

namespace livemig {

// A guest physical address (a strong type, so it never mixes with offsets).
struct GuestAddress {
  constexpr GuestAddress() = default;
  constexpr explicit GuestAddress(uint64_t v) : value(v) {}
  auto operator<=>(const GuestAddress&) const = default;

  uint64_t value = 0;
};

template <DirtyTracker B = NoBitmap>
class GuestRegion {
 public:
  // Places `region` at `start`. InvalidArgument if start + size overflows the
  // 64-bit guest address space.
  [[nodiscard]] static absl::StatusOr<GuestRegion> Create(MmapRegion<B> region,
                                                          GuestAddress start) {
    if (region.size() - 1 > std::numeric_limits<uint64_t>::max() - start.value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "region at guest address 0x", absl::Hex(start.value), " of ",
          region.size(), " bytes overflows the guest address space"));
    }
    return GuestRegion(std::move(region), start);
  }

  GuestAddress start_addr() const { return start_; }
  // The last byte's address (inclusive, so a region ending at 2^64 fits).
  GuestAddress last_addr() const {
    return GuestAddress(start_.value + (region_.size() - 1));
  }
  uint64_t len() const { return region_.size(); }
  const MmapRegion<B>& region() const { return region_; }
  const B& bitmap() const { return region_.bitmap(); }

  bool Contains(GuestAddress addr) const {
    return addr >= start_ && addr <= last_addr();
  }
  // The byte offset of `addr` in this region. REQUIRES: Contains(addr).
  size_t OffsetOf(GuestAddress addr) const {
    return static_cast<size_t>(addr.value - start_.value);
  }

 private:
  GuestRegion(MmapRegion<B> region, GuestAddress start)
      : region_(std::move(region)), start_(start) {}

  MmapRegion<B> region_;
  GuestAddress start_;
};

template <DirtyTracker B = NoBitmap>
class GuestMemory {
 public:
  using Slice = typename B::Slice;

  // Sorts `regions` by address. InvalidArgument for an empty list or for two
  // regions that overlap (naming both).
  [[nodiscard]] static absl::StatusOr<GuestMemory> FromRegions(
      std::vector<GuestRegion<B>> regions) {
    if (regions.empty()) {
      return absl::InvalidArgumentError("guest memory needs at least one region");
    }
    std::sort(regions.begin(), regions.end(),
              [](const GuestRegion<B>& a, const GuestRegion<B>& b) {
                return a.start_addr() < b.start_addr();
              });
    for (size_t i = 1; i < regions.size(); ++i) {
      if (regions[i].start_addr() <= regions[i - 1].last_addr()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "region [0x", absl::Hex(regions[i].start_addr().value), ", 0x",
            absl::Hex(regions[i].last_addr().value), "] overlaps region [0x",
            absl::Hex(regions[i - 1].start_addr().value), ", 0x",
            absl::Hex(regions[i - 1].last_addr().value), "]"));
      }
    }
    return GuestMemory(std::move(regions));
  }

  GuestMemory(GuestMemory&&) noexcept = default;
  GuestMemory& operator=(GuestMemory&&) noexcept = default;

  size_t num_regions() const { return regions_.size(); }
  std::span<const GuestRegion<B>> regions() const { return regions_; }
  const GuestRegion<B>& region(size_t index) const { return regions_[index]; }
  // Sum of the region sizes.
  uint64_t total_size() const {
    uint64_t total = 0;
    for (const auto& r : regions_) total += r.len();
    return total;
  }

  // The region holding `addr`, or nullptr.
  const GuestRegion<B>* FindRegion(GuestAddress addr) const {
    const GuestRegion<B>& r = Candidate(addr);
    return r.Contains(addr) ? &r : nullptr;
  }

  // `count` bytes at `addr` as one slice; OutOfRange unless they lie inside a
  // single region.
  [[nodiscard]] absl::StatusOr<VolatileSlice<Slice>> GetSlice(
      GuestAddress addr, size_t count) const {
    const GuestRegion<B>* r = FindRegion(addr);
    if (r == nullptr) return Unmapped(addr);
    return r->region().GetSlice(r->OffsetOf(addr), count);
  }

  // Reads buf.size() bytes starting at `addr`, crossing region boundaries.
  [[nodiscard]] absl::Status Read(GuestAddress addr,
                                  std::span<uint8_t> buf) const {
    if (!buf.empty()) {  // Inside one region: no piecewise walk.
      if (const GuestRegion<B>* r = RegionHolding(addr, buf.size())) {
        return r->region().Read(buf, r->OffsetOf(addr));
      }
    }
    absl::Status covered = CheckCovered(addr, buf.size());
    if (!covered.ok()) return covered;
    return ForEachPiece(addr, buf.size(), [&](const GuestRegion<B>& r,
                                              size_t offset, size_t done,
                                              size_t n) {
      return r.region().Read(buf.subspan(done, n), offset);
    });
  }

  // Writes `buf` starting at `addr`, crossing region boundaries; marks each
  // region's pages after writing them. Nothing is written unless the whole
  // range is mapped.
  [[nodiscard]] absl::Status Write(GuestAddress addr,
                                   std::span<const uint8_t> buf) const {
    if (!buf.empty()) {  // Inside one region: no piecewise walk.
      if (const GuestRegion<B>* r = RegionHolding(addr, buf.size())) {
        return r->region().Write(buf, r->OffsetOf(addr));
      }
    }
    absl::Status covered = CheckCovered(addr, buf.size());
    if (!covered.ok()) return covered;
    return ForEachPiece(addr, buf.size(), [&](const GuestRegion<B>& r,
                                              size_t offset, size_t done,
                                              size_t n) {
      return r.region().Write(buf.subspan(done, n), offset);
    });
  }

  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<T> ReadObj(GuestAddress addr) const {
    if (const GuestRegion<B>* r = RegionHolding(addr, sizeof(T))) {
      return r->region().template ReadObj<T>(r->OffsetOf(addr));
    }
    T value;  // Crosses a boundary (or is unmapped): the slow path.
    absl::Status status = Read(
        addr, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!status.ok()) return status;
    return value;
  }

  template <ByteValued T>
  [[nodiscard]] absl::Status WriteObj(GuestAddress addr, const T& value) const {
    if (const GuestRegion<B>* r = RegionHolding(addr, sizeof(T))) {
      return r->region().WriteObj(value, r->OffsetOf(addr));
    }
    return Write(addr, std::span<const uint8_t>(
                           reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }

 private:
  explicit GuestMemory(std::vector<GuestRegion<B>> regions)
      : regions_(std::move(regions)) {
    // The pointers stay valid when GuestMemory moves: moving a vector hands
    // over its buffer.
    index_.reserve(regions_.size());
    for (const auto& r : regions_) index_.push_back({r.start_addr().value, &r});
  }

  // The only region that can hold `addr`: the last one starting at or below
  // it (region 0 when none does). A binary search without branches on the
  // data (each step is a conditional move) over packed (start, region)
  // pairs: every guest access starts here, so it is kept to a few
  // instructions.
  const GuestRegion<B>& Candidate(GuestAddress addr) const {
    const IndexEntry* first = index_.data();
    size_t n = index_.size();
    while (n > 1) {
      const size_t half = n / 2;
      first = first[half].start <= addr.value ? first + half : first;
      n -= half;
    }
    return *first->region;
  }

  // The region holding all of [addr, addr + count), or nullptr (unmapped, or
  // the range crosses a region boundary). REQUIRES: count > 0.
  const GuestRegion<B>* RegionHolding(GuestAddress addr, size_t count) const {
    const GuestRegion<B>& r = Candidate(addr);
    // Wraps to a huge value when addr is below the region: refused below.
    const uint64_t offset = addr.value - r.start_addr().value;
    // The same test the region's accessors make, so the compiler can drop
    // theirs after this one.
    if (offset > r.len() || count > r.len() - offset) return nullptr;
    return &r;
  }

  static absl::Status Unmapped(GuestAddress addr) {
    return absl::OutOfRangeError(absl::StrCat(
        "guest address 0x", absl::Hex(addr.value), " is not in any region"));
  }

  // OK iff every byte of [addr, addr + count) is in some region.
  absl::Status CheckCovered(GuestAddress addr, size_t count) const {
    if (count == 0) return absl::OkStatus();
    if (count - 1 > std::numeric_limits<uint64_t>::max() - addr.value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "range of ", count, " bytes at guest address 0x", absl::Hex(addr.value),
          " overflows the guest address space"));
    }
    uint64_t next = addr.value;
    uint64_t remaining = count;
    while (remaining > 0) {
      const GuestRegion<B>* r = FindRegion(GuestAddress(next));
      if (r == nullptr) return Unmapped(GuestAddress(next));
      const uint64_t avail = r->last_addr().value - next + 1;
      if (avail >= remaining) break;
      remaining -= avail;
      next += avail;
    }
    return absl::OkStatus();
  }

  // Calls fn(region, offset_in_region, bytes_done, piece_len) for each
  // region-sized piece. REQUIRES: CheckCovered(addr, count) is OK.
  template <typename Fn>
  absl::Status ForEachPiece(GuestAddress addr, size_t count, Fn&& fn) const {
    uint64_t next = addr.value;
    size_t done = 0;
    while (done < count) {
      const GuestRegion<B>* r = FindRegion(GuestAddress(next));
      const uint64_t avail = r->last_addr().value - next + 1;
      const size_t n = static_cast<size_t>(
          std::min<uint64_t>(avail, static_cast<uint64_t>(count - done)));
      absl::Status status = fn(*r, r->OffsetOf(GuestAddress(next)), done, n);
      if (!status.ok()) return status;
      done += n;
      next += n;
    }
    return absl::OkStatus();
  }

  struct IndexEntry {
    uint64_t start;                // region->start_addr().value
    const GuestRegion<B>* region;  // Points into regions_.
  };

  std::vector<GuestRegion<B>> regions_;
  std::vector<IndexEntry> index_;  // One per region, in the same order.
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_GUEST_MEMORY_H_
