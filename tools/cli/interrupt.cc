#include "tools/cli/interrupt.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

namespace livemig::cli {
namespace {

std::mutex g_cancel_mu;
std::function<void()> g_cancel;  // Guarded by g_cancel_mu.

// Written (false -> true, once) by the signal thread before it takes
// g_cancel_mu; read by commands after SetCancel. The mutex, not the atomic's
// order, is what makes the store visible to a command that registered its
// callback too late to be called (see interrupt.h); seq_cst is kept because
// it costs nothing here.
std::atomic<bool> g_interrupted{false};

}  // namespace

void SetCancel(std::function<void()> cancel) {
  std::lock_guard<std::mutex> lock(g_cancel_mu);
  g_cancel = std::move(cancel);
}

bool Interrupted() { return g_interrupted.load(); }

void StartSignalThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      std::fprintf(stderr, "\nlivemig: %s, aborting\n", strsignal(sig));
      g_interrupted.store(true);
      std::lock_guard<std::mutex> lock(g_cancel_mu);
      if (g_cancel) g_cancel();
    }
  }).detach();
}

}  // namespace livemig::cli
