// File: core/internal/mapping.h
//
// The untemplated half of MmapRegion: validating and performing mmap(2), and
// owning the result. MmapRegion<B> (core/mmap_region.h) adds the tracker.
//
// Thread safety: move-only; const methods may be called concurrently.
#ifndef LIVEMIG_CORE_INTERNAL_MAPPING_H_
#define LIVEMIG_CORE_INTERNAL_MAPPING_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "core/file_offset.h"

namespace livemig::core_internal {

// sysconf(_SC_PAGESIZE), cached.
size_t SystemPageSize();

// Identity of the file behind a mapping, taken once at map time, so overlap
// checks compare files (st_dev/st_ino) and byte ranges, not fd numbers.
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
};

class Mapping {
 public:
  // Validates and maps. With a file: refuses MAP_ANONYMOUS, an offset that is
  // not page-aligned, start + size overflowing, and (for regular files) a file
  // shorter than start + size (which would SIGBUS on access). Without a file:
  // adds MAP_ANONYMOUS. Always refuses size 0 and MAP_FIXED.
  [[nodiscard]] static absl::StatusOr<Mapping> Map(
      const std::optional<FileOffset>& file, size_t size, int prot, int flags);

  // Wraps an externally managed mapping: never unmapped. Refuses a null or
  // non-page-aligned address and size 0.
  [[nodiscard]] static absl::StatusOr<Mapping> Wrap(void* addr, size_t size);

  ~Mapping();
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  uint8_t* addr() const { return addr_; }
  size_t size() const { return size_; }
  bool owned() const { return owned_; }
  const std::optional<FileIdentity>& file_identity() const { return identity_; }

 private:
  Mapping(uint8_t* addr, size_t size, bool owned,
          std::optional<FileIdentity> identity)
      : addr_(addr), size_(size), owned_(owned), identity_(identity) {}

  uint8_t* addr_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;  // True iff the destructor must munmap.
  std::optional<FileIdentity> identity_;
};

}  // namespace livemig::core_internal

#endif  // LIVEMIG_CORE_INTERNAL_MAPPING_H_
