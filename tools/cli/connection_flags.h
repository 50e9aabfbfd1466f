// File: tools/cli/connection_flags.h
//
// The flags both `livemig` commands use to reach each other: where, as
// --listen=HOST:PORT (receive) or --connect=HOST:PORT (send), or --unix=PATH
// instead of either; and --io-timeout-s, the deadline of every network read
// and write; and --tls-dir (both) with --tls-hostname (send), mutual TLS.
//
// Errors: InvalidArgument, the message naming the flag as the user typed it
// ("--connect: bad endpoint ...", "--io-timeout-s=0: ...").
//
// Thread safety: pure functions.
#ifndef LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_
#define LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"

namespace livemig::cli {

// The endpoint of `tcp` (the value of the flag named `tcp_flag`, "listen" or
// "connect"), of `unix_path` (--unix) or of `fds` (--fd=N[,N...]: connected
// sockets inherited from the parent, one per channel): exactly one of them
// must be given.
[[nodiscard]] absl::StatusOr<Endpoint> EndpointFromFlags(const char* tcp_flag,
                                                         const std::string& tcp,
                                                         const std::string& unix_path,
                                                         const std::string& fds);

// --io-timeout-s: a finite number of seconds above 0.
[[nodiscard]] absl::StatusOr<absl::Duration> IoTimeoutFromFlag(double seconds);

// --tls-dir on receive: the destination's context, or null when `dir` is
// empty (plaintext). The error names the flag and the file.
[[nodiscard]] absl::StatusOr<std::shared_ptr<const TlsContext>> DestinationTlsFromFlags(
    const std::string& dir);

// --tls-dir and --tls-hostname on send: the source's context, or null when
// both are empty. The name checked is --tls-hostname, by default the host of
// --connect; over --unix there is none, so --tls-hostname is required.
[[nodiscard]] absl::StatusOr<std::shared_ptr<const TlsContext>> SourceTlsFromFlags(
    const std::string& dir, const std::string& hostname, const Endpoint& destination);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_CONNECTION_FLAGS_H_
