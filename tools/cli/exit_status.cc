#include "tools/cli/exit_status.h"

#include <cstdio>

namespace livemig::cli {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "livemig: %s\n", status.ToString().c_str());
  return kExitFailed;
}

// Bad usage exits 2, as --help says (1 is "the migration failed").
int Usage(const absl::Status& status) {
  std::fprintf(stderr, "livemig: %s\n", status.ToString().c_str());
  return kExitUsage;
}

}  // namespace livemig::cli
