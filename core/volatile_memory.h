// File: core/volatile_memory.h
//
// Bounds-checked, dirty-tracked access to memory that is shared with code we
// do not control (guest memory), modelled on rust-vmm vm-memory's
// `VolatileMemory`, `VolatileSlice`, `VolatileRef` and `VolatileArrayRef`.
//
//   * `ByteValued`: the types that may be read from or written to guest
//     memory as raw bytes (trivially copyable).
//   * `VolatileSlice<S>`: a pointer + length + tracker slice `S`. Every write
//     through it marks the pages it touched in `S`, after the bytes are
//     written. Copyable; it borrows the mapping, which must outlive it.
//   * `VolatileRef<T, S>`, `VolatileArrayRef<T, S>`, `AtomicRef<T, S>`: typed
//     views with the same tracking rule.
//   * `VolatileMemory<Derived, S>`: the accessor mixin shared by MmapRegion
//     and VolatileSlice (GetSlice, GetRef, GetArrayRef, AlignedAsRef, ...).
//
// Errors: a range past the end is OutOfRange; offset arithmetic that would
// overflow, or a misaligned atomic/aligned access, is InvalidArgument. Nothing
// here throws or aborts on bad input.
//
// Raw-pointer accessors (as_ptr, AlignedAsMut, VolatileRef::as_ptr) hand out
// untracked access: writes through those pointers are not tracked.
//
// Thread safety: all accessors are const and may be used concurrently from
// any number of threads; concurrent accesses to the same bytes are racy by
// design (as guest memory is) but never torn for aligned 1/2/4/8-byte objects.
#ifndef LIVEMIG_CORE_VOLATILE_MEMORY_H_
#define LIVEMIG_CORE_VOLATILE_MEMORY_H_

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "core/dirty_tracker.h"
#include "core/internal/guest_copy.h"

namespace livemig {

// Types that can be copied in and out of guest memory as plain bytes.
template <typename T>
concept ByteValued = std::is_trivially_copyable_v<T> &&
                     std::default_initializable<T> && !std::is_reference_v<T>;

// Returns base + offset, or InvalidArgument if that overflows size_t.
[[nodiscard]] inline absl::StatusOr<size_t> CheckedAdd(size_t base,
                                                       size_t offset) {
  if (offset > std::numeric_limits<size_t>::max() - base) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", base, " + ", offset, " overflows"));
  }
  return base + offset;
}

template <DirtySlice S>
class VolatileSlice;
template <ByteValued T, DirtySlice S>
class VolatileRef;
template <ByteValued T, DirtySlice S>
class VolatileArrayRef;
template <typename T, DirtySlice S>
class AtomicRef;

// The accessor mixin (CRTP). `Derived` provides:
//   size_t len() const;              // bytes accessible
//   uint8_t* volatile_base() const;  // first byte
//   S volatile_tracker() const;      // tracker slice at byte 0
template <typename Derived, DirtySlice S>
class VolatileMemory {
 public:
  bool is_empty() const { return self().len() == 0; }

  // Returns base + offset if it is within [0, len()], OutOfRange if past the
  // end, InvalidArgument if it overflows.
  [[nodiscard]] absl::StatusOr<size_t> ComputeEndOffset(size_t base,
                                                        size_t offset) const {
    absl::StatusOr<size_t> end = CheckedAdd(base, offset);
    if (!end.ok()) return end.status();
    if (*end > self().len()) {
      return absl::OutOfRangeError(absl::StrCat(
          "range [", base, ", ", *end, ") is past the end of ", self().len(),
          " bytes"));
    }
    return *end;
  }

  // A slice of `count` bytes at `offset`.
  [[nodiscard]] absl::StatusOr<VolatileSlice<S>> GetSlice(size_t offset,
                                                          size_t count) const {
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, count);
    if (!end.ok()) return end.status();
    return VolatileSlice<S>(self().volatile_base() + offset, count,
                            self().volatile_tracker().SliceAt(offset));
  }

  // The whole range as one slice.
  VolatileSlice<S> AsVolatileSlice() const {
    return VolatileSlice<S>(self().volatile_base(), self().len(),
                            self().volatile_tracker());
  }

  // A reference to one T at `offset` (any alignment).
  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<VolatileRef<T, S>> GetRef(size_t offset) const {
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, sizeof(T));
    if (!end.ok()) return end.status();
    return VolatileRef<T, S>(self().volatile_base() + offset,
                             self().volatile_tracker().SliceAt(offset));
  }

  // A reference to `n` consecutive T at `offset` (any alignment).
  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<VolatileArrayRef<T, S>> GetArrayRef(
      size_t offset, size_t n) const {
    if (n > std::numeric_limits<size_t>::max() / sizeof(T)) {
      return absl::InvalidArgumentError(
          absl::StrCat(n, " elements of ", sizeof(T), " bytes overflow"));
    }
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, n * sizeof(T));
    if (!end.ok()) return end.status();
    return VolatileArrayRef<T, S>(self().volatile_base() + offset, n,
                                  self().volatile_tracker().SliceAt(offset));
  }

  // A plain pointer to a T at `offset`, which must be aligned for T.
  // Writes through the returned pointer are not tracked.
  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<const T*> AlignedAsRef(size_t offset) const {
    absl::StatusOr<T*> ptr = AlignedPtr<T>(offset);
    if (!ptr.ok()) return ptr.status();
    return static_cast<const T*>(*ptr);
  }
  // Writes through the returned pointer are not tracked: call the tracker's
  // MarkDirty yourself, or use GetRef / GetAtomicRef.
  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<T*> AlignedAsMut(size_t offset) const {
    return AlignedPtr<T>(offset);
  }

  // An atomic view of the T at `offset` (T an integral type whose
  // std::atomic_ref is lock-free; offset aligned to alignof(T)). Stores and
  // RMWs through it mark the page.
  template <typename T>
    requires std::is_integral_v<T> && std::atomic_ref<T>::is_always_lock_free
  [[nodiscard]] absl::StatusOr<AtomicRef<T, S>> GetAtomicRef(
      size_t offset) const {
    absl::StatusOr<T*> ptr = AlignedPtr<T>(offset);
    if (!ptr.ok()) return ptr.status();
    return AtomicRef<T, S>(*ptr, self().volatile_tracker().SliceAt(offset));
  }

  // Copies buf.size() bytes at `offset` into `buf`; OutOfRange (and nothing
  // copied) unless the whole range is inside.
  [[nodiscard]] absl::Status Read(std::span<uint8_t> buf, size_t offset) const {
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, buf.size());
    if (!end.ok()) return end.status();
    core_internal::CopyFromGuest(buf.data(), self().volatile_base() + offset,
                                 buf.size());
    return absl::OkStatus();
  }

  // Copies `buf` to `offset`, then marks the pages written. OutOfRange (and
  // nothing written) unless the whole range is inside.
  [[nodiscard]] absl::Status Write(std::span<const uint8_t> buf,
                                   size_t offset) const {
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, buf.size());
    if (!end.ok()) return end.status();
    core_internal::CopyToGuest(self().volatile_base() + offset, buf.data(),
                               buf.size());
    self().volatile_tracker().MarkDirty(offset, buf.size());
    return absl::OkStatus();
  }

  template <ByteValued T>
  [[nodiscard]] absl::StatusOr<T> ReadObj(size_t offset) const {
    if (offset > self().len() || sizeof(T) > self().len() - offset) {
      return OutOfRangeAt(offset, sizeof(T));
    }
    return core_internal::LoadFromGuest<T>(self().volatile_base() + offset);
  }

  template <ByteValued T>
  [[nodiscard]] absl::Status WriteObj(const T& value, size_t offset) const {
    if (offset > self().len() || sizeof(T) > self().len() - offset) {
      return OutOfRangeAt(offset, sizeof(T));
    }
    core_internal::StoreToGuest(self().volatile_base() + offset, value);
    self().volatile_tracker().MarkDirty(offset, sizeof(T));
    return absl::OkStatus();
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }

  absl::Status OutOfRangeAt(size_t offset, size_t count) const {
    return absl::OutOfRangeError(absl::StrCat(
        "access of ", count, " bytes at offset ", offset,
        " is past the end of ", self().len(), " bytes"));
  }

  template <typename T>
  absl::StatusOr<T*> AlignedPtr(size_t offset) const {
    absl::StatusOr<size_t> end = ComputeEndOffset(offset, sizeof(T));
    if (!end.ok()) return end.status();
    uint8_t* ptr = self().volatile_base() + offset;
    if (reinterpret_cast<uintptr_t>(ptr) % alignof(T) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "offset ", offset, " is not aligned to ", alignof(T), " bytes"));
    }
    return reinterpret_cast<T*>(ptr);
  }
};

// A borrowed, bounds-known range of guest memory plus the tracker slice that
// covers it. Writes mark pages after the data is written.
template <DirtySlice S = NoBitmap>
class VolatileSlice : public VolatileMemory<VolatileSlice<S>, S> {
 public:
  // REQUIRES: [addr, addr + len) is mapped for as long as the slice is used.
  VolatileSlice(uint8_t* addr, size_t len, S tracker)
      : addr_(addr), len_(len), tracker_(tracker) {}

  size_t len() const { return len_; }
  // Writes through this pointer are not tracked.
  uint8_t* as_ptr() const { return addr_; }
  const S& bitmap() const { return tracker_; }

  // `count` bytes at `offset` of this slice (same as GetSlice).
  [[nodiscard]] absl::StatusOr<VolatileSlice> SubSlice(size_t offset,
                                                       size_t count) const {
    return this->GetSlice(offset, count);
  }
  // Everything after the first `count` bytes.
  [[nodiscard]] absl::StatusOr<VolatileSlice> Offset(size_t count) const {
    if (count > len_) {
      return absl::OutOfRangeError(absl::StrCat(
          "offset ", count, " is past the end of ", len_, " bytes"));
    }
    return VolatileSlice(addr_ + count, len_ - count, tracker_.SliceAt(count));
  }

  // Copies min(len(), buf.size()) bytes from the start of the slice into
  // `buf`; returns the count.
  size_t CopyTo(std::span<uint8_t> buf) const {
    const size_t n = std::min(len_, buf.size());
    core_internal::CopyFromGuest(buf.data(), addr_, n);
    return n;
  }
  // Copies min(len(), buf.size()) bytes from `buf` to the start of the slice,
  // marks them, returns the count.
  size_t CopyFrom(std::span<const uint8_t> buf) const {
    const size_t n = std::min(len_, buf.size());
    core_internal::CopyToGuest(addr_, buf.data(), n);
    tracker_.MarkDirty(0, n);
    return n;
  }
  // Copies min(len(), dst.len()) bytes into `dst` (marking dst); returns the
  // count.
  template <DirtySlice D>
  size_t CopyToSlice(const VolatileSlice<D>& dst) const {
    const size_t n = std::min(len_, dst.len());
    core_internal::CopyGuestToGuest(dst.as_ptr(), addr_, n);
    dst.bitmap().MarkDirty(0, n);
    return n;
  }
  // Sets every byte to `value` and marks the whole slice.
  void Fill(uint8_t value) const {
    core_internal::FillGuest(addr_, value, len_);
    tracker_.MarkDirty(0, len_);
  }

  // For the VolatileMemory mixin.
  uint8_t* volatile_base() const { return addr_; }
  S volatile_tracker() const { return tracker_; }

 private:
  uint8_t* addr_;  // Borrowed.
  size_t len_;
  S tracker_;
};

// A reference to one T in guest memory.
template <ByteValued T, DirtySlice S = NoBitmap>
class VolatileRef {
 public:
  // REQUIRES: [addr, addr + sizeof(T)) is mapped while the ref is used.
  VolatileRef(uint8_t* addr, S tracker) : addr_(addr), tracker_(tracker) {}

  T Load() const { return core_internal::LoadFromGuest<T>(addr_); }
  // Stores, then marks the page(s) holding the object.
  void Store(const T& value) const {
    core_internal::StoreToGuest(addr_, value);
    tracker_.MarkDirty(0, sizeof(T));
  }
  // Writes through this pointer are not tracked.
  uint8_t* as_ptr() const { return addr_; }
  const S& bitmap() const { return tracker_; }
  VolatileSlice<S> ToSlice() const {
    return VolatileSlice<S>(addr_, sizeof(T), tracker_);
  }

 private:
  uint8_t* addr_;
  S tracker_;
};

// A reference to `len` consecutive T in guest memory.
template <ByteValued T, DirtySlice S = NoBitmap>
class VolatileArrayRef {
 public:
  VolatileArrayRef(uint8_t* addr, size_t len, S tracker)
      : addr_(addr), len_(len), tracker_(tracker) {}

  size_t len() const { return len_; }
  bool is_empty() const { return len_ == 0; }
  // Writes through this pointer are not tracked.
  uint8_t* as_ptr() const { return addr_; }

  // Element `index`; OutOfRange past the end.
  [[nodiscard]] absl::StatusOr<VolatileRef<T, S>> Ref(size_t index) const {
    if (index >= len_) return OutOfRange(index);
    return VolatileRef<T, S>(addr_ + index * sizeof(T),
                             tracker_.SliceAt(index * sizeof(T)));
  }
  [[nodiscard]] absl::StatusOr<T> Load(size_t index) const {
    if (index >= len_) return OutOfRange(index);
    return core_internal::LoadFromGuest<T>(addr_ + index * sizeof(T));
  }
  [[nodiscard]] absl::Status Store(size_t index, const T& value) const {
    if (index >= len_) return OutOfRange(index);
    core_internal::StoreToGuest(addr_ + index * sizeof(T), value);
    tracker_.MarkDirty(index * sizeof(T), sizeof(T));
    return absl::OkStatus();
  }
  // Copies min(len(), out.size()) elements out; returns the count.
  size_t CopyTo(std::span<T> out) const {
    const size_t n = std::min(len_, out.size());
    core_internal::CopyFromGuest(out.data(), addr_, n * sizeof(T));
    return n;
  }
  // Copies min(len(), in.size()) elements in, marks them; returns the count.
  size_t CopyFrom(std::span<const T> in) const {
    const size_t n = std::min(len_, in.size());
    core_internal::CopyToGuest(addr_, in.data(), n * sizeof(T));
    tracker_.MarkDirty(0, n * sizeof(T));
    return n;
  }
  VolatileSlice<S> ToSlice() const {
    return VolatileSlice<S>(addr_, len_ * sizeof(T), tracker_);
  }

 private:
  absl::Status OutOfRange(size_t index) const {
    return absl::OutOfRangeError(
        absl::StrCat("index ", index, " is past the end of ", len_, " elements"));
  }

  uint8_t* addr_;
  size_t len_;
  S tracker_;
};

// An atomic integer in guest memory. Modifications mark the page after they
// are performed, like every other tracked write.
template <typename T, DirtySlice S = NoBitmap>
class AtomicRef {
 public:
  AtomicRef(T* addr, S tracker) : ref_(*addr), tracker_(tracker) {}

  T Load(std::memory_order order = std::memory_order_seq_cst) const {
    return ref_.load(order);
  }
  void Store(T value, std::memory_order order = std::memory_order_seq_cst) const {
    ref_.store(value, order);
    tracker_.MarkDirty(0, sizeof(T));
  }
  T FetchAdd(T value, std::memory_order order = std::memory_order_seq_cst) const {
    const T old = ref_.fetch_add(value, order);
    tracker_.MarkDirty(0, sizeof(T));
    return old;
  }
  T FetchOr(T value, std::memory_order order = std::memory_order_seq_cst) const {
    const T old = ref_.fetch_or(value, order);
    tracker_.MarkDirty(0, sizeof(T));
    return old;
  }
  T Exchange(T value, std::memory_order order = std::memory_order_seq_cst) const {
    const T old = ref_.exchange(value, order);
    tracker_.MarkDirty(0, sizeof(T));
    return old;
  }
  // Marks the page only when the exchange succeeded (nothing was written
  // otherwise).
  bool CompareExchange(T& expected, T desired,
                       std::memory_order order = std::memory_order_seq_cst) const {
    const bool ok = ref_.compare_exchange_strong(expected, desired, order);
    if (ok) tracker_.MarkDirty(0, sizeof(T));
    return ok;
  }

 private:
  std::atomic_ref<T> ref_;
  S tracker_;
};

}  // namespace livemig

#endif  // LIVEMIG_CORE_VOLATILE_MEMORY_H_
