// File: migration/receiver.h
//
// Receiver: the destination side of a migration, embedded in a VMM (or run by
// `livemig receive`). It listens on an endpoint, and ReceiveOne() accepts
// connections concurrently until one migration has all its channels
// (migration/internal/channel_acceptor.h): a connection with a bad Hello (a
// wrong magic or version, junk, silence past handshake_timeout) gets an
// Abort frame naming the problem and is closed without ending ReceiveOne(),
// and channels are matched to their migration by its id. It then rebuilds
// the regions from the region table (RegionStore: file-backed regions under
// `root_dir` at their file offsets, in staging files; anonymous regions in
// fresh mappings), writes page bytes straight from the socket into the
// mappings, hashes every page as it lands and checks it against the hash its
// batch carries, keeps those hashes (migration/page_hashes.h), acknowledges
// every round (with its expected completion cost), and at completion
// compares its page-hash digests with the source's (work proportional to the
// final round, not to memory; verification.h).
//
// Durability. By default nothing touches the disk while the source is
// paused: the receiver verifies, answers VERIFIED, and on the source's
// HANDOVER renames the staging files onto their final names and answers
// COMMITTED; then it flushes (msync, fsync of files and directories), and
// ReceiveOne() returns OK only after that flush. With `durable` the flush
// comes before VERIFIED (and every round's data is flushed before the round
// is acknowledged, so the final flush is short and its cost is known): the
// source never lets go of the guest before the bytes are on disk.
//
// A batch that names a region or page outside the table, a corrupt or
// truncated frame, an oversized frame, a page that does not land as the
// source hashed it, a digest mismatch (named down to the pages, after asking
// the source for its page hashes of the first differing chunk), or an Abort
// from the source makes ReceiveOne() fail: the staging files are removed,
// nothing is renamed, and the error names the frame, region or page. Nothing
// is ever written outside a region's mapping.
//
// Cancel() before any source connected all its channels: Cancelled with the
// message kCancelledWhileWaiting (nothing was received).
//
// Thread safety: ReceiveOne() runs on the caller's thread (plus one reader
// thread per channel) and must not run twice at once; Cancel() may be called
// from any thread and makes a running ReceiveOne() return Cancelled.
#ifndef LIVEMIG_MIGRATION_RECEIVER_H_
#define LIVEMIG_MIGRATION_RECEIVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include <mutex>  // Not absl::Mutex: Debian's Abseil is not TSan-instrumented.
#include "absl/time/time.h"
#include "core/file_offset.h"
#include "core/guest_memory.h"
#include "migration/destination_memory.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/transport/tls_context.h"
#include "migration/vm_control.h"
#include "migration/wire/compression.h"
#include "proto/migration.pb.h"

namespace livemig {

// The message of the Cancelled that ReceiveOne() returns when it was
// cancelled before any migration began.
inline constexpr char kCancelledWhileWaiting[] = "cancelled while waiting for a source";

struct ReceiverOptions {
  // Where file-backed regions are rebuilt. One Receiver at a time: Listen()
  // locks it (FailedPrecondition "another receiver uses <root> ..." while
  // another holds it) and removes the staging files (*.livemig-partial) a
  // killed receiver left there.
  std::string root_dir;
  absl::Duration io_timeout = absl::Seconds(30);  // Every read and write.
  // Until one migration has connected all its channels.
  absl::Duration accept_timeout = absl::InfiniteDuration();
  // Each connection must send its Hello within this (and finish its TLS
  // handshake first, with `tls`), or is closed.
  absl::Duration handshake_timeout = absl::Seconds(5);
  // Mutual TLS on every channel (migration/transport/tls_context.h, the
  // destination's role); null: plaintext. A source whose certificate the CA
  // did not sign is refused before any frame is read; a plaintext source is
  // told, in a plaintext Abort, that this destination requires TLS.
  std::shared_ptr<const TlsContext> tls;
  // Handshakes in progress at once; more connections wait in the backlog.
  uint32_t max_pending_handshakes = 64;
  uint32_t max_channels = 64;
  // Limits on what a region table may ask of this machine, refused with
  // ResourceExhausted when the table arrives. max_total_bytes 0: this
  // machine's physical memory (a destination must hold the guest; the
  // receiver also keeps 8 bytes of page hash per 4 KiB page).
  uint64_t max_total_bytes = 0;
  uint64_t max_regions = 1024;
  uint64_t max_path_components = 32;
  // The whole migration, from its channels' handshake to the end: past it,
  // ReceiveOne() fails with DeadlineExceeded (a peer dripping frames just
  // within io_timeout cannot hold the receiver for ever).
  absl::Duration session_timeout = absl::InfiniteDuration();
  // Rebuild anonymous regions as files too, "region-<index>.mem" under
  // root_dir at offset 0 (what `livemig receive` does), instead of anonymous
  // mappings that live only in this process.
  bool anonymous_regions_as_files = false;
  // Paths under root_dir the embedder writes itself; a region naming one is
  // refused at the table (RegionStoreOptions::reserved_paths).
  std::vector<std::string> reserved_paths;
  // Flush to disk before answering VERIFIED (see the file comment).
  bool durable = false;
  // Make every region resident (allocated, zeroed, mapped: prefaulted on
  // helper threads, migration/internal/prealloc.h) when the table arrives,
  // before Ack{REGION_TABLE}, so no page is accepted into memory that is
  // not there and the readers never stall on page faults. A destination
  // that cannot (out of memory, a file that cannot be backed) fails
  // ReceiveOne() with ResourceExhausted naming the region, its file and its
  // bytes, and the source gets it as an Abort before round 0. The source
  // waits for the acknowledgement within its io_timeout: populating must
  // finish within it (it runs at the kernel's allocate-and-zero speed;
  // 4 KiB shmem pages are the slowest, THP the fastest). VMM-provided
  // memory (region_memory) is prefaulted too, and populated files take
  // round 0 through their mappings, not write(2).
  bool prealloc = false;
  // Compression codecs a source may ask for in its Hello (protocol.h); a
  // source asking for another one is refused, before any page, with an
  // Abort naming the codec (FailedPrecondition). Empty: none accepted.
  std::vector<wire::Codec> accept_compression = {wire::Codec::kZstd, wire::Codec::kLz4};
  // The VMM's own memory for regions it wants in it (memfd, shared,
  // hugetlbfs), asked per region when the table arrives
  // (RegionStoreOptions::provide, region_store.h): ReceiveOne()'s memory is
  // then that mapping, which the VMM keeps owning. Null: the receiver's own.
  std::function<absl::StatusOr<ProvidedMemory>(const RegionDescription&)> region_memory;
  // Called on the ReceiveOne() thread once the source's HANDOVER arrived,
  // just before the files are renamed onto their final names (in the
  // source's pause: keep it short). What describes the previous
  // migration's files goes here (`livemig receive` removes its
  // manifest.json). An error fails the commit: COMMITTED carries it, the
  // source resumes its guest, nothing is renamed. Null: nothing.
  std::function<absl::Status()> before_commit;
  // Testing only: called after a RAW batch's pages landed in region
  // `region`'s mapping at `data`, before they are hashed.
  std::function<void(uint32_t region, uint64_t first_page, uint8_t* data,
                     size_t bytes)>
      test_after_landing;
  // Testing only: called at each step of the completion: "verified" (VERIFIED
  // sent), "handover" (the source's HANDOVER read, nothing committed yet),
  // "committed" (COMMITTED sent), "flushed" (the data is on disk).
  std::function<void(const char* step)> test_on_step;
};

struct ReceivedMigration {
  explicit ReceivedMigration(GuestMemory<NoBitmap> rebuilt)
      : memory(std::move(rebuilt)) {}

  GuestMemory<NoBitmap> memory;       // The rebuilt guest memory.
  // The source VMM's device state (VmControl::DeviceSections), in order.
  std::vector<DeviceSection> device_sections;
  std::string device_state;  // The bytes of section "vmm" (DeviceState()), if any.
  std::vector<RegionDescription> regions;  // The table, in order.
  std::vector<std::string> files;     // Final path per region ("" anonymous).
  // Per region, in table order: the root of the page hashes that landed
  // (proto RegionDigest.root), equal to the source's when it verified.
  std::vector<uint64_t> digests;
  bool verified = false;              // false: the source sent no digests.
  uint64_t raw_pages = 0;             // Pages received with their bytes.
  // Of those, written through the region's file instead of its mapping
  // (round 0 into files the receiver created; internal/file_landing.h).
  uint64_t pages_written_to_files = 0;
  uint64_t zero_pages = 0;
  // Pages that landed torn in a pre-copy round (sent from live guest memory
  // while the guest wrote them; protocol.h) and so were received again.
  uint64_t torn_pages = 0;
  uint64_t bytes_received = 0;
  // Compression (none unless the source asked): the codec agreed, batches
  // that arrived compressed, time the channels spent decompressing.
  wire::Codec compression = wire::Codec::kNone;
  uint64_t compressed_batches = 0;
  double decompress_ms = 0;
  uint32_t rounds = 0;
  uint32_t channels = 0;
  // ReceiverOptions::prealloc: how long making every region resident took
  // (before round 0, while the source waited for Ack{REGION_TABLE}) and
  // how many bytes it populated. Zero without it.
  double prealloc_ms = 0;
  uint64_t prealloc_bytes = 0;
};

class ReceiveSession;  // migration/internal/receive_session.h

class Receiver {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Receiver>> Listen(
      const Endpoint& at, ReceiverOptions options);

  Endpoint endpoint() const { return listener_->local_endpoint(); }

  // Receives one migration; see the file comment.
  [[nodiscard]] absl::StatusOr<ReceivedMigration> ReceiveOne();

  // Makes a running ReceiveOne() fail with Cancelled promptly; called while
  // none runs, it makes the next one return Cancelled at once. After the
  // source was told VERIFIED it waits for the source's HANDOVER (sent at
  // once; io_timeout at most) and answers it COMMITTED{CANCELLED}, not
  // committing, so the source resumes instead of being left in doubt. A
  // ReceiveOne() that returns Cancelled uses the request up; one the request
  // came too late to stop (it had committed: it finishes its flush and
  // returns the migration) leaves it for the next call.
  void Cancel();

 private:
  Receiver(std::unique_ptr<Listener> listener, ReceiverOptions options, ScopedFd root_lock)
      : listener_(std::move(listener)),
        options_(std::move(options)),
        root_lock_(std::move(root_lock)) {}

  std::unique_ptr<Listener> listener_;
  ReceiverOptions options_;
  ScopedFd root_lock_;  // flock(2) on root_dir: one receiver per root.
  // Set by Cancel(); relaxed: it only says "stop", the shutdowns do the rest.
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::vector<Connection*> live_ ABSL_GUARDED_BY(mu_);  // Of the running migration.
  ReceiveSession* session_ ABSL_GUARDED_BY(mu_) = nullptr;  // Once its channels are in.

  friend class ReceiveSession;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_RECEIVER_H_
