#include "core/internal/membarrier.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace livemig::core_internal {
namespace {

int Membarrier(int cmd) { return static_cast<int>(syscall(__NR_membarrier, cmd, 0, 0)); }

// Written once under the call_once below, read by every marking thread.
// Relaxed loads are enough: a thread that still reads `false` after
// registration merely takes the always-correct fetch_or path.
std::atomic<bool> g_available{false};
std::once_flag g_once;

void Register() {
  const int supported = Membarrier(MEMBARRIER_CMD_QUERY);
  if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return;
  if (Membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) return;
  g_available.store(true, std::memory_order_release);
}

}  // namespace

bool AsymmetricFenceAvailable() {
  if (g_available.load(std::memory_order_relaxed)) return true;
  std::call_once(g_once, Register);
  return g_available.load(std::memory_order_acquire);
}

void HeavyFence() {
  if (g_available.load(std::memory_order_acquire)) {
    if (Membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return;
    // Writers are already skipping RMWs on the promise of this barrier; a
    // local fence would silently lose dirty pages. Stop instead.
    std::fprintf(stderr,
                 "livemig: membarrier(PRIVATE_EXPEDITED) failed after "
                 "registration (errno %d); dirty tracking cannot stay exact\n",
                 errno);
    std::abort();
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace livemig::core_internal
