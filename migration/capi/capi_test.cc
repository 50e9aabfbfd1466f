// File: migration/capi/capi_test.cc
//
// The C ABI from C++: the failure paths, with the exact codes and messages
// livemig.h documents, round trips through the C receiver, and ABI 2's
// additions: endpoints from connected fds, device state sections,
// VMM-provided destination memory, file-backed regions.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Owns a livemig_error* filled through error_out.
class Err {
 public:
  ~Err() { livemig_error_free(e_); }
  livemig_error** out() {
    livemig_error_free(e_);
    e_ = nullptr;
    return &e_;
  }
  int code() const { return livemig_error_code(e_); }
  std::string message() const { return livemig_error_message(e_); }
  bool empty() const { return e_ == nullptr; }

 private:
  livemig_error* e_ = nullptr;
};

// Two page-aligned anonymous mappings the test owns, added as guest memory.
class Guest {
 public:
  static constexpr size_t kSize = 64 * 4096;
  Guest() {
    for (int i = 0; i < 2; ++i) {
      void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
      EXPECT_NE(p, MAP_FAILED);
      ptr[i] = static_cast<uint8_t*>(p);
      for (size_t j = 0; j < kSize / 2; ++j) ptr[i][j] = static_cast<uint8_t>(j * 13 + i);
    }
    memory = livemig_memory_new();
    Err err;
    EXPECT_EQ(livemig_memory_add_region(memory, 0, ptr[0], kSize, err.out()), LIVEMIG_OK);
    EXPECT_EQ(livemig_memory_add_region(memory, 1 << 30, ptr[1], kSize, err.out()),
              LIVEMIG_OK);
  }
  ~Guest() {
    livemig_memory_free(memory);
    for (uint8_t* p : ptr) munmap(p, kSize);
  }
  uint8_t* ptr[2] = {nullptr, nullptr};
  livemig_memory* memory = nullptr;
};

// A VM whose callbacks count and can fail or run a hook.
struct FakeVm {
  int pauses = 0;
  int resumes = 0;
  int pause_rc = LIVEMIG_OK;
  const char* pause_message = "";
  int device_rc = LIVEMIG_OK;
  const char* device_message = "";
  std::string device_state = "dev-state";
  std::function<void()> on_pause;
  std::function<void()> on_size_hint;  // After every pre-copy round.
};

int Pause(void* ud, char* message, size_t size) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->pause_rc != LIVEMIG_OK) {
    std::snprintf(message, size, "%s", vm->pause_message);
    return vm->pause_rc;
  }
  ++vm->pauses;
  if (vm->on_pause) vm->on_pause();
  return LIVEMIG_OK;
}
int Resume(void* ud, char*, size_t) {
  ++static_cast<FakeVm*>(ud)->resumes;
  return LIVEMIG_OK;
}
int DeviceState(void* ud, const void** data, size_t* size, char* message, size_t msize) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->device_rc != LIVEMIG_OK) {
    std::snprintf(message, msize, "%s", vm->device_message);
    return vm->device_rc;
  }
  *data = vm->device_state.data();
  *size = vm->device_state.size();
  return LIVEMIG_OK;
}
uint64_t SizeHint(void* ud) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->on_size_hint) vm->on_size_hint();
  return vm->device_state.size();
}
const livemig_vm_ops kOps = {Pause, Resume, nullptr, DeviceState, SizeHint, nullptr, nullptr};

// A C receiver on 127.0.0.1 with receive_one running on a thread.
class CReceiver {
 public:
  // `configure` may set more options (root dir, region memory).
  explicit CReceiver(const std::function<void(livemig_options*)>& configure = nullptr) {
    livemig_options* o = livemig_options_new();
    Err err;
    EXPECT_EQ(livemig_options_set_tcp(o, "127.0.0.1", 0, err.out()), LIVEMIG_OK);
    if (configure) configure(o);
    receiver_ = livemig_receiver_listen(o, err.out());
    livemig_options_free(o);
    EXPECT_NE(receiver_, nullptr) << err.message();
    livemig_receiver_endpoint(receiver_, nullptr, 0, &port_);
    thread_ = std::thread([this] {
      rc_ = livemig_receiver_receive_one(receiver_, &result_, error_.out());
    });
  }
  // Joins (cancelling a receive still running: the sender has returned).
  void Join() {
    if (!thread_.joinable()) return;
    livemig_receiver_cancel(receiver_);
    thread_.join();
  }
  ~CReceiver() {
    Join();
    livemig_received_free(result_);
    livemig_receiver_free(receiver_);
  }
  livemig_sender* NewSender() {
    livemig_options* o = livemig_options_new();
    Err err;
    EXPECT_EQ(livemig_options_set_tcp(o, "127.0.0.1", port_, err.out()), LIVEMIG_OK);
    livemig_sender* s = livemig_sender_new(o, err.out());
    livemig_options_free(o);
    EXPECT_NE(s, nullptr) << err.message();
    return s;
  }
  uint16_t port_ = 0;
  int rc_ = -1;
  livemig_received* result_ = nullptr;
  Err error_;

 private:
  livemig_receiver* receiver_ = nullptr;
  std::thread thread_;
};

livemig_sender* SenderTo(const std::string& unix_path) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_unix(o, unix_path.c_str(), err.out()), LIVEMIG_OK);
  livemig_sender* s = livemig_sender_new(o, err.out());
  livemig_options_free(o);
  return s;
}

std::string NoSuchSocket() {
  return "/tmp/livemig-capi-test-no-such-" + std::to_string(getpid()) + ".sock";
}

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

// ------------------------------------------------- Endpoints from connected fds

TEST(CapiOptions, SetFdsRefusesBadDescriptorListsNamingTheField) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_fds(o, nullptr, 1, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "fds: NULL");
  const int none[1] = {3};
  EXPECT_EQ(livemig_options_set_fds(o, none, 0, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint.fds: 0 descriptors, must be 1 .. 64 (one per channel)");
  std::vector<int> many(65);
  for (int i = 0; i < 65; ++i) many[i] = 100 + i;
  EXPECT_EQ(livemig_options_set_fds(o, many.data(), many.size(), err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint.fds: 65 descriptors, must be 1 .. 64 (one per channel)");
  const int negative[2] = {3, -1};
  EXPECT_EQ(livemig_options_set_fds(o, negative, 2, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "endpoint.fds[1]: -1 is not a descriptor");
  const int repeated[3] = {5, 6, 5};
  EXPECT_EQ(livemig_options_set_fds(o, repeated, 3, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(),
            "endpoint.fds[2]: descriptor 5 repeats endpoint.fds[0] (one socket per channel)");
  EXPECT_EQ(livemig_options_set_fds(nullptr, none, 1, err.out()), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  livemig_options_free(o);
}

TEST(CapiSender, FdsWithAnotherChannelCountFailsAtNew) {
  livemig_options* o = livemig_options_new();
  Err err;
  const int fds[2] = {7, 8};
  ASSERT_EQ(livemig_options_set_fds(o, fds, 2, err.out()), LIVEMIG_OK);
  ASSERT_EQ(livemig_options_set_channels(o, 3, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_sender_new(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "channels: 3 with 2 endpoint.fds: one connected socket per channel");
  livemig_options_free(o);
}

TEST(CapiSender, DescriptorThatIsNotASocketFailsListenAndMigrate) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  livemig_options* o = livemig_options_new();
  Err err;
  ASSERT_EQ(livemig_options_set_fds(o, &p[0], 1, err.out()), LIVEMIG_OK);
  EXPECT_EQ(livemig_receiver_listen(o, err.out()), nullptr);
  EXPECT_EQ(err.code(), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "fd " + std::to_string(p[0]) + ": not a socket (Socket operation on non-socket)");
  livemig_sender* s = livemig_sender_new(o, err.out());
  ASSERT_NE(s, nullptr) << err.message();
  livemig_options_free(o);
  Guest guest;
  FakeVm vm;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_THAT(err.message(), HasSubstr("fd " + std::to_string(p[0]) + ": not a socket"));
  EXPECT_EQ(vm.pauses, 0);
  livemig_sender_free(s);
  close(p[0]);
  close(p[1]);
}

TEST(CapiSender, MigratesOverConnectedSocketsTheCallerClosesAtOnce) {
  // Two socketpairs: channel i is source[i] <-> destination[i].
  int source[2], destination[2];
  for (int i = 0; i < 2; ++i) {
    int pair[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    source[i] = pair[0];
    destination[i] = pair[1];
  }
  Err err;
  livemig_options* o = livemig_options_new();
  ASSERT_EQ(livemig_options_set_fds(o, destination, 2, err.out()), LIVEMIG_OK);
  livemig_receiver* r = livemig_receiver_listen(o, err.out());
  ASSERT_NE(r, nullptr) << err.message();
  char text[64];
  livemig_receiver_endpoint(r, text, sizeof text, nullptr);
  EXPECT_EQ(std::string(text), "fd:" + std::to_string(destination[0]) + "," +
                                   std::to_string(destination[1]));
  // Borrowed: the receiver works on its dups, so ours may go now.
  for (int fd : destination) close(fd);
  ASSERT_EQ(livemig_options_set_fds(o, source, 2, err.out()), LIVEMIG_OK);
  livemig_sender* s = livemig_sender_new(o, err.out());
  ASSERT_NE(s, nullptr) << err.message();
  livemig_options_free(o);

  livemig_received* result = nullptr;
  int receive_rc = -1;
  Err receive_err;
  std::thread receiving(
      [&] { receive_rc = livemig_receiver_receive_one(r, &result, receive_err.out()); });
  Guest guest;
  FakeVm vm;
  livemig_stats stats;
  const int rc = livemig_sender_migrate(s, guest.memory, &kOps, &vm, &stats, err.out());
  for (int fd : source) close(fd);
  if (rc != LIVEMIG_OK) livemig_receiver_cancel(r);
  receiving.join();
  ASSERT_EQ(rc, LIVEMIG_OK) << err.message();
  ASSERT_EQ(receive_rc, LIVEMIG_OK) << receive_err.message();
  EXPECT_EQ(stats.channels, 2u);
  ASSERT_EQ(livemig_received_num_regions(result), 2u);
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(result, i, &region), LIVEMIG_OK);
    EXPECT_EQ(std::memcmp(region.host_ptr, guest.ptr[i], Guest::kSize), 0);
  }
  livemig_received_free(result);
  livemig_receiver_free(r);
  livemig_sender_free(s);
}

// ------------------------------------------------------- Device state sections

struct SectionsVm : FakeVm {
  std::vector<livemig_device_section> sections;
  int sections_rc = LIVEMIG_OK;
};

int Sections(void* ud, const livemig_device_section** sections, size_t* count, char* message,
             size_t size) {
  auto* vm = static_cast<SectionsVm*>(ud);
  if (vm->sections_rc != LIVEMIG_OK) {
    std::snprintf(message, size, "virtio-net: queue busy");
    return vm->sections_rc;
  }
  *sections = vm->sections.data();
  *count = vm->sections.size();
  return LIVEMIG_OK;
}

livemig_vm_ops SectionOps() {
  livemig_vm_ops ops = kOps;
  ops.device_state = nullptr;
  ops.device_sections = Sections;
  return ops;
}

TEST(CapiSender, DeviceSectionsArriveInOrderWithTheirIdsAndVersions) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  SectionsVm vm;
  const std::string cpu = "rip=0xfff0";
  const std::string net(70000, 'n');  // Several frames' worth of... one section.
  vm.sections = {{"cpu0", 3, cpu.data(), cpu.size()},
                 {"virtio-net", 0, net.data(), net.size()},
                 {"empty", 1, nullptr, 0}};
  const livemig_vm_ops ops = SectionOps();
  Err err;
  ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &ops, &vm, nullptr, err.out()),
            LIVEMIG_OK)
      << err.message();
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
  const livemig_received* got = receiver.result_;
  ASSERT_EQ(livemig_received_num_device_sections(got), 3u);
  livemig_device_section section;
  ASSERT_EQ(livemig_received_device_section_at(got, 0, &section, err.out()), LIVEMIG_OK);
  EXPECT_STREQ(section.id, "cpu0");
  EXPECT_EQ(section.format_version, 3u);
  EXPECT_EQ(std::string(static_cast<const char*>(section.data), section.size), cpu);
  ASSERT_EQ(livemig_received_device_section_at(got, 1, &section, err.out()), LIVEMIG_OK);
  EXPECT_STREQ(section.id, "virtio-net");
  EXPECT_EQ(section.format_version, 1u);  // 0 is taken as 1.
  EXPECT_EQ(std::string(static_cast<const char*>(section.data), section.size), net);
  ASSERT_EQ(livemig_received_find_device_section(got, "empty", &section, err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(section.size, 0u);
  ASSERT_EQ(livemig_received_find_device_section(got, "cpu0", &section, err.out()), LIVEMIG_OK);
  EXPECT_EQ(section.format_version, 3u);
  // No section "vmm": the single-blob accessor has nothing.
  size_t size = 99;
  livemig_received_device_state(got, &size);
  EXPECT_EQ(size, 0u);

  EXPECT_EQ(livemig_received_device_section_at(got, 3, &section, err.out()),
            LIVEMIG_OUT_OF_RANGE);
  EXPECT_EQ(err.message(), "index: 3, the result has 3 device sections");
  EXPECT_EQ(livemig_received_find_device_section(got, "vmm", &section, err.out()),
            LIVEMIG_NOT_FOUND);
  EXPECT_EQ(err.message(), "id: no device section \"vmm\" among the 3 received");
  EXPECT_EQ(livemig_received_device_section_at(nullptr, 0, &section, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "result: NULL");
  EXPECT_EQ(livemig_received_device_section_at(got, 0, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "section_out: NULL");
  EXPECT_EQ(livemig_received_find_device_section(got, nullptr, &section, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "id: NULL");
  EXPECT_EQ(livemig_received_num_device_sections(nullptr), 0u);
  livemig_sender_free(s);
}

TEST(CapiSender, DeviceStateAndDeviceSectionsBothSetIsInvalidArgument) {
  Guest guest;
  livemig_sender* s = SenderTo(NoSuchSocket());
  ASSERT_NE(s, nullptr);
  SectionsVm vm;
  livemig_vm_ops ops = SectionOps();
  ops.device_state = DeviceState;
  Err err;
  EXPECT_EQ(livemig_sender_migrate(s, guest.memory, &ops, &vm, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "vm_ops: device_state and device_sections are both set; set one");
  EXPECT_EQ(vm.pauses, 0);
  livemig_sender_free(s);
}

// Migrates with `vm`'s sections to a C receiver; returns the sender's error.
void MigrateSections(SectionsVm& vm, Err& err, int* rc) {
  Guest guest;
  CReceiver receiver;
  livemig_sender* s = receiver.NewSender();
  const livemig_vm_ops ops = SectionOps();
  *rc = livemig_sender_migrate(s, guest.memory, &ops, &vm, nullptr, err.out());
  livemig_sender_free(s);
}

TEST(CapiSender, BadDeviceSectionsFailTheMigrationNamingTheSectionAndResume) {
  const std::string bytes = "x";
  struct Case {
    std::vector<livemig_device_section> sections;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"a", 1, bytes.data(), 1}, {nullptr, 1, bytes.data(), 1}},
       "vm_ops.device_sections: section 1: id is NULL"},
      {{{"a", 1, nullptr, 5}}, "vm_ops.device_sections: section 0 (\"a\"): NULL data of 5 bytes"},
      {{{"a", 1, bytes.data(), 1}, {"a", 1, bytes.data(), 1}},
       "VmControl: device state section id \"a\" given twice"},
      {{}, "VmControl::DeviceSections gave 0 sections; want 1 to 4096"},
  };
  for (const Case& c : cases) {
    SectionsVm vm;
    vm.sections = c.sections;
    Err err;
    int rc = -1;
    MigrateSections(vm, err, &rc);
    EXPECT_EQ(rc, LIVEMIG_INVALID_ARGUMENT) << c.message;
    EXPECT_EQ(err.message(), c.message);
    EXPECT_EQ(vm.pauses, 1);
    EXPECT_EQ(vm.resumes, 1);
  }
}

TEST(CapiSender, DeviceSectionsCallbackErrorFailsWithItsCodeAndResumes) {
  SectionsVm vm;
  vm.sections_rc = LIVEMIG_UNAVAILABLE;
  Err err;
  int rc = -1;
  MigrateSections(vm, err, &rc);
  EXPECT_EQ(rc, LIVEMIG_UNAVAILABLE);
  EXPECT_EQ(err.message(), "virtio-net: queue busy");
  EXPECT_EQ(vm.resumes, 1);
}

// ------------------------------------------------- VMM-provided destination memory

// A memfd the test maps shared, lent region by region.
struct ProvidedRam {
  ProvidedRam() {
    fd = memfd_create("capi-test-ram", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, kSize), 0);
    void* p = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    base = static_cast<uint8_t*>(p);
    std::memset(base, 0xAB, kSize);  // Not zero: the receiver writes every page.
  }
  ~ProvidedRam() {
    munmap(base, kSize);
    close(fd);
  }
  static constexpr size_t kSize = Guest::kSize;
  int fd = -1;
  uint8_t* base = nullptr;
  std::vector<livemig_region_info> seen;  // file_path not kept.
  std::vector<std::string> paths;
  std::function<int(const livemig_region_info*, void**, size_t*, char*, size_t)> answer;
};

int ProvideRam(void* ud, const livemig_region_info* region, void** addr, size_t* size,
               char* message, size_t message_size) {
  auto* ram = static_cast<ProvidedRam*>(ud);
  EXPECT_EQ(*addr, nullptr);
  ram->seen.push_back(*region);
  ram->paths.push_back(region->file_path);
  return ram->answer(region, addr, size, message, message_size);
}

std::function<void(livemig_options*)> WithRam(ProvidedRam* ram) {
  return [ram](livemig_options* o) {
    Err err;
    EXPECT_EQ(livemig_options_set_region_memory(o, ProvideRam, ram, err.out()), LIVEMIG_OK);
  };
}

TEST(CapiReceiver, RegionMemoryCallbackReceivesIntoTheVmmsMemfdAndNeverUnmapsIt) {
  ProvidedRam ram;
  ram.answer = [&](const livemig_region_info* region, void** addr, size_t* size, char*,
                   size_t) {
    if (region->index == 0) {  // Region 1: declined, the receiver's own.
      *addr = ram.base;
      *size = ProvidedRam::kSize;
    }
    return LIVEMIG_OK;
  };
  Guest guest;
  {
    CReceiver receiver(WithRam(&ram));
    livemig_sender* s = receiver.NewSender();
    FakeVm vm;
    Err err;
    ASSERT_EQ(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
              LIVEMIG_OK)
        << err.message();
    livemig_sender_free(s);
    receiver.Join();
    ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();
    ASSERT_EQ(ram.seen.size(), 2u);
    for (uint32_t i = 0; i < 2; ++i) {
      EXPECT_EQ(ram.seen[i].index, i);
      EXPECT_EQ(ram.seen[i].guest_addr, i == 0 ? 0u : 1u << 30);
      EXPECT_EQ(ram.seen[i].size, Guest::kSize);
      EXPECT_EQ(ram.seen[i].backing, LIVEMIG_BACKING_ANONYMOUS);
      EXPECT_EQ(ram.paths[i], "");
      EXPECT_EQ(ram.seen[i].file_offset, 0u);
    }
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, 0, &region), LIVEMIG_OK);
    EXPECT_EQ(region.host_ptr, ram.base);
    EXPECT_EQ(region.file_path, nullptr);
    ASSERT_EQ(livemig_received_region_at(receiver.result_, 1, &region), LIVEMIG_OK);
    EXPECT_NE(region.host_ptr, ram.base);
    EXPECT_EQ(std::memcmp(region.host_ptr, guest.ptr[1], Guest::kSize), 0);
  }  // livemig_received_free, livemig_receiver_free.
  // Still mapped, still holding the guest's bytes (zero pages too: 0xAB gone).
  EXPECT_EQ(std::memcmp(ram.base, guest.ptr[0], Guest::kSize), 0);
}

TEST(CapiReceiver, RegionMemoryRefusalFailsReceiveWithItsCodeNamingTheRegion) {
  ProvidedRam ram;
  ram.answer = [](const livemig_region_info* region, void**, size_t*, char* message,
                  size_t size) {
    if (region->index == 0) return LIVEMIG_OK;
    std::snprintf(message, size, "no hugepages left");
    return LIVEMIG_RESOURCE_EXHAUSTED;
  };
  Guest guest;
  CReceiver receiver(WithRam(&ram));
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  Err err;
  EXPECT_NE(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, err.out()),
            LIVEMIG_OK);
  EXPECT_EQ(vm.pauses, 0);  // Refused at the region table, before any round.
  livemig_sender_free(s);
  receiver.Join();
  EXPECT_EQ(receiver.rc_, LIVEMIG_RESOURCE_EXHAUSTED);
  EXPECT_EQ(receiver.error_.message(), "region 1: the VMM's memory: no hugepages left");
}

TEST(CapiReceiver, RegionMemoryErrorWithoutMessageNamesTheCallback) {
  ProvidedRam ram;
  ram.answer = [](const livemig_region_info*, void**, size_t*, char*, size_t) { return 99; };
  Guest guest;
  CReceiver receiver(WithRam(&ram));
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  EXPECT_NE(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, nullptr), LIVEMIG_OK);
  livemig_sender_free(s);
  receiver.Join();
  EXPECT_EQ(receiver.rc_, LIVEMIG_UNKNOWN);
  EXPECT_EQ(receiver.error_.message(),
            "region 0: the VMM's memory: the region_memory callback failed (returned 99)");
}

TEST(CapiReceiver, ProvidedMemoryTooSmallOrMisalignedIsInvalidArgument) {
  for (int misaligned = 0; misaligned < 2; ++misaligned) {
    ProvidedRam ram;
    ram.answer = [&](const livemig_region_info*, void** addr, size_t* size, char*, size_t) {
      *addr = ram.base + (misaligned ? 8 : 0);
      *size = misaligned ? ProvidedRam::kSize - 8 : 4096;
      return LIVEMIG_OK;
    };
    Guest guest;
    CReceiver receiver(WithRam(&ram));
    livemig_sender* s = receiver.NewSender();
    FakeVm vm;
    EXPECT_NE(livemig_sender_migrate(s, guest.memory, &kOps, &vm, nullptr, nullptr),
              LIVEMIG_OK);
    livemig_sender_free(s);
    receiver.Join();
    EXPECT_EQ(receiver.rc_, LIVEMIG_INVALID_ARGUMENT);
    EXPECT_THAT(receiver.error_.message(), StartsWith("region 0: the VMM's memory ("));
    EXPECT_THAT(receiver.error_.message(),
                HasSubstr("must be page-aligned and hold the region's 262144 bytes"));
  }
}

TEST(CapiOptions, SetRegionMemoryNeedsOptions) {
  Err err;
  EXPECT_EQ(livemig_options_set_region_memory(nullptr, ProvideRam, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "options: NULL");
  livemig_options* o = livemig_options_new();
  EXPECT_EQ(livemig_options_set_region_memory(o, nullptr, nullptr, err.out()), LIVEMIG_OK);
  livemig_options_free(o);
}

// ---------------------------------------------------------- File-backed regions

// A temporary file of `size` bytes, unlinked at the end.
struct TempFile {
  explicit TempFile(size_t size) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    path = std::string(tmp != nullptr ? tmp : "/tmp") + "/capi-file-XXXXXX";
    fd = mkstemp(path.data());
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
  }
  ~TempFile() {
    if (fd >= 0) close(fd);
    unlink(path.c_str());
  }
  std::string path;
  int fd = -1;
};

TEST(CapiMemory, AddFileRegionRefusesBadArgumentsNamingThem) {
  TempFile file(4 * 4096);
  livemig_memory* m = livemig_memory_new();
  Err err;
  auto add = [&](uint64_t guest, size_t size, int fd, uint64_t offset, const char* name) {
    return livemig_memory_add_file_region(m, guest, size, fd, offset, name, err.out());
  };
  EXPECT_EQ(livemig_memory_add_file_region(nullptr, 0, 4096, file.fd, 0, nullptr, err.out()),
            LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "memory: NULL");
  EXPECT_EQ(add(0, 4096, -1, 0, nullptr), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "fd: -1 is not a descriptor");
  int closed[2];
  ASSERT_EQ(pipe(closed), 0);
  close(closed[0]);
  close(closed[1]);
  EXPECT_EQ(add(0, 4096, closed[0], 0, nullptr), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "fd: " + std::to_string(closed[0]) + " is not open");
  EXPECT_EQ(add(0, 0, file.fd, 0, nullptr), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "size: 0 is not a non-zero multiple of the page size (4096)");
  EXPECT_EQ(add(0, 4096, file.fd, 100, nullptr), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "file_offset: 0x64 is not aligned to the page size (4096)");
  EXPECT_EQ(add(12, 4096, file.fd, 0, nullptr), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "guest_addr: 0xc is not aligned to the page size (4096)");
  EXPECT_EQ(add(0, 4096, file.fd, 0, ""), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(), "file_name: empty (NULL for the default name)");
  EXPECT_EQ(add(0, 4096, file.fd, 0, "/etc/ram"), LIVEMIG_INVALID_ARGUMENT);
  EXPECT_EQ(err.message(),
            "file_name: \"/etc/ram\" is absolute; it must be relative to the receiver's "
            "root dir");
  EXPECT_EQ(add(0, 4 * 4096, file.fd, 4096, nullptr), LIVEMIG_OUT_OF_RANGE);
  EXPECT_EQ(err.message(), "fd: " + std::to_string(file.fd) +
                              " is a file of 16384 bytes, too short for size 16384 at "
                              "file_offset 4096");
  ASSERT_EQ(add(0, 2 * 4096, file.fd, 0, nullptr), LIVEMIG_OK) << err.message();
  EXPECT_EQ(add(4096, 4096, file.fd, 2 * 4096, nullptr), LIVEMIG_INVALID_ARGUMENT);  // Overlap.
  EXPECT_THAT(err.message(), HasSubstr("overlap"));
  uint8_t byte;
  ASSERT_EQ(livemig_memory_read(m, 0, &byte, 1, err.out()), LIVEMIG_OK);  // Seals.
  EXPECT_EQ(add(1 << 20, 4096, file.fd, 0, nullptr), LIVEMIG_FAILED_PRECONDITION);
  livemig_memory_free(m);
}

TEST(CapiSender, FileRegionIsRebuiltFromItsFileAtItsOffset) {
  constexpr size_t kPage = 4096;
  constexpr size_t kRegion = 16 * kPage;
  TempFile file(2 * kPage + 2 * kRegion);
  // The VMM's own shared mapping of the file, where the guest writes.
  void* p = mmap(nullptr, 2 * kPage + 2 * kRegion, PROT_READ | PROT_WRITE, MAP_SHARED, file.fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  uint8_t* vmm = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < 2 * kRegion; ++i) vmm[2 * kPage + i] = static_cast<uint8_t>(i * 31 + 7);

  Guest anonymous;  // Regions at 0 and 1 GiB; file regions at 2 and 3 GiB.
  livemig_memory* m = livemig_memory_new();
  Err err;
  ASSERT_EQ(livemig_memory_add_region(m, 0, anonymous.ptr[0], Guest::kSize, err.out()),
            LIVEMIG_OK);
  ASSERT_EQ(livemig_memory_add_file_region(m, 3ull << 30, kRegion, file.fd,
                                           2 * kPage + kRegion, nullptr, err.out()),
            LIVEMIG_OK)
      << err.message();
  ASSERT_EQ(livemig_memory_add_file_region(m, 2ull << 30, kRegion, file.fd, 2 * kPage,
                                           "ram/node0.img", err.out()),
            LIVEMIG_OK)
      << err.message();
  close(file.fd);  // Borrowed: livemig has its own dup.
  file.fd = -1;
  // A write through the VMM's mapping, marked: livemig reads the same pages.
  std::memcpy(vmm + 2 * kPage + 5 * kPage, "late", 4);
  ASSERT_EQ(livemig_memory_mark_dirty(m, (2ull << 30) + 5 * kPage, 4, err.out()), LIVEMIG_OK);
  char got[4];
  ASSERT_EQ(livemig_memory_read(m, (2ull << 30) + 5 * kPage, got, 4, err.out()), LIVEMIG_OK);
  EXPECT_EQ(std::string(got, 4), "late");

  const std::string root = std::string(std::getenv("TEST_TMPDIR")) + "/file-region-root";
  ASSERT_EQ(mkdir(root.c_str(), 0755), 0);
  ProvidedRam ram;  // Declines every region; records the table.
  ram.answer = [](const livemig_region_info*, void**, size_t*, char*, size_t) {
    return LIVEMIG_OK;
  };
  CReceiver receiver([&](livemig_options* o) {
    WithRam(&ram)(o);
    Err e;
    EXPECT_EQ(livemig_options_set_root_dir(o, root.c_str(), 0, e.out()), LIVEMIG_OK);
  });
  livemig_sender* s = receiver.NewSender();
  FakeVm vm;
  ASSERT_EQ(livemig_sender_migrate(s, m, &kOps, &vm, nullptr, err.out()), LIVEMIG_OK)
      << err.message();
  livemig_sender_free(s);
  receiver.Join();
  ASSERT_EQ(receiver.rc_, LIVEMIG_OK) << receiver.error_.message();

  ASSERT_EQ(ram.seen.size(), 3u);
  EXPECT_EQ(ram.seen[0].backing, LIVEMIG_BACKING_ANONYMOUS);
  EXPECT_EQ(ram.seen[1].backing, LIVEMIG_BACKING_FILE);
  EXPECT_EQ(ram.paths[1], "ram/node0.img");
  EXPECT_EQ(ram.seen[1].file_offset, 2 * kPage);
  EXPECT_EQ(ram.seen[2].backing, LIVEMIG_BACKING_FILE);
  EXPECT_EQ(ram.paths[2], "region-2.mem");  // NULL file_name: the default.
  EXPECT_EQ(ram.seen[2].file_offset, 2 * kPage + kRegion);

  const std::string paths[2] = {root + "/ram/node0.img", root + "/region-2.mem"};
  for (size_t i = 0; i < 2; ++i) {
    livemig_received_region region;
    ASSERT_EQ(livemig_received_region_at(receiver.result_, i + 1, &region), LIVEMIG_OK);
    ASSERT_NE(region.file_path, nullptr);
    EXPECT_EQ(std::string(region.file_path), paths[i]);
    const uint8_t* source = vmm + 2 * kPage + i * kRegion;
    EXPECT_EQ(std::memcmp(region.host_ptr, source, kRegion), 0);
    // On disk at the source's offset, the bytes before it zero.
    std::string on_disk(2 * kPage + (i + 1) * kRegion, '\1');
    FILE* f = std::fopen(paths[i].c_str(), "rb");
    ASSERT_NE(f, nullptr) << paths[i];
    const size_t n = std::fread(on_disk.data(), 1, on_disk.size() + 1, f);
    std::fclose(f);
    ASSERT_EQ(n, on_disk.size()) << paths[i];
    const size_t at = 2 * kPage + i * kRegion;
    EXPECT_EQ(std::memcmp(on_disk.data() + at, source, kRegion), 0) << paths[i];
    EXPECT_EQ(on_disk.find_first_not_of('\0'), at) << paths[i];
  }
  livemig_memory_free(m);
  munmap(vmm, 2 * kPage + 2 * kRegion);
}

}  // namespace
