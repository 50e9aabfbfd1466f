/* File: migration/capi/livemig_abi4.h
 *
 * ABI 4 of livemig's C ABI (livemig.h, which includes this file at its end;
 * it may also be included alone, it includes livemig.h). Its functions are
 * exported at version LIVEMIG_4 (livemig.map). The conventions are
 * livemig.h's: error_out, codes, ownership, thread safety.
 *
 *   - The sender's limits: bandwidth cap, round limit and pre-copy timeout
 *     with what happens at them, stall detection, auto-converge's throttle
 *     steps, pages per batch (C++ SenderOptions). Each setter validates at
 *     once: LIVEMIG_INVALID_ARGUMENT naming the argument, the options left
 *     unchanged; NULL options: "options: NULL". The defaults are
 *     SenderOptions' (listed with each setter).
 *   - VMM-provided destination memory with the file it maps
 *     (livemig_options_set_region_memory_fd): round 0 then lands in that
 *     file with pwrite(2), not through the mapping.
 *   - The sender's full statistics as JSON (livemig_sender_stats_json).
 *
 * Every struct ABI 4 adds keeps its layout for ever, as ABI 3's. */
#ifndef LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI4_H_
#define LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI4_H_

#include <stddef.h>
#include <stdint.h>

#include "livemig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------- ABI 4: sender limits */

/* Sender (ABI 4): caps what all channels together write, in bytes per
 * second (C++ SenderOptions::max_bandwidth): a token bucket with a burst of
 * 1/20 s, counting bytes on the wire (compressed bytes with compression).
 * 0 (default): no cap. The switchover rule measures the capped bandwidth, so
 * a cap also makes the pause estimate longer. Under a cap, batches carry
 * fewer pages than livemig_options_set_batch_pages asks, so that one goes
 * out within a quarter of the io timeout; a cap too low for even one 4096-
 * byte page in that time makes the migration fail with
 * LIVEMIG_INVALID_ARGUMENT (the message gives the lowest cap that works).
 * Never fails but for NULL options. */
LIVEMIG_EXPORT int livemig_options_set_max_bandwidth(livemig_options* options,
                                                     uint64_t bytes_per_s,
                                                     livemig_error** error_out);

/* What a sender does at a limit (C++ SenderOptions::OnLimit). */
typedef enum livemig_on_limit {
  /* Default: the migration fails, the VM resumed (LIVEMIG_ABORTED "did not
   * converge within N rounds ...", "dirty volume did not shrink for N
   * rounds ..."; LIVEMIG_DEADLINE_EXCEEDED "did not converge within the T
   * timeout ..."). */
  LIVEMIG_ON_LIMIT_CANCEL = 0,
  /* Switch over anyway: pause and send what is dirty, however long the
   * pause takes; the stats' converged is 0. */
  LIVEMIG_ON_LIMIT_FORCE = 1
} livemig_on_limit;

/* Sender (ABI 4): the limits of the pre-copy phase (C++ SenderOptions::
 * max_rounds, timeout, on_limit), checked after each live round; with
 * LIVEMIG_ON_LIMIT_CANCEL the timeout also cuts a round still going out
 * (with _FORCE that round finishes first; the io timeout bounds each read
 * and write):
 *   max_rounds  live rounds, round 0 included (the final, paused round is
 *               one more): 1 .. 2^32-1, default 30. At 1 the decision after
 *               round 0 is the last: switch over if the pause fits the
 *               downtime limit, else on_limit.
 *   timeout_ms  from livemig_sender_migrate()'s start to the switchover
 *               decision: 1 ms .. 1 day, or 0 for none; default 600000 (10
 *               minutes, some 600 GB at 1 GB/s).
 *   on_limit    a livemig_on_limit; it also applies to a stall
 *               (livemig_options_set_stall_rounds) without auto-converge.
 * Errors (LIVEMIG_INVALID_ARGUMENT): "max_rounds: must be at least 1, got
 * 0"; "timeout_ms: must be 0 (none) or 1 .. 86400000 ms, got N"; "on_limit:
 * must be LIVEMIG_ON_LIMIT_CANCEL or _FORCE (0..1), got N". */
LIVEMIG_EXPORT int livemig_options_set_limits(livemig_options* options, uint32_t max_rounds,
                                              uint64_t timeout_ms, int on_limit,
                                              livemig_error** error_out);

/* Sender (ABI 4): a dirty volume that does not shrink below its minimum so
 * far for `rounds` live rounds in a row (round 0 never counts) is a stall
 * (C++ SenderOptions::stall_rounds): with auto-converge a throttle step,
 * without it the on_limit policy (LIVEMIG_ABORTED "dirty volume did not
 * shrink for N rounds (B bytes pending)" with LIVEMIG_ON_LIMIT_CANCEL).
 * Default 5; 0: never. Never fails but for NULL options. */
LIVEMIG_EXPORT int livemig_options_set_stall_rounds(livemig_options* options, uint32_t rounds,
                                                    livemig_error** error_out);

/* Sender (ABI 4): auto-converge (C++ SenderOptions::auto_converge and
 * throttle_*, QEMU's steps). `enable` non-zero: when the guest dirties more
 * than half of what a round sent (pending plus device state bytes) two
 * rounds in a row, or stalls, the sender calls vm_ops.set_throttle with
 * throttle_initial, then throttle_initial + throttle_increment and so on,
 * capped at throttle_max (each step restarts both counts), and
 * set_throttle(0) when the migration fails. Each of the three is a percent,
 * 1 .. 99, and throttle_initial <= throttle_max; defaults 20, 10, 99.
 * `enable` 0 (default): off; the three are then not looked at (and left as
 * they were). Errors (LIVEMIG_INVALID_ARGUMENT): "throttle_initial: must be
 * 1 .. 99, got N" (likewise throttle_increment, throttle_max);
 * "throttle_initial: 50 is above throttle_max 30". */
LIVEMIG_EXPORT int livemig_options_set_auto_converge(livemig_options* options, int enable,
                                                     int throttle_initial,
                                                     int throttle_increment,
                                                     int throttle_max,
                                                     livemig_error** error_out);

/* The most pages a batch may carry: one frame's payload, 64 MiB. */
#define LIVEMIG_MAX_BATCH_PAGES 16384u

/* Sender (ABI 4): pages per page-batch frame (C++ SenderOptions::
 * batch_pages), the unit a channel copies, hashes, compresses and writes:
 * 1 .. LIVEMIG_MAX_BATCH_PAGES, default 256 (1 MiB). Each channel holds a
 * buffer of that many pages. Errors: LIVEMIG_INVALID_ARGUMENT "batch_pages:
 * must be 1 .. 16384, got N". */
LIVEMIG_EXPORT int livemig_options_set_batch_pages(livemig_options* options, uint32_t pages,
                                                   livemig_error** error_out);

/* ------------------------------- ABI 4: destination memory with its file */

/* What a region_memory_fd callback lends for one region (C++
 * ProvidedMemory). The library fills it with {NULL, 0, -1, 0} before each
 * call. Its layout is fixed (ABI 4). */
typedef struct livemig_provided_memory {
  void* addr;           /* NULL: decline (the receiver makes its own memory) */
  size_t size;          /* bytes at addr, >= the region's */
  int fd;               /* the file addr maps MAP_SHARED; -1: none */
  uint64_t file_offset; /* where addr's first byte is in that file */
} livemig_provided_memory;

/* A receiver's source of destination memory, as livemig_region_memory_fn
 * (livemig.h: when it is called, how to decline or refuse, the mapping's
 * rules and ownership, the errors) with one more thing a VMM may give: the
 * file its mapping maps (a memfd, a tmpfs or disk file; shared), in fd and
 * file_offset. Round 0's raw pages are then written into the file with
 * pwrite(2) instead of through the mapping: pages the file does not hold
 * yet are allocated without being cleared first, and the receiver never
 * faults the mapping in for them (livemig_received_stats'
 * pages_written_to_files counts them). Compressed batches, later rounds,
 * hugetlbfs files and a receiver with livemig_options_set_prealloc land
 * through the mapping as without fd. Every page is still written (zero
 * pages too) and checked where it landed.
 * addr must map the file fd from file_offset, shared, readable and
 * writable, with no gap (another file would get the pages while the
 * mapping kept stale ones): livemig checks it against /proc/self/maps.
 * Ownership: fd is borrowed. livemig works on its own dup() (F_DUPFD_CLOEXEC),
 * made once every region's callback has returned and closed before
 * livemig_receiver_receive_one() returns; the VMM's descriptor must stay
 * open until then, and livemig never closes it. fd and file_offset are
 * looked at only with a non-NULL addr. Errors, failing receive_one as
 * "region I: the VMM's memory: ..." (LIVEMIG_INVALID_ARGUMENT unless said):
 * "fd: N is not a descriptor (-1: none)" (below -1); "fd: N is not open";
 * "fd: N is not open for writing"; "fd: N is not a regular file";
 * "file_offset: 0x... is not aligned to the page size (4096)";
 * LIVEMIG_OUT_OF_RANGE "fd: N is a file of B bytes, too short for size S at
 * file_offset O" (the region's size); and, the mapping against fd, "the
 * VMM's memory [0x…, +S) " followed by "comes with fd N, open read-only:
 * round 0 writes it", "comes with fd N, open O_APPEND: ...", "is mapped
 * r--s at 0x…: not readable and writable", "is a private mapping at 0x…:
 * what is written to its fd would not show there", "at 0x… maps another
 * file (inode I) than its fd N (inode J)", "at 0x… maps file offset X; its
 * file_offset puts that address at Y", "is not mapped at 0x…". */
typedef int (*livemig_region_memory_fd_fn)(void* user_data, const livemig_region_info* region,
                                           livemig_provided_memory* memory_out, char* message,
                                           size_t message_size);

/* Receiver (ABI 4): sets (NULL `fn`: clears) the region_memory_fd callback.
 * A receiver has one source of destination memory: this replaces a
 * callback livemig_options_set_region_memory() set, and that function
 * replaces this one (either with NULL clears both). `user_data` must
 * outlive every receive_one of a receiver listening with these options.
 * Never fails but for NULL options. */
LIVEMIG_EXPORT int livemig_options_set_region_memory_fd(livemig_options* options,
                                                        livemig_region_memory_fd_fn fn,
                                                        void* user_data,
                                                        livemig_error** error_out);

/* ------------------------------------------------ ABI 4: statistics as JSON */

/* The full statistics (C++ MigrationStats::ToJson(): QEMU query-migrate's
 * RAM field names under "ram", "round-stats" with one object per round,
 * "downtime-breakdown", "audit", "compression"; the object `livemig send
 * --json` prints, less the keys the CLI adds about its own guest) of the
 * last livemig_sender_migrate() on `sender`, also after it failed (what the
 * attempt did, status "failed", "cancelled" or "in-doubt"; a call refused
 * for its arguments changes nothing); before any migrate, those of none
 * (status "none", zeros). One JSON object on one line, no newline, into
 * `buf` (NUL-terminated, truncated to buf_size - 1); returns its full length
 * as snprintf does, so a return >= buf_size means it did not fit: call again
 * with a buffer of the returned length + 1 (a migrate finishing in between
 * may change it: compare again). buf may be NULL when buf_size is 0.
 * Thread-safe (a migrate running at the same time: the previous one's).
 * NULL sender: 0 ("" in buf). */
LIVEMIG_EXPORT size_t livemig_sender_stats_json(const livemig_sender* sender, char* buf,
                                                size_t buf_size);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI4_H_ */
