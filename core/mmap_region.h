// File: core/mmap_region.h
//
// MmapRegion<B>: one mmap'd range of memory plus its dirty tracker `B`
// (NoBitmap or AtomicBitmap), modelled on rust-vmm vm-memory's `MmapRegion`.
//
//   LIVEMIG_ASSIGN_OR_RETURN(auto region, MmapRegion<AtomicBitmap>::Create(1 << 30));
//   LIVEMIG_RETURN_IF_ERROR(region.WriteObj<uint64_t>(42, 4096));  // value, offset:
//                                                                  // marks page 1
// (GuestMemory::WriteObj takes the address first: WriteObj(GuestAddress, value).)
//
// Ownership: a region made by Create/FromFile/Build owns its mapping and
// unmaps it in the destructor; BuildRaw wraps an externally managed mapping
// that is never unmapped. File-backed regions keep their file open (shared
// through FileOffset) for as long as the region lives. Move-only.
//
// Access: the VolatileMemory accessors (core/volatile_memory.h) are
// bounds-checked and mark the tracker after every write. `as_ptr()` gives raw,
// untracked access. Writing to a region mapped without PROT_WRITE faults, as
// any store to such a mapping would.
//
// Thread safety: a region is safe to share across threads once built: all
// accessors are const and concurrent reads/writes/harvests are allowed (the
// bytes themselves are racy by design, as guest memory is). set_hugetlbfs()
// is the one mutator; call it before sharing the region.
#ifndef LIVEMIG_CORE_MMAP_REGION_H_
#define LIVEMIG_CORE_MMAP_REGION_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "core/dirty_tracker.h"
#include "core/file_offset.h"
#include "core/internal/guest_copy.h"
#include "core/internal/mapping.h"
#include "core/volatile_memory.h"

namespace livemig {

template <DirtyTracker B = NoBitmap>
class MmapRegion : public VolatileMemory<MmapRegion<B>, typename B::Slice> {
 public:
  using Bitmap = B;
  using Slice = typename B::Slice;

  // A shared anonymous mapping (MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE),
  // readable and writable. InvalidArgument for size 0.
  [[nodiscard]] static absl::StatusOr<MmapRegion> Create(size_t size) {
    return Build(std::nullopt, size, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_NORESERVE);
  }

  // A shared, read-write mapping of `size` bytes of the file at its offset.
  // OutOfRange if the file is shorter than offset + size.
  [[nodiscard]] static absl::StatusOr<MmapRegion> FromFile(FileOffset file,
                                                           size_t size) {
    return Build(std::move(file), size, PROT_READ | PROT_WRITE, MAP_SHARED);
  }

  // The general form. No file: an anonymous mapping (MAP_ANONYMOUS is
  // added). See core_internal::Mapping::Map for every refusal.
  [[nodiscard]] static absl::StatusOr<MmapRegion> Build(
      std::optional<FileOffset> file, size_t size, int prot, int flags) {
    absl::StatusOr<core_internal::Mapping> mapping =
        core_internal::Mapping::Map(file, size, prot, flags);
    if (!mapping.ok()) return mapping.status();
    if (!file.has_value()) flags |= MAP_ANONYMOUS;
    return MmapRegion(std::move(*mapping), std::move(file), prot, flags);
  }

  // Wraps memory mapped by someone else. REQUIRES: [addr, addr + size) stays
  // mapped for the life of the region. `addr` must be page-aligned. The
  // region never unmaps it (owned() is false).
  [[nodiscard]] static absl::StatusOr<MmapRegion> BuildRaw(void* addr,
                                                           size_t size,
                                                           int prot, int flags) {
    absl::StatusOr<core_internal::Mapping> mapping =
        core_internal::Mapping::Wrap(addr, size);
    if (!mapping.ok()) return mapping.status();
    return MmapRegion(std::move(*mapping), std::nullopt, prot, flags);
  }

  MmapRegion(MmapRegion&&) noexcept = default;
  MmapRegion& operator=(MmapRegion&&) noexcept = default;
  MmapRegion(const MmapRegion&) = delete;
  MmapRegion& operator=(const MmapRegion&) = delete;

  // The first byte. Writes through this pointer are not tracked.
  uint8_t* as_ptr() const { return mapping_.addr(); }
  size_t size() const { return mapping_.size(); }
  size_t len() const { return mapping_.size(); }
  const std::optional<FileOffset>& file_offset() const { return file_; }
  int prot() const { return prot_; }
  int flags() const { return flags_; }
  bool owned() const { return mapping_.owned(); }
  const B& bitmap() const { return *bitmap_; }

  // VolatileMemory::WriteObj with its common case made short: an aligned
  // object of 1, 2, 4 or 8 bytes is one untorn store and a one-page mark
  // (MarkPageOf, without range checks). Such an object cannot straddle a
  // page: the mapping starts page-aligned and pages are at least 4 KiB.
  template <ByteValued T>
  [[nodiscard]] absl::Status WriteObj(const T& value, size_t offset) const {
    if constexpr (core_internal::kIsAtomicSized<T>) {
      if (offset <= size() && sizeof(T) <= size() - offset) {
        uint8_t* host = as_ptr() + offset;
        if (reinterpret_cast<uintptr_t>(host) % sizeof(T) == 0) [[likely]] {
          core_internal::StoreToGuest(host, value);
          bitmap_->MarkPageOf(offset);
          return absl::OkStatus();
        }
      }
    }
    return VolatileMemory<MmapRegion, Slice>::WriteObj(value, offset);
  }

  // True iff both regions map the same file (same st_dev and st_ino, whatever
  // the fd numbers) and their byte ranges in it intersect.
  template <DirtyTracker B2>
  bool FdsOverlap(const MmapRegion<B2>& other) const {
    const auto& a = mapping_.file_identity();
    const auto& b = other.mapping_identity();
    if (!a.has_value() || !b.has_value() || !file_.has_value() ||
        !other.file_offset().has_value()) {
      return false;
    }
    if (a->dev != b->dev || a->ino != b->ino) return false;
    const uint64_t a_start = file_->start();
    const uint64_t b_start = other.file_offset()->start();
    return a_start < b_start + other.size() && b_start < a_start + size();
  }

  // Records whether the mapping is backed by hugetlbfs (vm-memory keeps this
  // as a hint for the VMM; unset until someone says).
  void set_hugetlbfs(bool hugetlbfs) { hugetlbfs_ = hugetlbfs; }
  std::optional<bool> is_hugetlbfs() const { return hugetlbfs_; }

  // For the VolatileMemory mixin.
  uint8_t* volatile_base() const { return mapping_.addr(); }
  Slice volatile_tracker() const { return bitmap_->SliceAt(0); }
  const std::optional<core_internal::FileIdentity>& mapping_identity() const {
    return mapping_.file_identity();
  }

 private:
  MmapRegion(core_internal::Mapping mapping, std::optional<FileOffset> file,
             int prot, int flags)
      : mapping_(std::move(mapping)),
        file_(std::move(file)),
        prot_(prot),
        flags_(flags),
        bitmap_(std::make_unique<B>(mapping_.size(),
                                    core_internal::SystemPageSize())) {}

  core_internal::Mapping mapping_;
  std::optional<FileOffset> file_;
  int prot_;
  int flags_;
  std::optional<bool> hugetlbfs_;
  // Heap-allocated so that slices handed out stay valid when the region moves.
  std::unique_ptr<B> bitmap_;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_MMAP_REGION_H_
