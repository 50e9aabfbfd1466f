// File: core/internal/guest_copy.h
//
// The only code that moves bytes in and out of guest memory. Guest memory is
// shared with code we do not control (the guest, other VMM threads, the
// migration sender reading it while it changes), so every access here is, by
// contract, a racy "volatile" access, as in vm-memory:
//
//   * Naturally aligned 1/2/4/8-byte objects are moved with a single relaxed
//     atomic access: never torn, never elided, never fused.
//   * Larger or unaligned copies use memcpy (rep movsb / vector moves), and a
//     compiler barrier keeps them from being elided or reordered away.
//   * Under ThreadSanitizer the bulk copies become relaxed atomic byte/word
//     loops, so TSan checks livemig's synchronization (bitmap marks, harvests,
//     pause) instead of reporting the guest's own intended races.
#ifndef LIVEMIG_CORE_INTERNAL_GUEST_COPY_H_
#define LIVEMIG_CORE_INTERNAL_GUEST_COPY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace livemig::core_internal {

inline void CompilerBarrier() { asm volatile("" ::: "memory"); }

#if defined(__SANITIZE_THREAD__)
inline void RelaxedCopy(void* dst, const void* src, size_t n) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  size_t i = 0;
  if ((reinterpret_cast<uintptr_t>(d) % 8) == (reinterpret_cast<uintptr_t>(s) % 8)) {
    for (; i < n && (reinterpret_cast<uintptr_t>(d + i) % 8) != 0; ++i) {
      __atomic_store_n(d + i, __atomic_load_n(s + i, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    }
    for (; i + 8 <= n; i += 8) {
      __atomic_store_n(reinterpret_cast<uint64_t*>(d + i),
                       __atomic_load_n(reinterpret_cast<const uint64_t*>(s + i),
                                       __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    }
  }
  for (; i < n; ++i) {
    __atomic_store_n(d + i, __atomic_load_n(s + i, __ATOMIC_RELAXED),
                     __ATOMIC_RELAXED);
  }
}
inline void RelaxedFill(void* dst, uint8_t value, size_t n) {
  auto* d = static_cast<uint8_t*>(dst);
  for (size_t i = 0; i < n; ++i) __atomic_store_n(d + i, value, __ATOMIC_RELAXED);
}
#endif

// Copies n bytes from guest memory `src` into ordinary memory `dst`.
inline void CopyFromGuest(void* dst, const void* src, size_t n) {
  if (n == 0) return;  // Empty spans may carry a null data().
#if defined(__SANITIZE_THREAD__)
  RelaxedCopy(dst, src, n);
#else
  std::memcpy(dst, src, n);
  CompilerBarrier();
#endif
}

// Copies n bytes from ordinary memory `src` into guest memory `dst`.
inline void CopyToGuest(void* dst, const void* src, size_t n) {
  if (n == 0) return;  // Empty spans may carry a null data().
#if defined(__SANITIZE_THREAD__)
  RelaxedCopy(dst, src, n);
#else
  CompilerBarrier();
  std::memcpy(dst, src, n);
  CompilerBarrier();
#endif
}

// Copies between two guest ranges. Normal builds use memmove; under TSan the
// copy runs front to back, so overlapping ranges are only exact there when
// dst < src. Callers copy between distinct slices.
inline void CopyGuestToGuest(void* dst, const void* src, size_t n) {
  if (n == 0) return;  // Empty spans may carry a null data().
#if defined(__SANITIZE_THREAD__)
  RelaxedCopy(dst, src, n);
#else
  CompilerBarrier();
  std::memmove(dst, src, n);
  CompilerBarrier();
#endif
}

inline void FillGuest(void* dst, uint8_t value, size_t n) {
  if (n == 0) return;  // Empty spans may carry a null data().
#if defined(__SANITIZE_THREAD__)
  RelaxedFill(dst, value, n);
#else
  CompilerBarrier();
  std::memset(dst, value, n);
  CompilerBarrier();
#endif
}

template <typename T>
inline constexpr bool kIsAtomicSized =
    sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8;

template <typename U>
using UintOfSize = std::conditional_t<
    sizeof(U) == 1, uint8_t,
    std::conditional_t<sizeof(U) == 2, uint16_t,
                       std::conditional_t<sizeof(U) == 4, uint32_t, uint64_t>>>;

// Loads a trivially copyable T from guest memory: one untorn access when T is
// 1/2/4/8 bytes and `src` is aligned to sizeof(T), a copy otherwise.
template <typename T>
inline T LoadFromGuest(const void* src) {
  T value;
  if constexpr (kIsAtomicSized<T>) {
    if (reinterpret_cast<uintptr_t>(src) % sizeof(T) == 0) {
      using U = UintOfSize<T>;
      U bits = __atomic_load_n(static_cast<const U*>(src), __ATOMIC_RELAXED);
      std::memcpy(&value, &bits, sizeof(T));
      return value;
    }
  }
  CopyFromGuest(&value, src, sizeof(T));
  return value;
}

// Stores a trivially copyable T into guest memory, untorn when aligned.
template <typename T>
inline void StoreToGuest(void* dst, const T& value) {
  if constexpr (kIsAtomicSized<T>) {
    if (reinterpret_cast<uintptr_t>(dst) % sizeof(T) == 0) {
      using U = UintOfSize<T>;
      U bits;
      std::memcpy(&bits, &value, sizeof(T));
      __atomic_store_n(static_cast<U*>(dst), bits, __ATOMIC_RELAXED);
      return;
    }
  }
  CopyToGuest(dst, &value, sizeof(T));
}

}  // namespace livemig::core_internal

#endif  // LIVEMIG_CORE_INTERNAL_GUEST_COPY_H_
