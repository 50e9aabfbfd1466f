#include "tools/cli/connection_flags.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace livemig::cli {

absl::StatusOr<Endpoint> EndpointFromFlags(const char* tcp_flag, const std::string& tcp,
                                           const std::string& unix_path) {
  if (!unix_path.empty() && !tcp.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("give either --", tcp_flag, " or --unix, not both"));
  }
  if (!unix_path.empty()) return Endpoint::Unix(unix_path);
  if (tcp.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, "=HOST:PORT or --unix=PATH is required"));
  }
  absl::StatusOr<Endpoint> endpoint = Endpoint::Parse(tcp);
  if (!endpoint.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", tcp_flag, ": ", endpoint.status().message()));
  }
  return endpoint;
}

absl::StatusOr<absl::Duration> IoTimeoutFromFlag(double seconds) {
  const double s = seconds;
  if (!(s > 0) || !std::isfinite(s)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--io-timeout-s=", s, ": expected a finite number of seconds above 0"));
  }
  return absl::Seconds(s);
}

}  // namespace livemig::cli
