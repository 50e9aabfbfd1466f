// File: core/internal/membarrier.h
//
// An asymmetric fence built on membarrier(2) (MEMBARRIER_CMD_PRIVATE_EXPEDITED).
//
// The dirty bitmap's hot path (a guest write) wants to skip the atomic
// read-modify-write when the page's bit is already set. On x86 that skip is
// only safe if the harvester can force every thread of the process through a
// full memory barrier between clearing bits and copying pages: otherwise a
// writer's data store may still sit in its store buffer when the harvester
// copies the page, and the bit that would have re-sent it was already clear.
// HeavyFence() is that barrier; LightFenceAvailable() says whether the cheap
// side may rely on it.
//
// Thread safety: both functions may be called from any thread at any time.
#ifndef LIVEMIG_CORE_INTERNAL_MEMBARRIER_H_
#define LIVEMIG_CORE_INTERNAL_MEMBARRIER_H_

namespace livemig::core_internal {

// Returns true iff membarrier(2) private expedited is registered for this
// process, so HeavyFence() serializes every running thread. The first call
// registers it; later calls are one relaxed load.
bool AsymmetricFenceAvailable();

// Executes a full memory barrier on every CPU running a thread of this process
// (membarrier), or a seq_cst fence in this thread when that is not available
// (callers must then not rely on the asymmetric protocol; see above).
void HeavyFence();

}  // namespace livemig::core_internal

#endif  // LIVEMIG_CORE_INTERNAL_MEMBARRIER_H_
