// File: migration/internal/open_channel.h
//
// OpenChannel: one channel of a source's migration, made ready to send. In
// order: connected (or adopted from an inherited descriptor), a SendChannel
// around it (from then on a Cancel() — `failure`'s flag — shuts it down,
// the TLS handshake included; the connect itself looks at the flag every
// 50 ms), TLS when configured, the source's Hello sent and the
// destination's answer checked (CheckDestinationHello, protocol.h), and the
// features in effect applied to the channel (compression, sending from
// guest memory with FEATURE_TORN_PAGES).
//
// Errors name the channel and the step ("channel 1: Hello: read from
// 127.0.0.1:4000: timed out after 30s ..."); a Cancel() is the failure's
// own status (Cancelled); the peer's Abort stays its own words.
//
//   LIVEMIG_ASSIGN_OR_RETURN(absl::Duration rtt,
//                            OpenChannel(plan, make_channel, &channels));
//
// Thread safety: the migration thread only.
#ifndef LIVEMIG_MIGRATION_INTERNAL_OPEN_CHANNEL_H_
#define LIVEMIG_MIGRATION_INTERNAL_OPEN_CHANNEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migration/internal/send_channel.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/tls_context.h"
#include "migration/wire/compression.h"

namespace livemig::migration_internal {

struct ChannelPlan {
  const Endpoint* destination = nullptr;  // kFd: fds[index] is adopted.
  uint32_t index = 0;
  uint32_t count = 1;
  std::string migration_id;
  const TlsContext* tls = nullptr;  // Null: plaintext.
  absl::Duration io_timeout;
  wire::CompressionSpec compression;
  size_t batch_bytes = 0;  // The compressor's input, per batch.
  Failure* failure = nullptr;
};

// Makes the SendChannel around a connection (the migration's shared state).
using MakeChannel =
    std::function<std::unique_ptr<SendChannel>(std::unique_ptr<Connection>, uint32_t index)>;

// Opens channel plan.index as the file comment says and appends it to
// `channels` as soon as it exists (so a failure later can still read what
// the peer said on it). Returns the Hello's round trip.
[[nodiscard]] absl::StatusOr<absl::Duration> OpenChannel(
    const ChannelPlan& plan, const MakeChannel& make,
    std::vector<std::unique_ptr<SendChannel>>* channels);

// `status` with "channel N: <what>: " in front (OK, and the peer's Abort,
// stay as they are).
absl::Status OnChannel(uint32_t channel, absl::string_view what, const absl::Status& status);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_OPEN_CHANNEL_H_
