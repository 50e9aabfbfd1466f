// File: migration/internal/send_channel.h
//
// SendChannel: one connection of a migration plus the worker thread that
// writes to it. The migration thread queues work (page runs of one region,
// or a round-end marker); the worker encodes each page run as ZERO runs
// (no bytes) and RAW runs, hashes every RAW page once — the hash goes into
// the batch (which vouches for the payload, frame_format.h) and into the
// migration's sent-page hashes — and writes each batch with one gathered
// write. A RAW page is hashed and sent where it is in guest memory when the
// receiver takes torn pages (SendFromGuestMemory; protocol.h), else copied
// into the channel's buffer first, so the hash and the bytes sent agree
// while the guest keeps writing. With compression enabled, each RAW batch
// is compressed from those copies into the compressor's (the hashes stay
// those of the uncompressed pages) and sent ZSTD or LZ4 when it shrank.
//
// Thread safety: Enqueue/WaitIdle/Stop are called by the migration thread;
// the worker is the only writer of the connection while it runs. Errors are
// reported through the shared Failure object, which also shuts every
// channel down so no thread stays blocked (or, when the source stops on its
// own, interrupts each at a frame boundary first, so that an Abort can say
// why).
#ifndef LIVEMIG_MIGRATION_INTERNAL_SEND_CHANNEL_H_
#define LIVEMIG_MIGRATION_INTERNAL_SEND_CHANNEL_H_

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "migration/internal/known_zero.h"
#include "migration/internal/rate_limiter.h"
#include "migration/page_hashes.h"
#include "migration/transport/connection.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::migration_internal {

// The first error of a migration, shared by all its threads.
class Failure {
 public:
  // A write under way when Stop() comes may finish while its bytes move
  // (Connection::Interrupt): this long with nothing moved cuts it.
  static constexpr absl::Duration kStopGrace = absl::Milliseconds(250);

  // Records `status` if it is the first error, then shuts the watched
  // connections down.
  void Set(absl::Status status);
  // For the source's own decisions (its Cancel(), its timeout): records
  // `status` if it is the first error, then asks the watched connections to
  // stop at a frame boundary (Connection::Interrupt with kStopGrace), so
  // that channel 0 can still carry an Abort saying why. Close() ends them.
  void Stop(absl::Status status);
  // Records `status` if it is the first error, then shuts every watched
  // connection down, also those Stop() only interrupted.
  void Close(absl::Status status);
  absl::Status Get() const;
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  const std::atomic<bool>* flag() const { return &failed_; }
  // Connections to shut down when the migration fails (at once if it has
  // failed already). Must outlive this.
  void Watch(Connection* connection);

 private:
  // Keeps `status` if it is the first error; true then.
  bool RecordLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::vector<Connection*> watched_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;  // Set() or Close() shut them.
  // Written under mu_ (release) when the first error is recorded, read
  // without the lock (acquire) on hot paths that only need "stop now".
  std::atomic<bool> failed_{false};
};

struct PageWork {
  uint32_t region = 0;
  uint32_t round = 0;
  bool marker = false;  // Round-end marker instead of pages.
  bool final = false;   // With marker: the switchover round.
  std::vector<std::pair<uint64_t, uint64_t>> runs;  // (first page, count)
  uint64_t pages = 0;
};

// Counters a channel adds to; read by the migration thread between rounds.
// Relaxed: workers only add; the migration thread reads them after WaitIdle
// (whose lock orders the adds before) or as an estimate.
struct ChannelCounters {
  std::atomic<uint64_t> raw_pages{0};
  std::atomic<uint64_t> zero_pages{0};
  // Pages scanned (zero test, copy, hash) and the time it took: what
  // re-hashing memory costs per page, for the verify=full estimate.
  std::atomic<uint64_t> scanned_pages{0};
  std::atomic<uint64_t> scan_ns{0};
  // Compression (EnableCompression; wire::CompressorCounters).
  std::atomic<uint64_t> compressed_batches{0};
  std::atomic<uint64_t> incompressible_batches{0};
  std::atomic<uint64_t> skipped_batches{0};
  std::atomic<uint64_t> compress_bytes_in{0};
  std::atomic<uint64_t> compress_bytes_out{0};
  std::atomic<uint64_t> compress_ns{0};
};

// Testing only: called for every page a channel is about to send, after its
// hash was recorded; true leaves it out of the batch (a page the sender
// believes it sent but that never went out). A hook that writes the page
// and returns false is a guest write between a page's hash and its send.
using DropPageHook = std::function<bool(uint32_t region, uint64_t page)>;

class SendChannel {
 public:
  // `memory`, `sent`, `limiter`, `failure`, `counters` and `drop` must
  // outlive the channel; `index` names it in errors. sent[r] records the hash of every page of region r
  // the channel sends (channels never send the same page in one round, and
  // rounds are ordered by WaitIdle).
  SendChannel(std::unique_ptr<Connection> connection,
              const GuestMemory<AtomicBitmap>* memory, std::vector<PageHashes>* sent,
              RateLimiter* limiter, Failure* failure, ChannelCounters* counters,
              absl::Duration io_timeout, uint32_t batch_pages,
              const DropPageHook* drop = nullptr,
              const std::vector<KnownZero>* known_zero = nullptr, uint32_t index = 0);
  ~SendChannel();  // Stops the worker.

  // Compresses every RAW batch with `compressor` from now on (a batch that
  // does not shrink stays RAW; migration/wire/compression.h). Before
  // Start(); the codec must be the one the Hellos agreed on.
  void EnableCompression(std::unique_ptr<wire::BatchCompressor> compressor);
  // Sends RAW pages straight from guest memory from now on: each page is
  // hashed where it is, and the kernel reads the guest's own bytes, no copy
  // (FEATURE_TORN_PAGES, agreed in the Hellos; protocol.h says why a page
  // the guest writes meanwhile loses nothing). Before Start(); ignored with
  // compression, which needs the stable copy.
  void SendFromGuestMemory() { from_guest_memory_ = true; }
  void Start();
  void Enqueue(PageWork work);
  uint64_t queued_pages() const;
  // Blocks up to `timeout` until the queue is empty and the worker idle (or
  // the migration failed); returns true iff that happened.
  bool WaitIdle(absl::Duration timeout);
  // Drops queued work, lets the batch in progress finish, joins the worker;
  // the connection stays open.
  void Stop();
  Connection& connection() { return *connection_; }

 private:
  void Run();
  absl::Status Send(const PageWork& work);
  // Compression's own path (EnableCompression): replaces `*payload`, the
  // batch's page bytes in buffer_, by their compressed bytes and sets the
  // batch's encoding, when the compressor says so; updates the counters.
  // REQUIRES: `*payload` is the stable copy the page hashes were taken of
  // (guest memory may change under a direct read, and the compressed bytes
  // must decompress to exactly the hashed pages).
  void CompressPayload(proto::PageBatch& batch, iovec* payload);

  std::unique_ptr<Connection> connection_;
  const GuestMemory<AtomicBitmap>* memory_;
  std::vector<PageHashes>* sent_;
  RateLimiter* limiter_;
  Failure* failure_;
  ChannelCounters* counters_;
  const absl::Duration io_timeout_;
  const uint32_t index_;  // The channel's, for its errors.
  const DropPageHook* drop_;
  const uint32_t batch_pages_;      // The most pages one batch carries.
  bool from_guest_memory_ = false;  // Set before Start().
  // Worker only: the copies; allocated by Start() unless pages go from
  // guest memory.
  std::vector<uint8_t> buffer_;
  std::vector<iovec> payload_;      // Worker only: the batch's page bytes, in order.
  // Per region, pages found zero without reading them (known_zero.h);
  // null: every page is read. known_ is the worker's scratch.
  const std::vector<KnownZero>* known_zero_;
  std::vector<uint8_t> known_;
  std::unique_ptr<wire::BatchCompressor> compressor_;  // Worker only; null: none.

  // std::mutex, not absl::Mutex: Debian's Abseil is not built for TSan, and
  // absl::Condition predicates run on whichever thread unlocks, which TSan
  // then reports. Everything below is guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable changed_;  // Queue, busy_ or stop_ changed.
  std::deque<PageWork> queue_;
  uint64_t queued_pages_ = 0;
  bool busy_ = false;
  bool stop_ = false;
  std::thread worker_;
};

// What the channels' sockets hold that their peers have not taken yet
// (Connection::unacknowledged_bytes), summed; -1 if the kernel does not say
// for one of them.
int64_t UnacknowledgedBytes(const std::vector<std::unique_ptr<SendChannel>>& channels);

// Channel 0's next frame (its start: wire::ReadFrameStart), read within
// wait() at a time. The destination answers a round, or the completion, only
// once it has read what came before, which a slow link can still hold in the
// sockets for seconds after the source's last write: a wait in which no byte
// of the frame came is repeated while the channels' unacknowledged bytes go
// down and may_wait_on() says so. Otherwise the last read's result.
absl::StatusOr<wire::IncomingFrame> ReadBehindQueue(
    const std::vector<std::unique_ptr<SendChannel>>& channels,
    const std::function<absl::Duration()>& wait, const std::function<bool()>& may_wait_on);

}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_SEND_CHANNEL_H_
