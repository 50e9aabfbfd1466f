// File: migration/protocol.h
//
// The livemig migration protocol: who sends what, on which channel, in which
// order, and the receiver's states. Frames are described in
// migration/wire/frame_format.h, messages in proto/migration.proto.
//
// Protocol version 2. A migration uses N channels (stream connections, TCP
// or Unix), N >= 1. Channel 0 is also the control channel.
//
// Mutual TLS (optional, both sides configured: SenderOptions::tls,
// ReceiverOptions::tls, transport/tls_context.h): every channel runs a TLS
// 1.3 handshake right after it connects, before its Hello; both sides
// verify the other's certificate against their CA, the source also the
// destination's name. Everything below then travels inside TLS, unchanged.
// The destination peeks at each new connection's first 4 bytes: "LMIG" (a
// plaintext Hello's frame magic) is answered with a plaintext
// Abort{FAILED_PRECONDITION, "this destination requires TLS ..."}; anything
// else must complete the handshake within the handshake deadline, or is
// closed (a refused certificate learns it from the TLS alert). A TLS source
// that gets plaintext back fails with FailedPrecondition ("does not speak
// TLS 1.3"). No frame is read, and no region made, before the handshake.
//
//   Sender (source)                                  Receiver (destination)
//   ---- setup -------------------------------------------------------------
//   [every channel: TLS 1.3 handshake, mutual, when configured]
//   ch0: Hello{index 0, count N, id, features} ---> checks magic, version,
//                                              <---  Hello{DESTINATION, the
//                                                    features both speak}
//                                                    | Abort (to that
//                                                    connection only: a bad
//                                                    or silent one is
//                                                    dropped, the receiver
//                                                    goes on waiting)
//   chK: Hello{index K, count N, id}  (K>0)    --->  grouped by id; K unused;
//                                                    an incomplete group is
//                                                    dropped after an io
//                                                    timeout with no new
//                                                    channel
//                                              <---  Hello{DESTINATION} | Abort
//   The source takes a destination Hello only if it answers its own (same
//   id, index and count) and agrees to FEATURE_ZERO_PAGES (and, with N > 1,
//   FEATURE_MULTI_CHANNEL): CheckDestinationHello. Any Ack whose
//   status_code is not 0 is the destination's refusal of what it
//   acknowledges (AckRefusal): the source fails with that code and message,
//   and before the handover resumes the guest.
//   Compression (opt-in, SenderOptions::compression): every source Hello
//   says which codec it wants (Hello.compression, ZSTD or LZ4, + level for
//   logs); the destination answers with the same codec when it accepts it
//   (ReceiverOptions::accept_compression, default both), else with
//   Abort{FAILED_PRECONDITION, "... asks for zstd compression; this
//   destination accepts ..."}. A source whose answer names another codec
//   (an older destination leaves it unset) fails with FailedPrecondition
//   naming the codec. Either way before any page is sent.
//   Channels may connect in any order; channel 0 (by index) is the control
//   channel. A migration starts once all N of its channels said Hello; a
//   Hello of another id never touches it. While a migration runs (until its
//   COMMITTED is written), every other Hello is answered at once with
//   Abort{UNAVAILABLE, "the destination is busy with another migration"}
//   (internal/channel_acceptor.h, BusyRefuser). A migration id is at most
//   kMaxMigrationIdLength bytes; at most max_pending + max_channels answered
//   channels wait for the rest of their migrations at once: one more drops
//   the incomplete migration that began longest ago (its connections are
//   closed).
//   ch0: RegionTable                           --->  builds regions (staging;
//                                                    fallocate; prealloc:
//                                                    makes them resident)
//                                              <---  Ack{REGION_TABLE} | Abort
//                                                    (RESOURCE_EXHAUSTED: no
//                                                    room, before any page)
//   ---- rounds r = 0, 1, ... (r = 0 sends every page: a round 0 that ends
//        without one is Abort{DATA_LOSS} naming it, internal/round_pages.h) --
//   any: PageBatch{region, RAW|ZERO|ZSTD|LZ4,  --->  RAW: the frame checksum
//          runs, r, page_hashes (not ZERO)}          covers header + message
//          [+ page bytes, or their compressed
//          bytes: ZSTD|LZ4, only with the codec
//          agreed in the Hellos, only when the
//          batch shrank; else RAW]
//                                                    (kFramePagesHashed), so
//                                                    the message is trusted
//                                                    before any byte lands;
//                                                    each page is hashed
//                                                    where it landed (round
//                                                    0 into a file of the
//                                                    receiver's: in the
//                                                    buffer its pwrite
//                                                    copies) and must
//                                                    equal its page hash
//                                                    (else Abort{DATA_LOSS}
//                                                    naming region and page);
//                                                    both sides record every
//                                                    page's hash. A page
//                                                    arrives at most once a
//                                                    round, in any encoding
//                                                    and on any channel: a
//                                                    second arrival is
//                                                    Abort{DATA_LOSS} before
//                                                    that batch lands
//                                                    (internal/round_pages.h)
//                                                    ZSTD|LZ4: the same, but
//                                                    the payload (0 < len <
//                                                    pages x 4096, pages x
//                                                    4096 <= 64 MiB) is read
//                                                    into a buffer first and
//                                                    must decompress to
//                                                    exactly pages x 4096
//                                                    bytes (never more is
//                                                    written), else
//                                                    Abort{DATA_LOSS} naming
//                                                    region and round; then
//                                                    the RAW page-hash check
//   all: IterationMarker{r, END}               --->  each channel waits at a
//                                                    barrier until every
//                                                    channel reached END r, so
//                                                    round r+1 never lands
//                                                    before round r; the last
//                                                    to arrive refreshes the
//                                                    page-hash digests (and,
//                                                    durable, flushes); it
//                                                    gives up only after an
//                                                    io timeout in which no
//                                                    channel read a byte
//                                              <---  ch0: Ack{ROUND r,
//                                                    expected_completion_us}
//   The source waits for Ack{ROUND r} before deciding on round r+1: its
//   switchover rule adds expected_completion_us to the pause it budgets.
//   It waits an io timeout at a time, again while its sockets still hold
//   bytes the peer keeps taking (SIOCOUTQ going down), within the pre-copy
//   timeout.
//   Torn pages (FEATURE_TORN_PAGES, in effect when both Hellos offer it; a
//   source offers it unless it compresses, and a destination never agrees
//   to it with a source that asks for a codec, AgreedFeatures): the source
//   hashes each RAW page in guest memory and hands the kernel the guest's
//   own bytes, no copy. In a pre-copy round the guest may write a page
//   between its hash and its send, so what lands may not match: the
//   receiver then keeps what landed
//   (recording its own hash of it) instead of aborting, and notes the page
//   torn (internal/torn_pages.h). Why nothing is lost: a page written after
//   its round's harvest is marked dirty by that write, so it is harvested
//   and sent again, and the final round is sent paused, where nothing
//   writes; a later round that lands the page whole clears the note. A page
//   still noted when the final round's END has arrived on every channel is
//   Abort{DATA_LOSS} naming it ("... did not land as sent ..., and it was
//   not sent again"): corruption on the wire, or a write the source never
//   marked dirty, fails the migration before the handover, with any verify
//   mode, as the check on arrival did. The source's page hashes stay those
//   of the bytes it hashed; Completion and the source audit compare them as
//   before.
//   ---- switchover (source paused) ----------------------------------------
//   any: PageBatch ... (final round)
//   all: IterationMarker{r, END, final}
//        (verify=full: the source re-hashes its memory; a page that differs
//        from its last page hash fails here, before anything else is sent)
//   ch0: DeviceState{id, version, bytes,       --->  each checked against its
//          index i, count n, XXH3 of bytes}          hash, in order, ids
//          x n (VmControl::DeviceSections;           unique (device_state.h);
//          older sources: one, no index/hash)        else Abort{DATA_LOSS}
//   ch0: Completion{per region: root and       --->  compares with its own
//          chunk digests of the page hashes;         page hashes (work ~ the
//          none with verify=off}                     final round's pages)
//   on a mismatch, once:                       <---  PageHashQuery{region,
//                                                    first differing chunk}
//   ch0: PageHashList{the source's hashes}     --->  names the differing
//                                              <---  pages: Abort{DATA_LOSS}
//                                                    (a list that does not
//                                                    hash to the chunk's
//                                                    digest names none: it
//                                                    is not trusted)
//                                                    durable: flushes (msync,
//                                                    fsync) before answering
//                                              <---  Ack{VERIFIED} | Abort
//   The destination reads the final round on every channel before it reads
//   Completion, so the source waits for the answer as for Ack{ROUND}: an
//   io timeout at a time, again while its sockets still hold bytes the peer
//   keeps taking, within the pause budget (max_pause).
//   ---- handover (two-phase: the source decides) --------------------------
//   ch0: Ack{HANDOVER}                         --->  the commit point: renames
//                                                    staging files onto their
//                                                    final names (a file they
//                                                    replace is freed after
//                                                    COMMITTED, not in the
//                                                    pause)
//                                              <---  Ack{COMMITTED, status}
//                                                    (status != 0: nothing
//                                                    committed, the source
//                                                    resumes; a destination
//                                                    cancel after VERIFIED
//                                                    is answered so, never
//                                                    as an Abort)
//   ---- after the pause ---------------------------------------------------
//   verify=sent: the source re-hashes its      not durable: the receiver
//   (still paused) memory against its page     flushes now, and only then
//   hashes and reports pages written without   reports the migration
//   being marked dirty (the source audit)      complete
//
// Either side may send Abort{code, message} on channel 0 at any time before
// the handover (the destination: before its VERIFIED; after it, the source
// may have sent HANDOVER, and an Abort would leave it in doubt) and then
// close every channel. An Abort follows only whole
// frames: a source that stops on its own (its Cancel(), its pre-copy
// timeout cutting a round) lets every channel finish the frame it is
// writing (while its bytes move, within the write's timeout; a channel whose
// peer took nothing for 250 ms is closed mid-frame), sends
// Abort{CANCELLED "migration cancelled by the source"} or
// Abort{DEADLINE_EXCEEDED "did not converge within ..."} on channel 0 and
// only then closes the channels; if channel 0 was stopped mid-frame, its
// connections just close. A receiver whose other channel closes first waits
// for channel 0's reason while channel 0's bytes keep arriving (its last
// frame may trail the close on a slow link), until 500 ms pass without any,
// at most its read timeout. Ownership of the guest moves
// exactly once: a receiver that never reads a whole HANDOVER frame discards
// everything (the source, which did not hand over, resumes); a receiver that
// read it commits and owns the guest even if COMMITTED is lost. A source
// that sent HANDOVER but never read COMMITTED cannot tell the two apart: it
// reports the handover in doubt and leaves the guest paused, so the guest
// never runs on both sides. A receiver never reports a migration complete
// before it committed; a sender never reports success before it read
// COMMITTED with status 0.
//
// Receiver states: kAwaitHello -> kAwaitChannels -> kAwaitRegionTable ->
// kRounds -> kAwaitCompletion -> kAwaitHandover -> kCommitted, or kFailed
// from any state.
//
// Version 2 is not compatible with version 1 (whole-region digests, no
// round acknowledgements): CheckHello refuses a version-1 peer.
//
// Thread safety: the helpers below are pure functions.
#ifndef LIVEMIG_MIGRATION_PROTOCOL_H_
#define LIVEMIG_MIGRATION_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migration/page_hashes.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "migration/transport/connection.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig {

// The page size every PageRun counts in (Hello.page_size).
inline constexpr uint32_t kMigrationPageSize = 4096;

// The file a region is rebuilt into when nothing names one:
// "region-<index>.mem" under the receiver's root directory.
std::string DefaultRegionFileName(uint32_t region_index);

// Features this build speaks (proto::Feature bits).
inline constexpr uint64_t kSupportedFeatures =
    proto::FEATURE_ZERO_PAGES | proto::FEATURE_PAGE_HASHES |
    proto::FEATURE_MULTI_CHANNEL | proto::FEATURE_TORN_PAGES;
static_assert(kMigrationPageSize == kHashedPageSize);

// A fresh random migration id (Hello.migration_id): 24 hex digits, always,
// so frames that carry it have one size.
std::string NewMigrationId();

proto::Hello MakeHello(proto::Role role, uint32_t channel_index,
                       uint32_t channel_count, const std::string& migration_id);

// Checks a peer's Hello: magic (DataLoss: not a livemig peer), protocol
// version ranges overlap (FailedPrecondition naming both ranges),
// FEATURE_PAGE_HASHES offered (FailedPrecondition), page size
// (InvalidArgument), role (InvalidArgument), channel index < count
// (InvalidArgument), a migration id of at most kMaxMigrationIdLength bytes
// (InvalidArgument; a destination holds it while the migration's other
// channels come).
inline constexpr size_t kMaxMigrationIdLength = 128;
[[nodiscard]] absl::Status CheckHello(const proto::Hello& hello,
                                      proto::Role expected_role);

// Source: the destination's Hello `reply` answers `offered`, the source's
// Hello on the same channel, asking for `codec`: CheckHello, then the same
// migration id, channel index and count (FailedPrecondition naming both,
// e.g. "answers for migration \"x\", channel 1 of 2; this is migration
// \"y\", channel 0 of 2"), the codec (CheckCompressionAnswer), and the
// features this source cannot do without: FEATURE_ZERO_PAGES, and
// FEATURE_MULTI_CHANNEL with more than one channel (FailedPrecondition
// naming the feature). Returns the features in effect: offered & answered.
[[nodiscard]] absl::StatusOr<uint64_t> CheckDestinationHello(const proto::Hello& reply,
                                                             const proto::Hello& offered,
                                                             wire::Codec codec);

// An Ack whose status_code is not 0 is the peer's refusal of what it
// acknowledges (proto Ack): that code (Unknown for one this build does not
// know) and "the destination refused <what>: <its message as PeerText>".
// OK for status 0.
[[nodiscard]] absl::Status AckRefusal(const proto::Ack& ack, absl::string_view what);

// What a peer said (an Abort's or a refused commit's message), safe to print
// or log: every byte outside printable ASCII becomes \xNN, so no control
// sequence or forged line reaches a terminal, and at most kMaxPeerText bytes
// of it are kept ("... (N more bytes)").
inline constexpr size_t kMaxPeerText = 512;
std::string PeerText(absl::string_view text);

// An Abort frame's message for `status` (its code and message).
proto::Abort AbortFromStatus(const absl::Status& status, proto::Role role);
// Writes that Abort frame to `conn` within a second, ignoring failure: the
// peer may be gone already. It is the connection's last frame, so it goes
// out after Connection::Interrupt() too (unless a write stopped part-way).
void SendAbortBestEffort(Connection& conn, const absl::Status& status,
                         proto::Role role);
// An absl::StatusCode carried on the wire (Abort.code, Ack.status_code):
// `fallback` when it is not a valid non-OK code.
absl::StatusCode StatusCodeFromWire(int32_t code, absl::StatusCode fallback);
// The status a received Abort stands for: its own code (Aborted when the
// code is missing or OK), with "peer aborted: " in front of its message as
// PeerText().
absl::Status StatusFromAbort(const proto::Abort& abort);
// True for a status StatusFromAbort() made: the peer's own words, which
// need no context of ours in front.
inline constexpr absl::string_view kPeerAborted = "peer aborted: ";
bool IsFromAbort(const absl::Status& status);

// Reads one payload-less frame from `conn` and parses it into `out`, which
// must be the message for `type`. An Abort frame instead becomes
// StatusFromAbort(); any other type is DataLoss naming both types.
[[nodiscard]] absl::Status ReadExpected(Connection& conn, wire::FrameType type,
                                        google::protobuf::MessageLite* out,
                                        absl::Duration timeout);
// The first whole Abort frame among the frames back to back in `bytes`
// (which starts at a frame boundary), if any: what a failed peer said last.
std::optional<proto::Abort> FindAbort(absl::string_view bytes);

// Compression in the Hello (see the diagram above). Hello.compression for
// `codec`, and back: unset and COMPRESSION_NONE are kNone; a value this
// build does not know is FailedPrecondition.
proto::Compression CompressionToWire(wire::Codec codec);
[[nodiscard]] absl::StatusOr<wire::Codec> CodecFromWire(proto::Compression compression);
// The PageBatch encoding of a codec (REQUIRES: not kNone).
proto::Encoding EncodingFor(wire::Codec codec);
// Sets the source's request in `hello` (nothing for kNone). A compressing
// source sends stable copies, so it withdraws FEATURE_TORN_PAGES.
void OfferCompression(const wire::CompressionSpec& spec, proto::Hello* hello);
// Destination: the features it agrees to for a source's Hello: those both
// speak, less FEATURE_TORN_PAGES when the source asks for a codec (its pages
// go from stable copies: a page that does not match its hash is corruption,
// never a tear, whatever such a source claims).
uint64_t AgreedFeatures(const proto::Hello& source_hello);
// Destination: the source's Hello asks for a codec in `accepted` (or for
// none). FailedPrecondition naming the codec asked for and the accepted
// ones otherwise.
[[nodiscard]] absl::Status CheckCompressionRequest(const proto::Hello& hello,
                                                   absl::Span<const wire::Codec> accepted);
// Source: the destination's answer carries the codec asked for.
// FailedPrecondition naming it otherwise.
[[nodiscard]] absl::Status CheckCompressionAnswer(const proto::Hello& reply,
                                                  wire::Codec asked);

// ReadExpected for a frame whose start was read already.
[[nodiscard]] absl::Status ParseExpected(const wire::IncomingFrame& frame,
                                         wire::FrameType type,
                                         google::protobuf::MessageLite* out);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_PROTOCOL_H_
