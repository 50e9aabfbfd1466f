// File: migration/fuzz/quiet_protobuf.h
//
// QuietProtobuf(): stops protobuf's own logging for the process. Fuzzed
// messages make protobuf log an ERROR line for every string field that is not
// UTF-8 (proto3 refuses to parse those); at tens of thousands of inputs a
// second that is most of a fuzz run's time and log. Parse failures are still
// reported through the return values the targets check.
// Thread safety: call before the first parse, or from one thread.
#ifndef LIVEMIG_MIGRATION_FUZZ_QUIET_PROTOBUF_H_
#define LIVEMIG_MIGRATION_FUZZ_QUIET_PROTOBUF_H_

#include "google/protobuf/stubs/logging.h"

namespace livemig::fuzz {

inline void QuietProtobuf() {
  static const bool done = [] {
    google::protobuf::SetLogHandler(nullptr);  // nullptr: discard.
    return true;
  }();
  (void)done;
}

}  // namespace livemig::fuzz

#endif  // LIVEMIG_MIGRATION_FUZZ_QUIET_PROTOBUF_H_
