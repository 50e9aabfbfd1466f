// File: migration/capi/capi_test.cc
//
// The C ABI from C++: the failure paths, with the exact codes and messages
// livemig.h documents, and round trips through the C receiver. ABI 2's
// additions (fds, device sections, provided memory, file-backed regions) are
// tested in vmm_features_test.cc.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/capi/livemig.h"
#include "migration/capi/testing/c_fixtures.h"

namespace {

using ::livemig::capi_testing::CReceiver;
using ::livemig::capi_testing::DeviceState;
using ::livemig::capi_testing::Err;
using ::livemig::capi_testing::FakeVm;
using ::livemig::capi_testing::Guest;
using ::livemig::capi_testing::kOps;
using ::livemig::capi_testing::NoSuchSocket;
using ::livemig::capi_testing::SenderTo;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(CapiError, AccessorsAcceptNull) {
  EXPECT_EQ(livemig_abi_version(), LIVEMIG_ABI_VERSION);
  EXPECT_EQ(livemig_error_code(nullptr), LIVEMIG_OK);
  EXPECT_STREQ(livemig_error_message(nullptr), "");
  livemig_error_free(nullptr);
  EXPECT_STREQ(livemig_code_name(LIVEMIG_UNAVAILABLE), "UNAVAILABLE");
  EXPECT_STREQ(livemig_code_name(99), "UNKNOWN");
}

TEST(CapiError, CodesMirrorAbslStatusCode) {
  // The documented values (absl::StatusCode's), fixed for ever by the ABI.
  EXPECT_EQ(LIVEMIG_CANCELLED, 1);
  EXPECT_EQ(LIVEMIG_INVALID_ARGUMENT, 3);
  EXPECT_EQ(LIVEMIG_FAILED_PRECONDITION, 9);
  EXPECT_EQ(LIVEMIG_OUT_OF_RANGE, 11);
  EXPECT_EQ(LIVEMIG_UNAVAILABLE, 14);
  EXPECT_EQ(LIVEMIG_DATA_LOSS, 15);
  EXPECT_EQ(LIVEMIG_UNAUTHENTICATED, 16);
}

TEST(CapiOptions, SettersRefuseBadValuesNamingTheField) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_channels(o, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "channels: must be 1 .. 64, got 0");
  EXPECT_EQ(livemig_options_set_verify(o, 7, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "verify: must be LIVEMIG_VERIFY_SENT, _FULL or _OFF (0..2), got 7");
  EXPECT_EQ(livemig_options_set_downtime_limit_ms(o, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "downtime_limit_ms: must be 1 .. 86400000 ms, got 0");
  EXPECT_EQ(livemig_options_set_io_timeout_ms(o, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "io_timeout_ms: must be 1 .. 86400000 ms, got 0");
  EXPECT_EQ(livemig_options_set_tcp(o, "", 7000, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint.host: empty");
  EXPECT_EQ(livemig_options_set_tcp(o, nullptr, 7000, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint.host: NULL");
  EXPECT_EQ(livemig_options_set_unix(o, std::string(200, 'x').c_str(), err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(),
            "endpoint.path: 200 bytes, longer than the 107 a Unix socket path may have");
  EXPECT_EQ(livemig_options_set_tls(o, "", nullptr, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "tls.dir: empty");
  EXPECT_EQ(livemig_options_set_channels(o, 4, err.out()), LIVEMIG_OK);
  EXPECT_TRUE(err.empty());  // Success clears *error_out.
  livemig_options_free(o);
}

TEST(CapiOptions, NullOptionsAreInvalidArgument) {
  Err err;
  EXPECT_EQ(livemig_options_set_channels(nullptr, 2, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  EXPECT_EQ(livemig_options_set_channels(nullptr, 2, nullptr), LIVEMIG_INVALID_ARGUMENT);
  livemig_options_free(nullptr);
  EXPECT_EQ(livemig_sender_new(nullptr, err.out()), nullptr);
  EXPECT_EQ(err.message(), "options: NULL");
  EXPECT_EQ(livemig_receiver_listen(nullptr, err.out()), nullptr);
  EXPECT_EQ(err.message(), "options: NULL");
}

TEST(CapiSender, NewWithoutEndpointIsInvalidArgument) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_sender_new(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint: not set");
  ASSERT_EQ(livemig_options_set_tcp(o, "127.0.0.1", 0, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_sender_new(o, err.out()), nullptr);
  EXPECT_EQ(err.message(), "endpoint.port: 0 (a sender needs the destination's port)");
  livemig_options_free(o);
}

TEST(CapiSender, TlsWithoutHostnameOrFilesFailsAtNew) {
  livemig_options* o = livemig_options_new();
  Err err;
  ASSERT_EQ(livemig_options_set_unix(o, "/tmp/x.sock", err.out()), LIVEMIG_OK);
  ASSERT_EQ(livemig_options_set_tls(o, "/nonexistent-tls-dir", nullptr, err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(livemig_sender_new(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), StartsWith("tls.hostname: "));
  ASSERT_EQ(livemig_options_set_tls(o, "/nonexistent-tls-dir", "dest", err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(livemig_sender_new(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_NOT_FOUND);
  EXPECT_EQ(err.message(), "TLS: /nonexistent-tls-dir: no such directory");
  livemig_options_free(o);
}

TEST(CapiSender, MigrateNamesEachNullArgument) {
  Guest guest;
  livemig_sender* s = SenderTo(NoSuchSocket());
  ASSERT_NE(s, nullptr);
  FakeVm vm;
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(nullptr, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "sender: NULL");
  EXPECT_STREQ(stats.status, "none");
  EXPECT_EQ(livemig_sender_migrate(s, nullptr, &kOps, &vm, &stats, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "memory: NULL");
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, nullptr, &vm, &stats, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "vm_ops: NULL");
  livemig_vm_ops no_pause = kOps;
  no_pause.pause = nullptr;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &no_pause, &vm, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "vm_ops.pause: NULL");
  livemig_vm_ops no_resume = kOps;
  no_resume.resume = nullptr;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &no_resume, &vm, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "vm_ops.resume: NULL");
  EXPECT_EQ(vm.pauses, 0);
  livemig_sender_cancel(nullptr);
  livemig_sender_free(nullptr);
  livemig_sender_free(s);
}

TEST(CapiSender, UnreachableDestinationIsUnavailable) {
  Guest guest;
  const std::string path = NoSuchSocket();
  livemig_sender* s = SenderTo(path);
  ASSERT_NE(s, nullptr);
  FakeVm vm;
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_UNAVAILABLE);
  EXPECT_EQ(err.code(), LIVEMIG_UNAVAILABLE);
  EXPECT_THAT(err.message(), HasSubstr("unix:" + path));
  EXPECT_STREQ(stats.status, "failed");
  EXPECT_EQ(vm.pauses, 0);
  EXPECT_EQ(vm.resumes, 0);
  livemig_sender_free(s);
}

TEST(CapiSender, CancelBeforeMigrateFailsTheNextOneAtOnce) {
  Guest guest;
  livemig_sender* s = SenderTo(NoSuchSocket());
  ASSERT_NE(s, nullptr);
  livemig_sender_cancel(s);
  FakeVm vm;
  livemig_stats stats;
  Err err;
  // Cancelled, not Unavailable: it never tried to connect.
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_CANCELLED);
  EXPECT_EQ(err.code(), LIVEMIG_CANCELLED);
  EXPECT_EQ(vm.pauses, 0);
  // The request is used up: the next attempt really runs.
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_UNAVAILABLE);
  livemig_sender_free(s);
}

TEST(CapiSender, CancelFromAnotherThreadWhileMigratingIsCancelled) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  // After the first round, the migration thread waits in the callback until
  // another thread's cancel has returned: "while migrating", on any machine.
  std::mutex mu;
  std::condition_variable cv;
  bool cancelled = false;
  std::thread canceller;
  vm.on_size_hint = [&] {
    if (canceller.joinable()) return;
    canceller = std::thread([&] {
      livemig_sender_cancel(s);
      std::lock_guard<std::mutex> lock(mu);
      cancelled = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return cancelled; });
  };
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_CANCELLED);
  canceller.join();
  EXPECT_STREQ(stats.status, "cancelled");
  EXPECT_EQ(vm.pauses, vm.resumes);  // Never left paused.
  receiver.Join();
  EXPECT_NE(receiver.rc_, LIVEMIG_OK);
  livemig_sender_free(s);
}

TEST(CapiSender, CancelWhilePausedResumesTheVm) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  vm.on_pause = [&] { livemig_sender_cancel(s); };
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_CANCELLED);
  EXPECT_EQ(vm.pauses, 1);
  EXPECT_EQ(vm.resumes, 1);
  livemig_sender_free(s);
}

TEST(CapiSender, PauseFailureFailsWithItsCodeAndMessageAndNoResume) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  vm.pause_rc = LIVEMIG_FAILED_PRECONDITION;
  vm.pause_message = "vcpu 3 would not stop";
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_FAILED_PRECONDITION);
  EXPECT_EQ(err.message(), "vcpu 3 would not stop");
  EXPECT_STREQ(stats.status, "failed");
  // The VM never paused, so it is not resumed (livemig.h, vm_ops.pause).
  EXPECT_EQ(vm.resumes, 0);
  receiver.Join();
  EXPECT_NE(receiver.rc_, LIVEMIG_OK);
  EXPECT_EQ(receiver.result_, nullptr);
  livemig_sender_free(s);
}

TEST(CapiSender, PauseFailureWithoutMessageNamesTheCallback) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  vm.pause_rc = 99;  // Not a livemig_code: Unknown.
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
            LIVEMIG_UNKNOWN);
  EXPECT_EQ(err.message(), "vm_ops.pause failed (returned 99)");
  livemig_sender_free(s);
}

TEST(CapiSender, DeviceStateFailureFailsAndResumesTheVm) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  vm.device_rc = LIVEMIG_DATA_LOSS;
  vm.device_message = "virtio-net: cannot snapshot the rx queue";
  livemig_stats stats;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_DATA_LOSS);
  EXPECT_EQ(err.message(), "virtio-net: cannot snapshot the rx queue");
  EXPECT_STREQ(stats.status, "failed");
  EXPECT_EQ(vm.pauses, 1);
  EXPECT_EQ(vm.resumes, 1);
  receiver.Join();
  EXPECT_NE(receiver.rc_, LIVEMIG_OK);
  livemig_sender_free(s);
}

TEST(CapiSender, RoundTripThroughTheCReceiver) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  livemig_stats stats;
  Err err;
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out()),
            LIVEMIG_OK)
      << err.message();
  EXPECT_STREQ(stats.status, "completed");
  EXPECT_EQ(stats.total_bytes, 2 * Guest::kSize);
  EXPECT_EQ(vm.pauses, 1);
  EXPECT_EQ(vm.resumes, 0);
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  ASSERT_EQ(livemig_received_num_regions(receiver.result_), 2u);
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region r;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, i, &r), LIVEMIG_OK);
    EXPECT_EQ(r.guest_addr, i == 0 ? 0u : 1u << 30);
    EXPECT_EQ(r.file_path, nullptr);  // No root dir: in this process's memory.
    EXPECT_EQ(std::memcmp(r.host_ptr, guest.ptr[i], Guest::kSize), 0);
  }
  size_t size = 0;
  const void* state = livemig_received_device_state(receiver.result_, &size);
  EXPECT_EQ(std::string(static_cast<const char*>(state), size), "dev-state");
  // The one blob travels as section "vmm".
  ASSERT_EQ(livemig_received_num_device_sections(receiver.result_), 1u);
  livemig_device_section section;
  ASSERT_EQ(livemig_received_device_section_at(receiver.result_, 0, &section, err.out()),
            LIVEMIG_OK);
  EXPECT_STREQ(section.id, "vmm");
  EXPECT_EQ(section.format_version, 1u);
  EXPECT_EQ(std::string(static_cast<const char*>(section.data), section.size), "dev-state");
  livemig_sender_free(s);
}

// A write made between rounds (the callback runs on the migration thread
// after each pre-copy round, so after round 0 sent every page): marked, it
// reaches the destination; unmarked, the audit counts it.
void WriteAfterRoundZero(bool mark, livemig_stats* stats, std::string* landed) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  bool written = false;
  vm.on_size_hint = [&] {
    if (written) return;
    written = true;
    std::memcpy(guest.ptr[1] + 4096, "late", 4);
    if (mark) {
      EXPECT_EQ(livemig_memory_mark_dirty(guest.memory, (1 << 30) + 4096, 4, nullptr),
                LIVEMIG_OK);
    }
  };
  Err err;
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, stats, err.out()), LIVEMIG_OK)
      << err.message();
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  livemig_received_region r;
  ASSERT_EQ(livemig_received_region_at(receiver.result_, 1, &r), LIVEMIG_OK);
  landed->assign(static_cast<const char*>(r.host_ptr) + 4096, 4);
  livemig_sender_free(s);
}

TEST(CapiSender, PageMarkedDirtyAfterItWasSentIsSentAgain) {
  livemig_stats stats;
  std::string landed;
  WriteAfterRoundZero(/*mark=*/true, &stats, &landed);
  EXPECT_EQ(landed, "late");
  EXPECT_EQ(stats.audit_ran, 1);
  EXPECT_EQ(stats.audit_untracked_pages, 0u);
}

TEST(CapiSender, UnmarkedWriteIsCountedByTheAudit) {
  livemig_stats stats;
  std::string landed;
  WriteAfterRoundZero(/*mark=*/false, &stats, &landed);
  EXPECT_NE(landed, "late");  // The destination holds the older version.
  EXPECT_EQ(stats.audit_ran, 1);
  EXPECT_EQ(stats.audit_untracked_pages, 1u);
}

// Tracked writes from other threads while the migration runs ("vCPUs" that
// pause() stops): the destination ends up with exactly the paused source.
TEST(CapiSender, ConcurrentTrackedWritesLandExactly) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  std::atomic<bool> stop{false};
  std::vector<std::thread> vcpus;
  for (int t = 0; t < 2; ++t) {
    vcpus.emplace_back([&, t] {
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const uint64_t value = i * 2 + t;
        const uint64_t addr = (t == 0 ? 0 : (1u << 30)) + (i % 4) * 4096 + 64;
        EXPECT_EQ(livemig_memory_write(guest.memory, addr, &value, sizeof value, nullptr),
                  LIVEMIG_OK);
      }
    });
  }
  vm.on_pause = [&] {
    stop.store(true, std::memory_order_relaxed);
    for (std::thread& v : vcpus) v.join();  // Then guest memory no longer changes.
  };
  livemig_stats stats;
  Err err;
  const int rc = livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out());
  stop.store(true, std::memory_order_relaxed);  // In case pause() never ran.
  for (std::thread& v : vcpus) {
    if (v.joinable()) v.join();
  }
  ASSERT_EQ(rc, LIVEMIG_OK) << err.message();
  EXPECT_EQ(stats.audit_untracked_pages, 0u);
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region r;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, i, &r), LIVEMIG_OK);
    EXPECT_EQ(std::memcmp(r.host_ptr, guest.ptr[i], Guest::kSize), 0) << "region " << i;
  }
  livemig_sender_free(s);
}

TEST(CapiMemory, AddRegionRefusesBadRegions) {
  livemig_memory* m = livemig_memory_new();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* bytes = static_cast<uint8_t*>(p);
  Err err;
  EXPECT_EQ(livemig_memory_add_region(nullptr, 0, p, page, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "memory: NULL");
  EXPECT_EQ(livemig_memory_add_region(m, 0, nullptr, page, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "host_ptr: NULL");
  EXPECT_EQ(livemig_memory_add_region(m, 0, bytes + 1, page, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), HasSubstr("is not aligned to the page size"));
  EXPECT_EQ(livemig_memory_add_region(m, 0, p, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "size: 0 is not a non-zero multiple of the page size (" +
                               std::to_string(page) + ")");
  // Mark before any region: nothing to seal.
  EXPECT_EQ(livemig_memory_mark_dirty(m, 0, 1, err.out()), LIVEMIG_FAILED_PRECONDITION);
  EXPECT_EQ(err.message(), "memory: no region was added");
  ASSERT_EQ(livemig_memory_add_region(m, 0, p, 2 * page, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_memory_add_region(m, page, bytes + 2 * page, 2 * page, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), HasSubstr("overlaps"));
  // First use seals it.
  EXPECT_EQ(livemig_memory_mark_dirty(m, 0, 1, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_memory_add_region(m, 1 << 20, bytes + 2 * page, 2 * page, err.out()),
            LIVEMIG_FAILED_PRECONDITION);
  EXPECT_THAT(err.message(), StartsWith("memory: sealed by its first use"));
  livemig_memory_free(m);
  munmap(p, 4 * page);
}

TEST(CapiMemory, AccessOutsideTheRegionsIsOutOfRangeAndTouchesNothing) {
  Guest guest;
  Err err;
  EXPECT_EQ(livemig_memory_mark_dirty(guest.memory, Guest::kSize, 1, err.out()),
            LIVEMIG_OUT_OF_RANGE);
  EXPECT_EQ(err.message(), "guest address 0x40000 is not in any region");
  const char data[] = "abc";
  EXPECT_EQ(livemig_memory_write(guest.memory, Guest::kSize - 1, data, 3, err.out()),
            LIVEMIG_OUT_OF_RANGE);
  EXPECT_EQ(guest.ptr[0][Guest::kSize - 1], 0);  // Nothing written.
  EXPECT_EQ(livemig_memory_mark_dirty(guest.memory, 2, UINT64_MAX, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(),
            "range of 18446744073709551615 bytes at guest address 0x2 overflows the guest "
            "address space");
  EXPECT_EQ(livemig_memory_mark_dirty(guest.memory, 5, 0, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_memory_write(guest.memory, 0, nullptr, 3, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "data: NULL");
}

TEST(CapiMemory, WriteIsReadBackAcrossRegionsMappingsUntouchedOtherwise) {
  Guest guest;
  Err err;
  const char data[] = "tracked";
  ASSERT_EQ(livemig_memory_write(guest.memory, (1 << 30) + 8, data, sizeof data, err.out()),
            LIVEMIG_OK);
  EXPECT_STREQ(reinterpret_cast<const char*>(guest.ptr[1] + 8), "tracked");
  char back[sizeof data] = {};
  ASSERT_EQ(livemig_memory_read(guest.memory, (1 << 30) + 8, back, sizeof back, err.out()),
            LIVEMIG_OK);
  EXPECT_STREQ(back, "tracked");
}

TEST(CapiReceiver, CancelBeforeAnySourceIsCancelledWhileWaiting) {
  livemig_options* o = livemig_options_new();
  Err err;
  ASSERT_EQ(livemig_options_set_tcp(o, "127.0.0.1", 0, err.out()), LIVEMIG_OK);
  livemig_receiver* r = livemig_receiver_listen(o, err.out());
  livemig_options_free(o);
  ASSERT_NE(r, nullptr) << err.message();
  char text[64];
  uint16_t port = 0;
  const size_t n = livemig_receiver_endpoint(r, text, sizeof text, &port);
  EXPECT_NE(port, 0);
  EXPECT_EQ(std::string(text), "127.0.0.1:" + std::to_string(port));
  EXPECT_EQ(n, std::strlen(text));
  livemig_receiver_cancel(r);
  int sentinel = 0;
  livemig_received* result = reinterpret_cast<livemig_received*>(&sentinel);  // Overwritten.
  EXPECT_EQ(livemig_receiver_receive_one(r, &result, err.out()), LIVEMIG_CANCELLED);
  EXPECT_EQ(err.message(), "cancelled while waiting for a source");
  EXPECT_EQ(result, nullptr);
  livemig_receiver_free(r);
}

TEST(CapiReceiver, NullArgumentsAndAcceptTimeout) {
  Err err;
  EXPECT_EQ(livemig_receiver_receive_one(nullptr, nullptr, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "receiver: NULL");
  EXPECT_EQ(livemig_receiver_endpoint(nullptr, nullptr, 0, nullptr), 0u);
  livemig_receiver_cancel(nullptr);
  livemig_receiver_free(nullptr);
  livemig_received_free(nullptr);
  EXPECT_EQ(livemig_received_num_regions(nullptr), 0u);
  size_t size = 7;
  EXPECT_EQ(livemig_received_device_state(nullptr, &size), nullptr);
  EXPECT_EQ(size, 0u);
  livemig_received_region region;
  EXPECT_EQ(livemig_received_region_at(nullptr, 0, &region), LIVEMIG_INVALID_ARGUMENT);

  livemig_options* o = livemig_options_new();
  ASSERT_EQ(livemig_options_set_tcp(o, "127.0.0.1", 0, err.out()), LIVEMIG_OK);
  ASSERT_EQ(livemig_options_set_accept_timeout_ms(o, 1, err.out()), LIVEMIG_OK);
  livemig_receiver* r = livemig_receiver_listen(o, err.out());
  livemig_options_free(o);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(livemig_receiver_receive_one(r, nullptr, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "result_out: NULL");
  livemig_received* result = nullptr;
  EXPECT_EQ(livemig_receiver_receive_one(r, &result, err.out()), LIVEMIG_DEADLINE_EXCEEDED);
  livemig_receiver_free(r);
}

TEST(CapiReceiver, ListenWithoutEndpointOrOnABadHostFails) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_receiver_listen(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint: not set");
  ASSERT_EQ(livemig_options_set_unix(o, "/nonexistent-dir/x.sock", err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_receiver_listen(o, err.out()), nullptr);
  EXPECT_NE(err.code(), LIVEMIG_OK);
  EXPECT_THAT(err.message(), HasSubstr("/nonexistent-dir/x.sock"));
  livemig_options_free(o);
}

}  // namespace
