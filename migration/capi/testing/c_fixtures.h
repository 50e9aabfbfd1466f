// File: migration/capi/testing/c_fixtures.h
//
// What the C ABI's tests share, in C++ over livemig.h only: Err (owns a
// livemig_error), Guest (two anonymous mappings the test owns, added as
// guest memory), FakeVm and kOps (vm_ops callbacks that count and can fail),
// CReceiver (a livemig_receiver on 127.0.0.1 whose receive_one runs on a
// thread), SenderTo / NoSuchSocket. Test-only.
//
// Thread safety: none of its own; each object belongs to one test.
#ifndef LIVEMIG_MIGRATION_CAPI_TESTING_C_FIXTURES_H_
#define LIVEMIG_MIGRATION_CAPI_TESTING_C_FIXTURES_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "migration/capi/livemig.h"

namespace livemig::capi_testing {

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

inline int Pause(void* ud, char* message, size_t size) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->pause_rc != LIVEMIG_OK) {
    std::snprintf(message, size, "%s", vm->pause_message);
    return vm->pause_rc;
  }
  ++vm->pauses;
  if (vm->on_pause) vm->on_pause();
  return LIVEMIG_OK;
}
inline int Resume(void* ud, char*, size_t) {
  ++static_cast<FakeVm*>(ud)->resumes;
  return LIVEMIG_OK;
}
inline int DeviceState(void* ud, const void** data, size_t* size, char* message, size_t msize) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->device_rc != LIVEMIG_OK) {
    std::snprintf(message, msize, "%s", vm->device_message);
    return vm->device_rc;
  }
  *data = vm->device_state.data();
  *size = vm->device_state.size();
  return LIVEMIG_OK;
}
inline uint64_t SizeHint(void* ud) {
  auto* vm = static_cast<FakeVm*>(ud);
  if (vm->on_size_hint) vm->on_size_hint();
  return vm->device_state.size();
}
inline const livemig_vm_ops kOps = {Pause,    Resume,  nullptr, DeviceState,
                                    SizeHint, nullptr, nullptr};

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
  // A sender to it; `configure` may set more options (limits, callbacks).
  livemig_sender* NewSender(const std::function<void(livemig_options*)>& configure = nullptr) {
    livemig_options* o = livemig_options_new();
    Err err;
    EXPECT_EQ(livemig_options_set_tcp(o, "127.0.0.1", port_, err.out()), LIVEMIG_OK);
    if (configure) configure(o);
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

inline livemig_sender* SenderTo(const std::string& unix_path) {
  livemig_options* o = livemig_options_new();
  Err err;
  EXPECT_EQ(livemig_options_set_unix(o, unix_path.c_str(), err.out()), LIVEMIG_OK);
  livemig_sender* s = livemig_sender_new(o, err.out());
  livemig_options_free(o);
  return s;
}

inline std::string NoSuchSocket() {
  return "/tmp/livemig-capi-test-no-such-" + std::to_string(getpid()) + ".sock";
}

}  // namespace livemig::capi_testing

#endif  // LIVEMIG_MIGRATION_CAPI_TESTING_C_FIXTURES_H_
