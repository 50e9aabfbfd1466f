// File: tools/cli/connection_flags.h
//
// The flags both `livemig` commands use to reach each other: where, as
// --listen=HOST:PORT (receive) or --connect=HOST:PORT (send), or --unix=PATH
// instead of either; and --io-timeout-s, the deadline of every network read
// and write.
//
// Errors: InvalidArgument, the message naming the flag as the user typed it
// ("--connect: bad endpoint ...", "--io-timeout-s=0: ...").
//
// Thread safety: pure functions.
#ifndef LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_
#define LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/transport/endpoint.h"

namespace livemig::cli {

// The endpoint of `tcp` (the value of the flag named `tcp_flag`, "listen" or
// "connect") or of `unix_path` (--unix): exactly one of them must be given.
[[nodiscard]] absl::StatusOr<Endpoint> EndpointFromFlags(const char* tcp_flag,
                                                         const std::string& tcp,
                                                         const std::string& unix_path);

// --io-timeout-s: a finite number of seconds above 0.
[[nodiscard]] absl::StatusOr<absl::Duration> IoTimeoutFromFlag(double seconds);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_
