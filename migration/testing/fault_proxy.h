// File: migration/testing/fault_proxy.h
//
// FaultProxy: a TCP proxy on 127.0.0.1 for fault-injection tests. Clients
// connect to endpoint(); each accepted connection is paired with a new
// connection to `target`, and bytes are pumped both ways by two threads. One
// Fault may be armed for one direction of one (or every) proxied connection:
//
//   kCutAfter   after `offset` bytes have been forwarded in that direction,
//               both sockets of that proxied connection are shut down (the
//               receiving side sees EOF after exactly `offset` bytes; the
//               sending side's further writes are answered with a reset).
//   kCorruptAt  the byte at `offset` in that direction has its lowest bit
//               flipped; forwarding continues.
//   kThrottle   that direction is forwarded at `bytes_per_second` at most
//               (16 KiB at a time, paced): a slow link.
//
// A cut may also be placed at a protocol event instead of a stream offset
// (`in_round` >= 0): `offset` then counts bytes into the `batch`-th
// PAGE_BATCH frame of that round in that direction (rounds counted by the
// ITERATION_MARKER frames passing; the proxy follows the frame headers,
// frame_format.h), so where it lands does not depend on how large earlier
// rounds were. If that round carries fewer page batches, nothing is cut.
//
//   ASSERT_OK_AND_ASSIGN(auto proxy, FaultProxy::Start(
//       listener->local_endpoint(),
//       {.kind = FaultProxy::Fault::Kind::kCorruptAt, .offset = 100}));
//   Connection::Connect(proxy->endpoint(), ...);
//
// A client's EOF is passed on as a half-close (ShutdownWrite) to the other
// side; a reset or error tears the proxied connection down.
//
// Ownership: the proxy owns its listener, threads and proxied connections.
// Thread safety: endpoint() and bytes_forwarded() may be called from any
// thread; the destructor stops everything and must not race other calls.
#ifndef LIVEMIG_MIGRATION_TESTING_FAULT_PROXY_H_
#define LIVEMIG_MIGRATION_TESTING_FAULT_PROXY_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include <mutex>  // Not absl::Mutex: Debian's Abseil is not TSan-instrumented.
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"

namespace livemig {

class FaultProxy {
 public:
  struct Fault {
    enum class Kind { kNone, kCutAfter, kCorruptAt, kThrottle };
    Kind kind = Kind::kNone;
    uint64_t bytes_per_second = 0;  // kThrottle.
    uint64_t offset = 0;  // Bytes into the chosen direction's stream.
    bool client_to_server = true;
    // -1 = every connection, else only the i-th accepted one (0-based).
    int connection_index = -1;
    // kCutAfter: -1 = `offset` is into the stream; else into PAGE_BATCH
    // frame `batch` (0-based) of this round (see the file comment), at
    // least one byte past its header and at most its last byte but one.
    int in_round = -1;
    int batch = 0;
  };

  // Listens on 127.0.0.1 (a free port) and starts the accept thread.
  // `target` is connected once per accepted client.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(
      Endpoint target, Fault fault);

  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;
  // Stops accepting, shuts every proxied connection down, joins all threads.
  ~FaultProxy();

  Endpoint endpoint() const { return endpoint_; }

  // Bytes written onward, both directions, every connection. Relaxed: a
  // statistic for tests, ordered by nothing.
  uint64_t bytes_forwarded() const {
    return bytes_forwarded_.load(std::memory_order_relaxed);
  }

 private:
  struct Session;

  FaultProxy(Endpoint target, Fault fault, std::unique_ptr<Listener> listener);
  void AcceptLoop();
  void Pump(Session& session, bool client_to_server);
  // Joins and drops sessions whose pumps have both ended.
  void Reap() ABSL_LOCKS_EXCLUDED(mutex_);

  const Endpoint target_;
  const Fault fault_;
  const std::unique_ptr<Listener> listener_;
  const Endpoint endpoint_;
  // Written by the destructor, read by every thread between blocking calls.
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> bytes_forwarded_{0};
  std::mutex mutex_;
  std::list<std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mutex_);
  std::thread accept_thread_;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_TESTING_FAULT_PROXY_H_
