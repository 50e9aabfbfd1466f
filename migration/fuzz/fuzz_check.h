// File: migration/fuzz/fuzz_check.h
//
// LIVEMIG_FUZZ_CHECK(cond, message...): the invariant a fuzz target asserts.
// A violated invariant is a bug in the code under test, so it must stop the
// run the way a sanitizer does: print what failed (the pieces of `message`
// are absl::StrCat arguments) and abort(), which libFuzzer turns into a crash
// artifact and the corpus replay tests into a failed test. Not assert():
// replay tests and fuzzers may be built with NDEBUG.
//
// Thread safety: the macro has no state.
#ifndef LIVEMIG_MIGRATION_FUZZ_FUZZ_CHECK_H_
#define LIVEMIG_MIGRATION_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

#define LIVEMIG_FUZZ_CHECK(cond, ...)                                         \
  do {                                                                        \
    if (!(cond)) {                                                            \
      const std::string livemig_fuzz_why = absl::StrCat(__VA_ARGS__);         \
      std::fprintf(stderr, "%s:%d: fuzz invariant violated: %s\n  %s\n",      \
                   __FILE__, __LINE__, #cond, livemig_fuzz_why.c_str());      \
      std::fflush(stderr);                                                    \
      std::abort();                                                           \
    }                                                                         \
  } while (0)

#endif  // LIVEMIG_MIGRATION_FUZZ_FUZZ_CHECK_H_
