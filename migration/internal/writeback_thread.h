// File: migration/internal/writeback_thread.h
//
// WritebackThread: starts writeback of a RegionStore's files
// (RegionStore::StartWriteback) on a thread of its own whenever kicked, so
// that the receiver's channel readers never block in sync_file_range (which
// waits when the device queue is full) while pages keep arriving.
//
// Thread safety: Kick() from any thread; kicks while one runs coalesce. The
// destructor waits for a writeback start in progress.
#ifndef LIVEMIG_MIGRATION_INTERNAL_WRITEBACK_THREAD_H_
#define LIVEMIG_MIGRATION_INTERNAL_WRITEBACK_THREAD_H_

#include <condition_variable>
#include <mutex>
#include <thread>

#include "migration/region_store.h"

namespace livemig::migration_internal {

class WritebackThread {
 public:
  explicit WritebackThread(const RegionStore& store)
      : store_(store), thread_([this] { Loop(); }) {}
  WritebackThread(const WritebackThread&) = delete;
  WritebackThread& operator=(const WritebackThread&) = delete;
  ~WritebackThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void Kick() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_ = true;
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return pending_ || stop_; });
      if (stop_) return;
      pending_ = false;
      lock.unlock();
      store_.StartWriteback();
      lock.lock();
    }
  }

  const RegionStore& store_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;  // Guarded by mu_.
  bool stop_ = false;     // Guarded by mu_.
  std::thread thread_;    // Last: starts once the fields above exist.
};


}  // namespace livemig::migration_internal

#endif  // LIVEMIG_MIGRATION_INTERNAL_WRITEBACK_THREAD_H_
