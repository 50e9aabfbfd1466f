// File: core/status_macros.h
//
// Propagation macros for absl::Status / absl::StatusOr<T>. Abseil 20220623 (the
// version Debian 12 ships) has no ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN,
// so livemig defines its own, once, here.
//
//   absl::Status Load(...) {
//     LIVEMIG_RETURN_IF_ERROR(Validate(...));
//     LIVEMIG_ASSIGN_OR_RETURN(auto region, MmapRegion<>::Create(size));
//     ...
//   }
#ifndef LIVEMIG_CORE_STATUS_MACROS_H_
#define LIVEMIG_CORE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) once; returns it from the enclosing
// function if it is not OK.
#define LIVEMIG_RETURN_IF_ERROR(expr)                      \
  do {                                                     \
    ::absl::Status livemig_status_ = (expr);               \
    if (!livemig_status_.ok()) return livemig_status_;     \
  } while (0)

#define LIVEMIG_STATUS_MACROS_CONCAT_INNER(a, b) a##b
#define LIVEMIG_STATUS_MACROS_CONCAT(a, b) \
  LIVEMIG_STATUS_MACROS_CONCAT_INNER(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>) once; on error returns its status
// from the enclosing function, otherwise move-assigns the value to `lhs`
// (which may be a declaration such as `auto x`).
#define LIVEMIG_ASSIGN_OR_RETURN(lhs, rexpr)                                 \
  LIVEMIG_ASSIGN_OR_RETURN_IMPL(                                             \
      LIVEMIG_STATUS_MACROS_CONCAT(livemig_statusor_, __LINE__), lhs, rexpr)

#define LIVEMIG_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(statusor).value()

#endif  // LIVEMIG_CORE_STATUS_MACROS_H_
