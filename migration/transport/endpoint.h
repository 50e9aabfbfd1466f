// File: migration/transport/endpoint.h
//
// Endpoint: where a migration channel listens or connects. A plain value type
// (TCP host and port, a Unix socket path, or already connected stream
// sockets a VMM's manager handed over, one per channel, as QEMU's "fd:"
// URI) with a textual form used by command lines and error messages:
//
//   "127.0.0.1:7000"   "localhost:7000"   "[::1]:7000"   "unix:/run/mig.sock"
//   "fd:3,4"           (channel 0 on descriptor 3, channel 1 on 4)
//
// Descriptors are borrowed: a Connection made from one works on its own
// dup(), so the caller closes its descriptors whenever it likes.
//
// Nothing here touches the network: names are resolved by Connection::Connect
// and Listener::Listen.
// Ownership: an Endpoint owns its strings. Thread safety: a value type; const
// methods may be called concurrently.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_ENDPOINT_H_
#define LIVEMIG_MIGRATION_TRANSPORT_ENDPOINT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>
#include <string_view>

#include "absl/status/statusor.h"

namespace livemig {

struct Endpoint {
  enum class Kind { kTcp, kUnix, kFd };

  Kind kind = Kind::kTcp;
  std::string host;   // kTcp: "127.0.0.1", "::1", "localhost" (no brackets).
  uint16_t port = 0;  // kTcp; 0 = pick a free port when listening.
  std::string path;   // kUnix: the socket file.
  std::vector<int> fds;  // kFd: connected stream sockets, by channel index.

  // The longest Unix socket path the kernel accepts (sizeof sun_path - 1).
  static constexpr size_t kMaxUnixPathLength = 107;

  static Endpoint Tcp(std::string host, uint16_t port);
  static Endpoint Unix(std::string path);
  static Endpoint Fds(std::vector<int> fds);

  // Parses "HOST:PORT", "[IPV6]:PORT", "unix:PATH" or "fd:N[,N...]"
  // (decimal descriptors >= 0, no repeats). PORT is decimal,
  // 0..65535 (0 only makes sense for listening). InvalidArgument, naming the
  // text, for anything else: empty host or path, missing or bad port, an
  // unbracketed IPv6 address, a path longer than kMaxUnixPathLength.
  [[nodiscard]] static absl::StatusOr<Endpoint> Parse(std::string_view text);

  // The form Parse accepts: "127.0.0.1:7000", "[::1]:7000", "unix:/x.sock".
  std::string ToString() const;

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_TRANSPORT_ENDPOINT_H_
