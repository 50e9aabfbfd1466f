// File: tests/embedding/tiny_vmm.cc
//
// A tiny VMM that embeds livemig the way an outside project would: built in
// its own workspace against @livemig's public targets only. It builds guest
// memory of two regions, runs a "vCPU" thread that keeps writing pages through
// the tracked API, migrates the running guest with Sender to a Receiver in the
// same process over 127.0.0.1, and checks the received memory and device state
// byte for byte against the paused source. Exit status 0 only if every byte
// matched and the guest really wrote during the migration; 1 otherwise, with
// the first difference on stderr.
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/atomic_bitmap.h"
#include "core/guest_memory.h"
#include "core/mmap_region.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/stats.h"
#include "migration/transport/endpoint.h"
#include "migration/vm_control.h"

namespace {

using livemig::AtomicBitmap;
using livemig::GuestAddress;
using livemig::GuestMemory;
using livemig::GuestRegion;
using livemig::MmapRegion;

constexpr uint64_t kPage = 4096;

// Two regions with a hole between them, as a PC's RAM below and above the
// 32-bit PCI window: 4 MiB at 0 and 2 MiB at 4 GiB.
struct RegionSpec {
  uint64_t start;
  uint64_t size;
};
constexpr RegionSpec kRegions[] = {{0, 4 << 20}, {uint64_t{1} << 32, 2 << 20}};

absl::StatusOr<GuestMemory<AtomicBitmap>> BuildMemory() {
  std::vector<GuestRegion<AtomicBitmap>> regions;
  for (const RegionSpec& spec : kRegions) {
    absl::StatusOr<MmapRegion<AtomicBitmap>> mmap =
        MmapRegion<AtomicBitmap>::Create(spec.size);
    if (!mmap.ok()) return mmap.status();
    absl::StatusOr<GuestRegion<AtomicBitmap>> region =
        GuestRegion<AtomicBitmap>::Create(std::move(*mmap),
                                          GuestAddress(spec.start));
    if (!region.ok()) return region.status();
    regions.push_back(std::move(*region));
  }
  return GuestMemory<AtomicBitmap>::FromRegions(std::move(regions));
}

// The VMM side of the migration: one vCPU thread writing guest pages through
// GuestMemory::Write (which marks them dirty), paused and resumed by the
// Sender through VmControl. The thread parks between writes, so Pause()
// returns only once no write is in flight.
class TinyVm : public livemig::VmControl {
 public:
  explicit TinyVm(const GuestMemory<AtomicBitmap>& memory) : memory_(memory) {}
  ~TinyVm() override { Stop(); }

  void Start() { vcpu_ = std::thread([this] { RunVcpu(); }); }

  // Ends the vCPU thread for good (also while paused).
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (vcpu_.joinable()) vcpu_.join();
  }

  // Blocks until the vCPU has written every page of its first pass, so the
  // migration starts from memory that is mostly not zero.
  void WaitForFirstPass() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return first_pass_done_ || !error_.ok(); });
  }

  absl::Status Pause() override {
    std::unique_lock<std::mutex> lock(mu_);
    pause_requested_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return parked_ || stop_; });
    return absl::OkStatus();
  }

  absl::Status Resume() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      pause_requested_ = false;
    }
    cv_.notify_all();
    return absl::OkStatus();
  }

  // A device state with every byte value in it (NULs included), and the
  // vCPU's write count, which only a paused guest keeps still.
  absl::StatusOr<std::string> DeviceState() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::string state = "tiny-vmm-devices:";
    for (int i = 0; i < 3 * 256; ++i) state.push_back(static_cast<char>(i));
    state.append(reinterpret_cast<const char*>(&writes_), sizeof(writes_));
    return state;
  }

  uint64_t writes() {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_;
  }
  uint64_t writes_while_migrating() {
    std::lock_guard<std::mutex> lock(mu_);
    return writes_ - writes_at_first_pass_;
  }
  absl::Status error() {
    std::lock_guard<std::mutex> lock(mu_);
    return error_;
  }

 private:
  // A first pass writes every page but every 7th (left zero, so the
  // migration also carries zero pages); then random pages of both regions are
  // rewritten, each with a pattern of its address and a generation, until
  // Stop().
  void RunVcpu() {
    std::vector<GuestAddress> pages;
    for (const RegionSpec& spec : kRegions) {
      for (uint64_t off = 0; off < spec.size; off += kPage) {
        if ((off / kPage) % 7 != 3) pages.push_back(GuestAddress(spec.start + off));
      }
    }
    std::vector<uint8_t> buf(kPage);
    uint64_t rng = 0x9e3779b97f4a7c15;
    for (uint64_t generation = 0;; ++generation) {
      const bool first_pass = generation < pages.size();
      if (!first_pass) rng = rng * 6364136223846793005 + 1442695040888963407;
      const GuestAddress addr =
          first_pass ? pages[generation] : pages[(rng >> 33) % pages.size()];
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (pause_requested_) {
          parked_ = true;
          cv_.notify_all();
          cv_.wait(lock, [this] { return !pause_requested_ || stop_; });
          parked_ = false;
        }
        if (stop_) return;
      }
      for (size_t i = 0; i < kPage; i += sizeof(uint64_t)) {
        const uint64_t word = addr.value ^ (generation << 20) ^ (i * 0x0101010101010101);
        std::memcpy(&buf[i], &word, sizeof(word));
      }
      absl::Status written = memory_.Write(addr, buf);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!written.ok()) {
          error_ = written;
          cv_.notify_all();
          return;
        }
        ++writes_;
        if (generation + 1 == pages.size()) {
          first_pass_done_ = true;
          writes_at_first_pass_ = writes_;
          cv_.notify_all();
        }
      }
      // After the first pass, a pace a loopback link outruns (some 10^4
      // pages a second into a 5 MiB working set), so pre-copy converges.
      if (!first_pass) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  const GuestMemory<AtomicBitmap>& memory_;
  std::thread vcpu_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pause_requested_ = false;  // Guarded by mu_.
  bool parked_ = false;           // Guarded by mu_.
  bool stop_ = false;             // Guarded by mu_.
  bool first_pass_done_ = false;  // Guarded by mu_.
  uint64_t writes_ = 0;           // Guarded by mu_.
  uint64_t writes_at_first_pass_ = 0;  // Guarded by mu_.
  absl::Status error_;            // Guarded by mu_.
};

int Fail(const std::string& what) {
  std::fprintf(stderr, "tiny_vmm: FAIL: %s\n", what.c_str());
  return 1;
}

int Run() {
  absl::StatusOr<GuestMemory<AtomicBitmap>> memory = BuildMemory();
  if (!memory.ok()) return Fail("guest memory: " + memory.status().ToString());

  // The receiver needs a root for file-backed regions; both regions here are
  // anonymous, so it stays empty.
  char root_template[] = "/tmp/tiny_vmm.XXXXXX";
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string root_pattern = tmp ? std::string(tmp) + "/tiny_vmm.XXXXXX" : root_template;
  if (mkdtemp(root_pattern.data()) == nullptr) return Fail("mkdtemp failed");
  struct RemoveRoot {
    std::string path;
    ~RemoveRoot() { std::filesystem::remove_all(path); }
  } remove_root{root_pattern};

  livemig::ReceiverOptions receiver_options;
  receiver_options.root_dir = root_pattern;
  receiver_options.accept_timeout = absl::Seconds(60);
  receiver_options.session_timeout = absl::Seconds(120);
  absl::StatusOr<std::unique_ptr<livemig::Receiver>> receiver =
      livemig::Receiver::Listen(livemig::Endpoint::Tcp("127.0.0.1", 0),
                                std::move(receiver_options));
  if (!receiver.ok()) return Fail("listen: " + receiver.status().ToString());

  absl::StatusOr<livemig::ReceivedMigration> received =
      absl::UnknownError("ReceiveOne() did not run");
  std::thread destination([&] { received = (*receiver)->ReceiveOne(); });

  TinyVm vm(*memory);
  vm.Start();
  vm.WaitForFirstPass();

  livemig::SenderOptions sender_options;
  sender_options.destination = (*receiver)->endpoint();
  sender_options.channels = 2;
  sender_options.timeout = absl::Seconds(60);
  sender_options.max_rounds = 100;
  sender_options.on_limit = livemig::SenderOptions::OnLimit::kForce;
  livemig::Sender sender(sender_options);
  absl::StatusOr<livemig::MigrationStats> stats = sender.Migrate(*memory, vm);
  if (!stats.ok()) (*receiver)->Cancel();
  destination.join();
  // On success the Sender leaves the guest paused: its memory is final now.
  const uint64_t writes_while_migrating = vm.writes_while_migrating();
  absl::StatusOr<std::string> source_state = vm.DeviceState();
  vm.Stop();

  if (!vm.error().ok()) return Fail("guest write: " + vm.error().ToString());
  if (!stats.ok()) return Fail("Sender::Migrate: " + stats.status().ToString());
  if (!received.ok()) return Fail("Receiver::ReceiveOne: " + received.status().ToString());
  if (!source_state.ok()) return Fail("device state: " + source_state.status().ToString());
  std::printf("tiny_vmm: migrated %d regions, %llu bytes in %u rounds, %llu guest "
              "writes during the migration, downtime %.1f ms\n",
              static_cast<int>(memory->num_regions()),
              static_cast<unsigned long long>(memory->total_size()), stats->rounds,
              static_cast<unsigned long long>(writes_while_migrating),
              stats->downtime_ms);

  // A guest that wrote nothing while migrating would not test dirty tracking.
  if (writes_while_migrating == 0) return Fail("the guest wrote nothing during the migration");
  if (received->device_state != *source_state) {
    return Fail("device state differs (" + std::to_string(received->device_state.size()) +
                " bytes received, " + std::to_string(source_state->size()) + " sent)");
  }
  const GuestMemory<livemig::NoBitmap>& dest = received->memory;
  if (dest.num_regions() != memory->num_regions()) return Fail("region count differs");
  uint64_t nonzero_pages = 0;
  for (size_t r = 0; r < memory->num_regions(); ++r) {
    const auto& a = memory->region(r);
    const auto& b = dest.region(r);
    if (a.start_addr() != b.start_addr() || a.len() != b.len()) {
      return Fail("region " + std::to_string(r) + " has another address or size");
    }
    // Raw pointers: reads, so untracked access is what is wanted.
    const uint8_t* src = a.region().as_ptr();
    const uint8_t* dst = b.region().as_ptr();
    for (uint64_t off = 0; off < a.len(); off += kPage) {
      if (std::memcmp(src + off, dst + off, kPage) != 0) {
        return Fail("region " + std::to_string(r) + " page " + std::to_string(off / kPage) +
                    " differs");
      }
      for (uint64_t i = 0; i < kPage; ++i) {
        if (src[off + i] != 0) {
          ++nonzero_pages;
          break;
        }
      }
    }
  }
  // 6 of every 7 pages were written (and none can be all zero: the pattern
  // holds the page's address): check the comparison saw them.
  const uint64_t total_pages = memory->total_size() / kPage;
  if (nonzero_pages < total_pages * 6 / 7) {
    return Fail("only " + std::to_string(nonzero_pages) + " of " + std::to_string(total_pages) +
                " pages hold data");
  }
  std::printf("tiny_vmm: OK: %llu pages (%llu with data) and %zu bytes of device state "
              "match\n",
              static_cast<unsigned long long>(total_pages),
              static_cast<unsigned long long>(nonzero_pages), source_state->size());
  return 0;
}

}  // namespace

int main() { return Run(); }
