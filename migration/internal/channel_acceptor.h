// File: migration/internal/channel_acceptor.h
//
// AcceptMigration: the receiver's front door. It accepts connections
// concurrently, gives each one deadline (handshake_timeout) for its TLS
// handshake and its Hello together, answers every
// valid Hello at once (the sender connects its channels one after another),
// groups the channels by migration id, and returns as soon as one migration
// has all of its channels, ordered by channel index (so channel 0 is the
// control channel whatever the accept order).
//
// Strangers never touch a real migration: a connection that sends nothing
// (handshake_timeout), junk or a Hello that fails CheckHello is answered
// with an Abort naming the problem and closed; a valid Hello of another
// migration forms its own group, dropped when no channel of it came for
// group_timeout while it is incomplete (each channel a stranger adds buys
// it one more: at most max_channels of them); a channel index given twice in one
// group is refused, and so is a migration of several channels whose Hello
// does not offer FEATURE_MULTI_CHANNEL, and so is a source asking for a
// compression codec not in accept_compression. With TLS, a connection must finish
// a mutual TLS handshake first: one whose certificate is refused is closed
// without a word (the TLS alert told it); one that speaks plaintext livemig
// ("LMIG" first) gets a plaintext Abort saying TLS is required. At most
// max_pending handshakes run at once (the rest wait in the listen backlog),
// each on its own thread, and at most max_pending + max_channels answered
// connections wait in incomplete groups (each holds a descriptor until
// group_timeout): one more drops the incomplete group that began longest
// ago, so strangers cannot lock a real source out by parking connections.
// An accept that fails for want of descriptors is retried, not the end.
//
// Thread safety: call from one thread; `cancelled` is polled (every 50 ms)
// and ends the wait with Cancelled, shutting every connection down.
#ifndef LIVEMIG_MIGRATION_INTERNAL_CHANNEL_ACCEPTOR_H_
#define LIVEMIG_MIGRATION_INTERNAL_CHANNEL_ACCEPTOR_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/transport/connection.h"
#include "migration/transport/listener.h"
#include "migration/transport/tls_context.h"
#include "migration/wire/compression.h"

namespace livemig::migration_internal {

struct AcceptOptions {
  absl::Duration accept_timeout = absl::InfiniteDuration();  // Until a complete migration.
  absl::Duration handshake_timeout = absl::Seconds(5);       // Per connection: TLS + Hello.
  absl::Duration group_timeout = absl::Seconds(30);  // Between a migration's channels.
  absl::Duration io_timeout = absl::Seconds(30);     // Writing the Hello answer.
  uint32_t max_channels = 64;
  uint32_t max_pending = 64;
  // Mutual TLS first, within handshake_timeout (borrowed; null: plaintext).
  const TlsContext* tls = nullptr;
  // Codecs a source may ask for (Hello.compression); one asking for another
  // is refused with an Abort naming it (protocol.h CheckCompressionRequest).
  std::vector<wire::Codec> accept_compression = {wire::Codec::kZstd, wire::Codec::kLz4};
};

struct AcceptedMigration {
  std::vector<std::unique_ptr<Connection>> channels;  // channels[i]: channel index i.
  std::string migration_id;
  uint64_t features = 0;  // In effect: channel 0's offer & kSupportedFeatures.
  wire::Codec compression = wire::Codec::kNone;  // Channel 0's, accepted.
};

// DeadlineExceeded when no migration completed within accept_timeout (its
// message ends with the last refusal, if any, e.g. a codec not accepted);
// Cancelled when `cancelled` was set; an Accept() error of the listener.
[[nodiscard]] absl::StatusOr<AcceptedMigration> AcceptMigration(
    Listener& listener, const AcceptOptions& options, const std::atomic<bool>& cancelled);

// While a migration runs, the front door stays answered: every connection
// that comes meanwhile is handshaken as by AcceptMigration (TLS first, the
// Hello within handshake_timeout) and refused with Abort{UNAVAILABLE "the
// destination is busy with another migration"}, at once, instead of waiting
// unanswered in the listen backlog (its source would time out, and the
// receiver would take its dead connection for the next migration). Made
// after AcceptMigration returned, on the same listener; it refuses until it
// is destroyed (accept_timeout does not apply; an accept error other than
// the listener's Close() is retried), which stops accepting and joins its
// threads.
class BusyRefuser {
 public:
  BusyRefuser(Listener& listener, AcceptOptions options);
  BusyRefuser(const BusyRefuser&) = delete;
  BusyRefuser& operator=(const BusyRefuser&) = delete;
  ~BusyRefuser();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_CHANNEL_ACCEPTOR_H_
