/* File: migration/capi/livemig_abi5.h
 *
 * ABI 5 of livemig's C ABI (livemig.h, which includes this file at its end;
 * it may also be included alone, it includes livemig.h). Its functions are
 * exported at version LIVEMIG_5 (livemig.map). The conventions are
 * livemig.h's: codes, ownership, thread safety.
 *
 *   - The sender's pause budget (livemig_options_set_max_pause).
 *   - The received migration as JSON (livemig_received_stats_json): what
 *     `livemig receive` writes as manifest.json, so a field the receiver
 *     gains later (as torn_pages did) reaches a C caller without a new
 *     struct. livemig_received_get_stats' struct stays as ABI 3 fixed it. */
#ifndef LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI5_H_
#define LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI5_H_

#include <stddef.h>
#include <stdint.h>

#include "livemig.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------- ABI 5: the pause budget */

/* Sender (ABI 5): the longest the guest may stay paused before the handover
 * (C++ SenderOptions::max_pause): the final round, the device state and the
 * verification each wait at most for what is left of it, so a destination
 * that reads or answers just fast enough to beat every io timeout cannot
 * keep the guest paused longer; past it the migration fails with
 * LIVEMIG_DEADLINE_EXCEEDED ("the guest stayed paused for max_pause ...")
 * and the guest is resumed. 1 .. 86400000 ms, or 0 for none; default 60000.
 * A forced switchover (LIVEMIG_ON_LIMIT_FORCE) with much left to send may
 * need more. Error (LIVEMIG_INVALID_ARGUMENT, options unchanged):
 * "max_pause_ms: must be 0 (none) or 1 .. 86400000 ms, got N". */
LIVEMIG_EXPORT int livemig_options_set_max_pause(livemig_options* options,
                                                 uint64_t max_pause_ms,
                                                 livemig_error** error_out);

/* ------------------------------------------ ABI 5: the received migration */

/* Receiver (ABI 5): `result` as one JSON object on one line (C++
 * ReceivedJson, migration/received_json.h), fields only ever added:
 *   {"status":"completed","verified":true|false,
 *    "regions":[{"index","guest_addr","size","file" ("" for memory that is
 *                not a file the receiver made),"file_offset",
 *                "page_hash_root" (16 hex digits)},...],
 *    "stats":{"raw_pages","zero_pages","torn_pages" (pages that landed torn
 *             in a pre-copy round and were received again),
 *             "bytes_received","rounds","channels","device_state_bytes",
 *             "compression" ("none", "zstd", "lz4"),"compressed_batches",
 *             "decompress_ms"}}
 * Into `buf` (NUL-terminated, truncated to buf_size - 1); returns the full
 * length as snprintf does, so a return >= buf_size means it did not fit:
 * call again with a buffer of the returned length + 1. buf may be NULL when
 * buf_size is 0. Thread-safe (immutable result). NULL result: 0 ("" in
 * buf). */
LIVEMIG_EXPORT size_t livemig_received_stats_json(const livemig_received* result, char* buf,
                                                  size_t buf_size);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif /* LIVEMIG_MIGRATION_CAPI_LIVEMIG_ABI5_H_ */
