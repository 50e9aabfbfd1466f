#include "migration/internal/open_channel.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "migration/protocol.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

absl::Status OnChannel(uint32_t channel, absl::string_view what, const absl::Status& status) {
  if (status.ok() || IsFromAbort(status)) return status;
  return absl::Status(status.code(),
                      absl::StrCat("channel ", channel, ": ", what, ": ", status.message()));
}

absl::StatusOr<absl::Duration> OpenChannel(const ChannelPlan& plan, const MakeChannel& make,
                                           std::vector<std::unique_ptr<SendChannel>>* channels) {
  const uint32_t i = plan.index;
  // A Cancel() that cut a step short is the failure's own status.
  const auto step = [&](absl::string_view what, const absl::Status& status) -> absl::Status {
    if (plan.failure->failed()) return plan.failure->Get();
    return OnChannel(i, what, status);
  };
  // Made first: a bad level is refused before anything is sent.
  std::unique_ptr<wire::BatchCompressor> compressor;
  if (plan.compression.codec != wire::Codec::kNone) {
    LIVEMIG_ASSIGN_OR_RETURN(compressor,
                             wire::BatchCompressor::Create(plan.compression, plan.batch_bytes));
  }
  const Endpoint& to = *plan.destination;
  absl::StatusOr<std::unique_ptr<Connection>> conn =
      to.kind == Endpoint::Kind::kFd
          ? Connection::FromFd(to.fds[i])
          : Connection::Connect(to, plan.io_timeout, plan.failure->flag());
  LIVEMIG_RETURN_IF_ERROR(step("connect", conn.status()));
  channels->push_back(make(*std::move(conn), i));
  SendChannel& channel = *channels->back();
  Connection& c = channel.connection();
  if (plan.tls != nullptr) {
    LIVEMIG_RETURN_IF_ERROR(step("TLS handshake", c.StartTls(*plan.tls, plan.io_timeout)));
  }
  const absl::Time hello_start = absl::Now();
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, i, plan.count, plan.migration_id);
  OfferCompression(plan.compression, &hello);
  proto::Hello reply;
  absl::Status said = wire::WriteFrame(c, wire::FrameType::kHello, hello, plan.io_timeout);
  if (said.ok()) said = ReadExpected(c, wire::FrameType::kHello, &reply, plan.io_timeout);
  LIVEMIG_RETURN_IF_ERROR(step("Hello", said));
  const absl::Duration rtt = absl::Now() - hello_start;
  const absl::StatusOr<uint64_t> agreed =
      CheckDestinationHello(reply, hello, plan.compression.codec);
  LIVEMIG_RETURN_IF_ERROR(OnChannel(i, "Hello", agreed.status()));
  if (compressor != nullptr) channel.EnableCompression(std::move(compressor));
  if (*agreed & proto::FEATURE_TORN_PAGES) channel.SendFromGuestMemory();
  return rtt;
}

}  // namespace livemig::migration_internal
