// File: migration/testing/migration_harness.h
//
// Shared pieces of the engine's end-to-end tests: a per-test directory, a
// Receiver running ReceiveOne() on its own thread, and a byte-for-byte
// comparison of source and rebuilt guest memory. GoogleTest assertions are
// used inside, so call these from tests only.
#ifndef LIVEMIG_MIGRATION_TESTING_MIGRATION_HARNESS_H_
#define LIVEMIG_MIGRATION_TESTING_MIGRATION_HARNESS_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "migration/receiver.h"
#include "migration/transport/endpoint.h"

namespace livemig::testing {

// A fresh, empty directory `name` under TEST_TMPDIR (or /tmp).
std::string TempDir(const std::string& name);

// Runs a receiver for one migration on a thread. The destructor cancels and
// joins a receiver that was never joined.
struct ReceiverThread {
  std::unique_ptr<Receiver> receiver;
  std::thread thread;
  absl::StatusOr<ReceivedMigration> result = absl::UnknownError("not run");

  // nullptr (with a test failure) if the receiver cannot listen.
  static std::unique_ptr<ReceiverThread> Start(
      const Endpoint& at, const std::string& root,
      absl::Duration io_timeout = absl::Seconds(20),
      absl::Duration accept_timeout = absl::Seconds(30));
  // The same with every option the test chooses.
  static std::unique_ptr<ReceiverThread> Start(const Endpoint& at, ReceiverOptions options);
  ~ReceiverThread();
  absl::StatusOr<ReceivedMigration>& Join();
};

// The rebuilt memory equals the source, byte for byte, region by region.
void ExpectSameMemory(const GuestMemory<AtomicBitmap>& source,
                      const GuestMemory<NoBitmap>& rebuilt);

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_MIGRATION_HARNESS_H_
