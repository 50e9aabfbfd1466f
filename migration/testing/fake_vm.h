// File: migration/testing/fake_vm.h
//
// FakeVm: a stand-in for a running guest in tests. It owns guest memory made
// of anonymous and file-backed regions (AtomicBitmap-tracked), and writer
// threads that dirty it through the tracked API at a given rate while a
// migration runs. It implements VmControl: Pause() stops and joins the
// writers (so memory is frozen), Resume() restarts them, SetThrottle()
// slows them down and records every value it was given.
//
// Thread safety: VmControl methods are called by the migration thread; the
// accessors are for the test thread when no migration runs.
#ifndef LIVEMIG_MIGRATION_TESTING_FAKE_VM_H_
#define LIVEMIG_MIGRATION_TESTING_FAKE_VM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include <mutex>  // Not absl::Mutex: Debian's Abseil is not TSan-instrumented.
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "migration/vm_control.h"

namespace livemig::testing {

struct FakeRegionSpec {
  uint64_t guest_addr = 0;
  uint64_t size = 0;
  std::string file;  // Empty: anonymous. Created (sized) if missing.
  uint64_t file_offset = 0;
};

// kText: compressible pages (words of a small vocabulary, as code and
// headers are), for the compression tests.
enum class Fill { kZero, kRandom, kMixed, kText };

struct WorkloadSpec {
  int writers = 2;
  double pages_per_second = 0;  // Per writer; 0 = idle.
  uint64_t hot_bytes = 0;       // 0: the whole memory; else the first N bytes.
  uint64_t seed = 1;
};

class FakeVm : public VmControl {
 public:
  static absl::StatusOr<std::unique_ptr<FakeVm>> Create(
      const std::vector<FakeRegionSpec>& regions, Fill fill, uint64_t seed);
  ~FakeVm() override;

  const GuestMemory<AtomicBitmap>& memory() const { return *memory_; }

  // Starts the writers (call before the migration).
  void StartWorkload(const WorkloadSpec& spec);
  void StopWorkload();

  absl::Status Pause() override;
  absl::Status Resume() override;
  void SetThrottle(int percent) override;
  absl::StatusOr<std::string> DeviceState() override;

  bool paused() const { return paused_.load(); }
  int resumes() const { return resumes_.load(); }
  std::vector<int> throttles() const;
  uint64_t pages_written() const { return pages_written_.load(); }

 private:
  FakeVm() = default;
  void RunWriter(int index);

  std::unique_ptr<GuestMemory<AtomicBitmap>> memory_;
  WorkloadSpec spec_;
  std::vector<std::thread> writers_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  std::atomic<int> resumes_{0};
  std::atomic<int> throttle_{0};
  std::atomic<uint64_t> pages_written_{0};
  mutable std::mutex mu_;
  std::vector<int> throttles_ ABSL_GUARDED_BY(mu_);
};

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_FAKE_VM_H_
