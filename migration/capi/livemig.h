/* File: migration/capi/livemig.h
 *
 * The C ABI of livemig, for VMMs written in C (QEMU) or Rust: a pre-copy live
 * migration sender and receiver behind opaque handles. Plain C99; also
 * compiles as C++. Link with liblivemig.so (`pkg-config --cflags --libs
 * livemig`). Every exported symbol starts with `livemig_`.
 *
 *   livemig_options* o = livemig_options_new();
 *   livemig_options_set_unix(o, "/run/mig.sock", NULL);
 *   livemig_sender* s = livemig_sender_new(o, &err);
 *   livemig_memory* m = livemig_memory_new();
 *   livemig_memory_add_region(m, 0, ram, ram_size, &err);   // caller's mmap
 *   ... the guest runs; the VMM calls livemig_memory_mark_dirty() after
 *   ... every write it does not make through livemig_memory_write() ...
 *   livemig_vm_ops ops = {my_pause, my_resume, NULL, my_device_state, NULL, NULL, NULL};
 *   if (livemig_sender_migrate(s, m, &ops, vm, &stats, &err) != LIVEMIG_OK)
 *     fprintf(stderr, "%s\n", livemig_error_message(err));
 *
 * Building against it (see BUILD.bazel):
 *   bazel build //migration/capi:sdk   # liblivemig.so, livemig.pc, include/
 *   export PKG_CONFIG_PATH=$(bazel info bazel-bin)/migration/capi
 *   gcc -std=c99 vmm.c $(pkg-config --cflags --libs livemig) -o vmm
 * livemig.pc names its library and headers relative to its own directory
 * (${pcfiledir}), with an rpath to it: the files may be copied anywhere
 * together.
 *
 * Errors. A function that can fail returns a livemig_code (LIVEMIG_OK, 0, on
 * success; the values are absl::StatusCode's) or NULL for a constructor, and,
 * when `error_out` is not NULL, stores in *error_out a new livemig_error the
 * caller frees with livemig_error_free() (on success *error_out is set to
 * NULL). error_out may always be NULL. Bad arguments are
 * LIVEMIG_INVALID_ARGUMENT with a message naming the argument or option field
 * ("channels: ...", "memory: NULL"). No C++ exception ever leaves the library:
 * each entry point turns one into LIVEMIG_INTERNAL (LIVEMIG_RESOURCE_EXHAUSTED
 * for an allocation failure).
 *
 * Ownership. Every handle is created by a *_new / *_listen / receive_one
 * function and released by the matching *_free, which accepts NULL. Strings
 * passed in are copied; strings and pointers returned are owned by the
 * handle they came from and live as long as it does. File descriptors passed
 * in (livemig_options_set_fds, livemig_memory_add_file_region) are borrowed:
 * livemig works on its own dup() and never closes the caller's. Mappings the
 * caller lends (add_region, the region_memory callback) are never unmapped
 * by livemig.
 *
 * Thread safety. Handles are not synchronized unless a function says so:
 * livemig_sender_cancel(), livemig_receiver_cancel(), and, on memory with
 * every region added, livemig_memory_mark_dirty/_write/_read, may be called
 * from any thread at any time while the handle lives; a received result is
 * immutable, so its accessors may run on any thread. Callbacks (vm_ops,
 * the progress and round callbacks, region_memory) run on the thread of the
 * call that takes them (livemig_sender_migrate,
 * livemig_receiver_receive_one), one at a time.
 */
#ifndef LIVEMIG_MIGRATION_CAPI_LIVEMIG_H_
#define LIVEMIG_MIGRATION_CAPI_LIVEMIG_H_

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define LIVEMIG_EXPORT __attribute__((visibility("default")))
#else
#define LIVEMIG_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI this header describes; livemig_abi_version() is the library's.
 * A caller built against another value must not use the library.
 *   1  the first.
 *   2  livemig_vm_ops grew device_sections (a caller's struct of ABI 1 is
 *      one pointer shorter); added: endpoints from connected fds, VMM-provided
 *      destination memory, file-backed regions, received device sections.
 *   3  no struct changed; added: page-batch compression (sender spec,
 *      receiver's accepted codecs, livemig_sender_compression_stats),
 *      receiver preallocation, progress and round callbacks
 *      (livemig_progress, livemig_round), the received result's figures
 *      (livemig_received_get_stats).
 *      Every struct ABI 3 added keeps its layout for ever: a later field
 *      comes with a new struct and a new function.
 *   4  no struct changed; added (livemig_abi4.h, included below): the
 *      sender's limits (bandwidth cap, rounds, timeout and on_limit, stall
 *      rounds, auto-converge steps, batch pages), VMM-provided destination
 *      memory with the file it maps (livemig_provided_memory), the sender's
 *      full statistics as JSON.
 *   5  no struct changed; added (livemig_abi5.h, included below): the
 *      sender's pause budget, the received migration as JSON
 *      (manifest.json's text, torn pages included). */
#define LIVEMIG_ABI_VERSION 5
LIVEMIG_EXPORT int livemig_abi_version(void);

/* ---------------------------------------------------------------- Errors */

/* The values of absl::StatusCode (and of gRPC's status codes). */
typedef enum livemig_code {
  LIVEMIG_OK = 0,
  LIVEMIG_CANCELLED = 1,           /* livemig_*_cancel() */
  LIVEMIG_UNKNOWN = 2,             /* sender: handover in doubt */
  LIVEMIG_INVALID_ARGUMENT = 3,    /* bad argument or option, names it */
  LIVEMIG_DEADLINE_EXCEEDED = 4,   /* io / accept timeout */
  LIVEMIG_NOT_FOUND = 5,           /* e.g. a TLS file missing */
  LIVEMIG_ALREADY_EXISTS = 6,
  LIVEMIG_PERMISSION_DENIED = 7,
  LIVEMIG_RESOURCE_EXHAUSTED = 8,
  LIVEMIG_FAILED_PRECONDITION = 9, /* wrong state, e.g. memory sealed */
  LIVEMIG_ABORTED = 10,            /* no convergence within the rounds */
  LIVEMIG_OUT_OF_RANGE = 11,       /* guest address not in any region */
  LIVEMIG_UNIMPLEMENTED = 12,
  LIVEMIG_INTERNAL = 13,
  LIVEMIG_UNAVAILABLE = 14,        /* peer unreachable or gone */
  LIVEMIG_DATA_LOSS = 15,          /* corrupt stream, verification failed */
  LIVEMIG_UNAUTHENTICATED = 16
} livemig_code;

/* An error: a code and a message. Immutable; may be read from any thread. */
typedef struct livemig_error livemig_error;

/* The code; LIVEMIG_OK for NULL. */
LIVEMIG_EXPORT int livemig_error_code(const livemig_error* error);
/* The message, NUL-terminated, owned by `error`; "" for NULL. */
LIVEMIG_EXPORT const char* livemig_error_message(const livemig_error* error);
/* Frees `error`; NULL is a no-op. */
LIVEMIG_EXPORT void livemig_error_free(livemig_error* error);
/* The name of a code ("INVALID_ARGUMENT"); "UNKNOWN" for a value not listed. */
LIVEMIG_EXPORT const char* livemig_code_name(int code);

/* --------------------------------------------------------------- Options */

/* Settings for a sender (where to connect) or a receiver (where to listen).
 * Each setter validates its value at once (LIVEMIG_INVALID_ARGUMENT naming
 * the field, the option left unchanged); NULL `options` is
 * LIVEMIG_INVALID_ARGUMENT "options: NULL". Not synchronized. */
typedef struct livemig_options livemig_options;

typedef enum livemig_verify {
  LIVEMIG_VERIFY_SENT = 0, /* default: every page sent is checked on landing */
  LIVEMIG_VERIFY_FULL = 1, /* and the paused source is re-hashed before the handover */
  LIVEMIG_VERIFY_OFF = 2
} livemig_verify;

/* Defaults: no endpoint, 2 channels (receiver: at most 64), downtime limit
 * 300 ms, verify SENT, plaintext, io timeout 30 s, no accept timeout, no
 * root dir, anonymous regions received into memory, no region_memory
 * callback; ABI 3: no compression (a receiver accepts zstd and lz4), no
 * prealloc, no progress or round callback; ABI 4: no bandwidth cap, 30
 * rounds, 10 minute timeout, cancel at a limit, stall after 5 rounds, no
 * auto-converge, 256 pages per batch. NULL only when out of memory. */
LIVEMIG_EXPORT livemig_options* livemig_options_new(void);
LIVEMIG_EXPORT void livemig_options_free(livemig_options* options);

/* The endpoint: TCP host ("127.0.0.1", "::1", "localhost") and port (0 for a
 * receiver: pick a free one), or a Unix socket path (at most 107 bytes).
 * Field names in errors: "endpoint.host", "endpoint.path". */
LIVEMIG_EXPORT int livemig_options_set_tcp(livemig_options* options, const char* host,
                                           uint16_t port, livemig_error** error_out);
LIVEMIG_EXPORT int livemig_options_set_unix(livemig_options* options, const char* path,
                                            livemig_error** error_out);
/* The endpoint: stream sockets (TCP or Unix) already connected to the
 * peer, one per channel, channel i on fds[i] (QEMU's "fd:" URI; `livemig
 * send/receive --fd=N[,N]`). 1..64 descriptors, each >= 0, no repeats, else
 * LIVEMIG_INVALID_ARGUMENT naming "endpoint.fds" (NULL fds: "fds: NULL").
 * Ownership: the array is copied and the descriptors are borrowed, never
 * closed by livemig: each socket is used through its own dup()
 * (F_DUPFD_CLOEXEC), made by livemig_receiver_listen() for a receiver and by
 * each livemig_sender_migrate() for a sender; the caller's descriptors must
 * stay open until that call returns, and the caller closes them whenever it
 * likes after. That is also where each is checked to be a connected stream
 * socket (LIVEMIG_INVALID_ARGUMENT "fd N: not a socket" / "not connected").
 * A sender opens exactly one channel per descriptor (set_channels, when
 * called, must give the same count, else livemig_sender_new fails with
 * LIVEMIG_INVALID_ARGUMENT naming "channels"). A receiver receives one
 * migration over them; a later receive_one waits, with no connection left to
 * come, until cancelled or its accept timeout (LIVEMIG_DEADLINE_EXCEEDED). */
LIVEMIG_EXPORT int livemig_options_set_fds(livemig_options* options, const int* fds,
                                           size_t num_fds, livemig_error** error_out);
/* Sender: connections to open, 1..64. Receiver: the most it accepts. */
LIVEMIG_EXPORT int livemig_options_set_channels(livemig_options* options, uint32_t channels,
                                                livemig_error** error_out);
/* Sender: the pause the switchover rule aims for, 1 ms .. 1 day. */
LIVEMIG_EXPORT int livemig_options_set_downtime_limit_ms(livemig_options* options,
                                                         uint64_t ms,
                                                         livemig_error** error_out);
/* Sender: a livemig_verify value. */
LIVEMIG_EXPORT int livemig_options_set_verify(livemig_options* options, int verify,
                                              livemig_error** error_out);
/* Mutual TLS 1.3: `dir` holds ca-cert.pem and the role's cert and key
 * (migration/transport/tls_context.h). `hostname` (sender only, may be NULL
 * for a receiver) is the name the destination's certificate must carry. The
 * files are loaded by livemig_sender_new / livemig_receiver_listen. NULL
 * `dir` turns TLS off. */
LIVEMIG_EXPORT int livemig_options_set_tls(livemig_options* options, const char* dir,
                                           const char* hostname, livemig_error** error_out);
/* Every read and write, 1 ms .. 1 day. */
LIVEMIG_EXPORT int livemig_options_set_io_timeout_ms(livemig_options* options, uint64_t ms,
                                                     livemig_error** error_out);
/* Receiver: how long receive_one waits for a source to connect all its
 * channels; 0 (default): for ever. */
LIVEMIG_EXPORT int livemig_options_set_accept_timeout_ms(livemig_options* options,
                                                         uint64_t ms,
                                                         livemig_error** error_out);
/* Receiver: the directory where file-backed regions (and, with
 * `anonymous_as_files` non-zero, anonymous ones as region-<index>.mem) are
 * rebuilt. NULL `dir` clears it. */
LIVEMIG_EXPORT int livemig_options_set_root_dir(livemig_options* options, const char* dir,
                                                int anonymous_as_files,
                                                livemig_error** error_out);

/* How a region is backed at the source (proto RegionInfo.backing). */
typedef enum livemig_backing {
  LIVEMIG_BACKING_ANONYMOUS = 1,
  LIVEMIG_BACKING_FILE = 2 /* livemig_memory_add_file_region() */
} livemig_backing;

/* A region of the table a source sent, as a receiver's region_memory
 * callback sees it. Owned by the library, valid during the call only. */
typedef struct livemig_region_info {
  uint32_t index;        /* in the table: guest address order, from 0 */
  uint64_t guest_addr;
  uint64_t size;         /* bytes, a multiple of the page size */
  int backing;           /* a livemig_backing */
  const char* file_path; /* BACKING_FILE: the path under the root dir; else "" */
  uint64_t file_offset;  /* BACKING_FILE: where the region starts in it; else 0 */
} livemig_region_info;

/* A receiver's source of destination memory (C++ ReceiverOptions::
 * region_memory): called once per region, in table order, when a source's
 * region table arrives (after the table was validated, before anything is
 * created), on the thread running livemig_receiver_receive_one(), with the
 * `user_data` given to livemig_options_set_region_memory().
 *   - To provide memory: store in *addr_out a page-aligned mapping, readable
 *     and writable, of *size_out >= region->size bytes, and return
 *     LIVEMIG_OK. The receiver writes every page of the region into it (its
 *     content need not be zero); the received result's host_ptr is then
 *     addr and its file_path NULL (no file is made for it, even for a
 *     file-backed region). The caller keeps owning the mapping: the receiver
 *     never unmaps it; it must stay mapped until livemig_received_free() of
 *     the result, or, when receive_one fails, until receive_one returns.
 *   - To decline: leave *addr_out NULL (it starts NULL) and return
 *     LIVEMIG_OK; the receiver creates the region itself as without a
 *     callback.
 *   - To refuse: return an error code (outside 1..16: LIVEMIG_UNKNOWN) and
 *     optionally a NUL-terminated message in `message` (at most message_size
 *     bytes with the NUL); receive_one fails with that code and "region I:
 *     the VMM's memory: MESSAGE" (without the leading "region I: " when
 *     MESSAGE starts with it), and the source with the destination's error.
 * A provided mapping that is not page-aligned or smaller than the region
 * fails receive_one with LIVEMIG_INVALID_ARGUMENT "region I: the VMM's
 * memory (...) must be page-aligned and hold the region's N bytes". */
typedef int (*livemig_region_memory_fn)(void* user_data, const livemig_region_info* region,
                                        void** addr_out, size_t* size_out, char* message,
                                        size_t message_size);
/* Receiver: sets (NULL `fn`: clears) the region_memory callback. `user_data`
 * must outlive every receive_one of a receiver listening with these options.
 * It replaces an ABI 4 region_memory_fd callback (livemig_abi4.h). */
LIVEMIG_EXPORT int livemig_options_set_region_memory(livemig_options* options,
                                                     livemig_region_memory_fn fn,
                                                     void* user_data,
                                                     livemig_error** error_out);

/* ------------------------------------------------- ABI 3: more options */

/* Page-batch compression codecs (the values of the C++ wire::Codec). */
typedef enum livemig_codec {
  LIVEMIG_CODEC_NONE = 0,
  LIVEMIG_CODEC_ZSTD = 1,
  LIVEMIG_CODEC_LZ4 = 2
} livemig_codec;

/* Sender (ABI 3): compresses page batches (C++ SenderOptions::compression)
 * with `spec`, the strings `livemig send --compress=` takes: "none"
 * (default), "zstd", "zstd:LEVEL" (1..19; plain "zstd" is 1), "lz4" or
 * "lz4:ACCELERATION" (1..65537; plain "lz4" is 1), strictly (no spaces, no
 * sign, nothing after the number). Each channel compresses its batches; one
 * that does not shrink is sent raw, and incompressible memory makes the
 * channel back off (migration/wire/compression.h). A destination that does
 * not accept the codec fails livemig_sender_migrate() with
 * LIVEMIG_FAILED_PRECONDITION naming the codec, before any page is sent.
 * Errors: NULL spec: LIVEMIG_INVALID_ARGUMENT "compression: NULL"; a bad
 * string: LIVEMIG_INVALID_ARGUMENT "compression: \"SPEC\": ..." listing the
 * accepted forms (the option left unchanged). `spec` is copied. Not
 * synchronized (as every setter). */
LIVEMIG_EXPORT int livemig_options_set_compression(livemig_options* options,
                                                   const char* spec,
                                                   livemig_error** error_out);

/* Receiver (ABI 3): the codecs a source may ask for (C++
 * ReceiverOptions::accept_compression), as a bit set: bit
 * (1u << LIVEMIG_CODEC_ZSTD) accepts zstd, (1u << LIVEMIG_CODEC_LZ4) lz4;
 * 0 accepts none. Default: both. A source asking for another is refused
 * before any page: its migrate fails with LIVEMIG_FAILED_PRECONDITION
 * naming the codec ("... asks for zstd compression; this destination
 * accepts no compression"), while receive_one goes on waiting for a source
 * it can take (at the accept timeout: LIVEMIG_DEADLINE_EXCEEDED "... last
 * refused: ..."). Any other bit (including
 * 1u << LIVEMIG_CODEC_NONE: uncompressed is always accepted):
 * LIVEMIG_INVALID_ARGUMENT "accept_compression: ..." naming the bits. */
#define LIVEMIG_ACCEPT_ZSTD (1u << LIVEMIG_CODEC_ZSTD)
#define LIVEMIG_ACCEPT_LZ4 (1u << LIVEMIG_CODEC_LZ4)
LIVEMIG_EXPORT int livemig_options_set_accept_compression(livemig_options* options,
                                                          uint32_t codecs,
                                                          livemig_error** error_out);

/* Receiver (ABI 3): `prealloc` non-zero makes every region resident
 * (allocated, zeroed, prefaulted on helper threads; VMM-provided memory
 * too) when the source's region table arrives, before round 0 (C++
 * ReceiverOptions::prealloc); 0 (default): pages are faulted in as they
 * land. A destination that cannot fails receive_one with
 * LIVEMIG_RESOURCE_EXHAUSTED naming the region, its file and its bytes (the
 * source gets it as an abort before round 0). Populating must finish within
 * the source's io timeout. livemig_received_get_stats() reports its time
 * and bytes. Never fails but for NULL options. */
LIVEMIG_EXPORT int livemig_options_set_prealloc(livemig_options* options, int prealloc,
                                                livemig_error** error_out);

/* Where a live pre-copy round stands (C++ MigrationProgress): enough for a
 * progress bar. Its layout is fixed (ABI 3). */
typedef struct livemig_progress {
  uint32_t round;             /* 0: the first, full round */
  uint64_t round_pages;       /* pages this round sends (harvested) */
  uint64_t round_pages_sent;  /* of those, handed to the sockets so far */
  uint64_t transferred_bytes; /* written so far, all rounds, all frames */
  uint64_t total_bytes;       /* guest memory size */
  double elapsed_ms;          /* since livemig_sender_migrate() began */
  double round_bytes_per_s;   /* this round's rate so far */
} livemig_progress;

/* Called with a progress report owned by the library, valid during the
 * call only. */
typedef void (*livemig_progress_fn)(void* user_data, const livemig_progress* progress);

/* Sender (ABI 3): sets (NULL `fn`: clears) a progress callback (C++
 * SenderOptions::on_progress), called about every `interval_ms` (1 ms ..
 * 1 day, else LIVEMIG_INVALID_ARGUMENT "progress_interval_ms: ...") while a
 * live round's pages are being sent: never in the pause (so never for the
 * final round), never between rounds (the round callback covers those).
 * Within one migrate, reports come in order: (round, round_pages_sent) and
 * transferred_bytes never decrease. It runs on the thread of
 * livemig_sender_migrate(), never concurrently with the vm_ops or the round
 * callback, and delays the round it reports on: keep it short; it must not
 * call livemig_sender_free() (livemig_sender_cancel() is fine). `user_data`
 * must outlive every migrate of a sender made with these options. The
 * callback is fixed at livemig_sender_new(). */
LIVEMIG_EXPORT int livemig_options_set_progress(livemig_options* options,
                                                livemig_progress_fn fn, void* user_data,
                                                uint64_t interval_ms,
                                                livemig_error** error_out);

/* One finished round (C++ RoundStats). Its layout is fixed (ABI 3). */
typedef struct livemig_round {
  uint32_t round;
  int final;                     /* 1: the switchover round, sent paused */
  uint64_t dirty_pages;          /* pages this round sent (harvested) */
  uint64_t zero_pages;           /* of those, sent as zero runs */
  uint64_t bytes;                /* written to the sockets */
  double duration_ms;
  double bandwidth_bytes_per_s;
  uint64_t dirtied_during_round; /* pages found dirty after it */
  double expected_downtime_ms;   /* the estimate made after it */
  int throttle_percent;
} livemig_round;

/* Called with a round record owned by the library, valid during the call
 * only. */
typedef void (*livemig_round_fn)(void* user_data, const livemig_round* round);

/* Sender (ABI 3): sets (NULL `fn`: clears) a callback for every finished
 * round (C++ SenderOptions::on_round): after each pre-copy round, while the
 * guest runs and the channels are idle, and once more for the final round
 * (final = 1) after the handover, once the pause is over, so a successful
 * migrate reports every round, the last with final = 1; never inside the
 * pause. Same thread and rules as the progress callback. */
LIVEMIG_EXPORT int livemig_options_set_round_callback(livemig_options* options,
                                                      livemig_round_fn fn, void* user_data,
                                                      livemig_error** error_out);

/* ---------------------------------------------------------- Guest memory */

/* Guest physical memory made of mappings the caller owns: livemig never
 * maps, unmaps or resizes them; it reads them and keeps one dirty bit per
 * page. Two phases: add every region, then use it (mark, write, read,
 * migrate); the first use seals it and later additions fail with
 * LIVEMIG_FAILED_PRECONDITION. Each mapping must stay mapped, readable, at
 * its address until livemig_memory_free(). */
typedef struct livemig_memory livemig_memory;

/* NULL only when out of memory. */
LIVEMIG_EXPORT livemig_memory* livemig_memory_new(void);
/* REQUIRES: no other call on `memory` runs. NULL is a no-op. */
LIVEMIG_EXPORT void livemig_memory_free(livemig_memory* memory);

/* Adds [host_ptr, host_ptr + size) at guest address `guest_addr`.
 * host_ptr page-aligned, size a non-zero multiple of the page size, no
 * overlap with another region: else LIVEMIG_INVALID_ARGUMENT. Not
 * synchronized. */
LIVEMIG_EXPORT int livemig_memory_add_region(livemig_memory* memory, uint64_t guest_addr,
                                             void* host_ptr, size_t size,
                                             livemig_error** error_out);

/* Adds a file-backed region: `size` bytes of the file `fd` from byte
 * `file_offset`, at guest address `guest_addr`. Unlike add_region, livemig
 * maps the range itself (MAP_SHARED, read-write) and the source describes
 * it as BACKING_FILE at that offset, so a receiver with a root dir rebuilds
 * it into the file `file_name` under its root dir, at the same offset
 * (NULL `file_name`: "region-<index>.mem", index in guest address order);
 * the C++ API's MmapRegion::FromFile path.
 * The VMM's own mappings of the file must be MAP_SHARED (then its writes
 * and livemig's reads share the page cache; marking them dirty is as for
 * any region); a MAP_PRIVATE mapping's writes never reach the file and are
 * not migrated. Ownership: `fd` is borrowed: livemig works on its own dup()
 * (F_DUPFD_CLOEXEC), so the caller may close `fd` when this returns; the
 * mapping and the dup are released by livemig_memory_free(). Not
 * synchronized. Errors (LIVEMIG_INVALID_ARGUMENT unless said): "fd": < 0 or
 * not open (dup's error); "size": 0 or not a multiple of the page size;
 * "file_offset": not page-aligned; "guest_addr": not page-aligned;
 * "file_name": empty or absolute; LIVEMIG_OUT_OF_RANGE when the file is
 * shorter than file_offset + size; an overlap as add_region;
 * LIVEMIG_FAILED_PRECONDITION once sealed. */
LIVEMIG_EXPORT int livemig_memory_add_file_region(livemig_memory* memory, uint64_t guest_addr,
                                                  size_t size, int fd, uint64_t file_offset,
                                                  const char* file_name,
                                                  livemig_error** error_out);

/* Marks every page that [guest_addr, guest_addr + len) touches dirty, so the
 * next round sends it again. Call it AFTER the write (a page marked before
 * its write may be sent without it). len 0: nothing. Any part outside the
 * regions: LIVEMIG_OUT_OF_RANGE and nothing is marked. Thread-safe; lock-free
 * after the first call. */
LIVEMIG_EXPORT int livemig_memory_mark_dirty(livemig_memory* memory, uint64_t guest_addr,
                                             uint64_t len, livemig_error** error_out);
/* Copies `len` bytes into guest memory (across regions if need be) and marks
 * them; a tracked write. Out of range: LIVEMIG_OUT_OF_RANGE, nothing
 * written. Thread-safe (the bytes race as guest memory does). */
LIVEMIG_EXPORT int livemig_memory_write(livemig_memory* memory, uint64_t guest_addr,
                                        const void* data, size_t len,
                                        livemig_error** error_out);
/* Copies `len` bytes out of guest memory. Thread-safe. */
LIVEMIG_EXPORT int livemig_memory_read(livemig_memory* memory, uint64_t guest_addr,
                                       void* data, size_t len, livemig_error** error_out);

/* ------------------------------------------------------------ VM control */

/* What the sender needs from the VMM, called on the thread that runs
 * livemig_sender_migrate(), never concurrently with each other, each with
 * the `user_data` given to it. A callback that returns an error code may
 * write a NUL-terminated message of at most `message_size` bytes (including
 * the NUL) into `message`; it becomes the migration's error message. A code
 * outside 1..16 is taken as LIVEMIG_UNKNOWN.
 *
 *   pause   required: stop every writer of guest memory. An error fails the
 *           migration with that code; the VM was not paused, so resume is
 *           NOT called.
 *   resume  required: undo pause; called when the migration fails after a
 *           successful pause. Its error is ignored (the migration's error is
 *           returned).
 *   set_throttle  optional: slow the guest to (100 - percent)% (0: off).
 *   device_state  optional (NULL: empty): called once while paused; stores in
 *           *data / *size bytes the callback owns, which the library copies
 *           before it returns to anything else (they may be freed at the next
 *           callback). An error fails the migration; the VM is resumed. It
 *           travels as one section "vmm" (what livemig_received_device_state
 *           returns).
 *   device_state_size_hint  optional: the expected size of the device state.
 *   collect_dirty  optional: OR into words[0..num_words) (bit i of word w =
 *           page 64w+i of region `region_index`, regions numbered in guest
 *           address order) the pages the hypervisor saw written since the
 *           last call (KVM_GET_DIRTY_LOG layout).
 *   device_sections  optional (ABI 2), instead of device_state for a VMM
 *           with many devices: called once while paused; stores in *sections
 *           an array of *count livemig_device_section the callback owns (ids,
 *           bytes and array copied before the library returns to anything
 *           else). Limits (livemig's C++ CheckDeviceSections): 1..4096
 *           sections, ids non-empty, at most 256 bytes, unique, each
 *           section's bytes under 1 MiB; a breach fails the migration with
 *           LIVEMIG_INVALID_ARGUMENT naming the section and nothing of it is
 *           sent. A NULL id, or NULL data with a non-zero size, is
 *           LIVEMIG_INVALID_ARGUMENT "vm_ops.device_sections: section I: ...".
 *           An error fails the migration; the VM is resumed. Setting both
 *           device_state and device_sections is LIVEMIG_INVALID_ARGUMENT
 *           "vm_ops: device_state and device_sections are both set". */
typedef struct livemig_device_section {
  const char* id;          /* NUL-terminated */
  uint32_t format_version; /* the VMM's own versioning of the bytes (0 -> 1) */
  const void* data;
  size_t size;
} livemig_device_section;

typedef struct livemig_vm_ops {
  int (*pause)(void* user_data, char* message, size_t message_size);
  int (*resume)(void* user_data, char* message, size_t message_size);
  void (*set_throttle)(void* user_data, int percent);
  int (*device_state)(void* user_data, const void** data, size_t* size, char* message,
                      size_t message_size);
  uint64_t (*device_state_size_hint)(void* user_data);
  int (*collect_dirty)(void* user_data, size_t region_index, uint64_t* words,
                       size_t num_words, char* message, size_t message_size);
  int (*device_sections)(void* user_data, const livemig_device_section** sections,
                         size_t* count, char* message, size_t message_size);
} livemig_vm_ops;

/* ----------------------------------------------------------------- Stats */

/* The main figures of one migration (migration/stats.h has them all). */
typedef struct livemig_stats {
  char status[16];            /* "completed", "failed", "cancelled", "in-doubt", "none" */
  uint32_t rounds;
  uint32_t channels;
  double total_time_ms;
  double downtime_ms;         /* pause() to the destination's commit */
  double setup_time_ms;
  uint64_t transferred_bytes; /* written to the sockets, all frames */
  uint64_t total_bytes;       /* guest memory size */
  uint64_t normal_pages;      /* pages sent with their bytes */
  uint64_t zero_pages;        /* pages sent as zero runs */
  int converged;              /* 0: switched over by force */
  int audit_ran;              /* the source audit ran (verify sent/full) */
  uint64_t audit_untracked_pages; /* pages written without being marked dirty */
} livemig_stats;

/* ---------------------------------------------------------------- Sender */

typedef struct livemig_sender livemig_sender;

/* A sender for `options` (copied; it may be freed at once). No endpoint set:
 * LIVEMIG_INVALID_ARGUMENT "endpoint: not set"; TLS files are loaded here
 * (LIVEMIG_NOT_FOUND / LIVEMIG_INVALID_ARGUMENT naming the file). Returns
 * NULL on error. Nothing touches the network until migrate. */
LIVEMIG_EXPORT livemig_sender* livemig_sender_new(const livemig_options* options,
                                                  livemig_error** error_out);
/* REQUIRES: no migrate or cancel runs on it. NULL is a no-op. */
LIVEMIG_EXPORT void livemig_sender_free(livemig_sender* sender);

/* Migrates `memory` (seals it) while calling `vm_ops` with `user_data`;
 * blocks until done. On LIVEMIG_OK the VM stays paused: the destination owns
 * it. On any error before the handover the VM is resumed if it was paused,
 * the throttle reset, every harvested page marked dirty again: a later
 * migrate is exact. LIVEMIG_UNKNOWN (status "in-doubt"): the handover was
 * sent but never confirmed; the VM stays paused. Other codes: UNAVAILABLE
 * (destination unreachable or gone), DATA_LOSS, DEADLINE_EXCEEDED, ABORTED
 * (no convergence), CANCELLED, or the destination's code. `stats_out` (may
 * be NULL) is filled on success and on failure. NULL sender, memory, vm_ops,
 * pause or resume: LIVEMIG_INVALID_ARGUMENT naming it. `memory` and
 * `user_data` must outlive the call. REQUIRES: not running twice at once on
 * one sender. */
LIVEMIG_EXPORT int livemig_sender_migrate(livemig_sender* sender, livemig_memory* memory,
                                          const livemig_vm_ops* vm_ops, void* user_data,
                                          livemig_stats* stats_out,
                                          livemig_error** error_out);

/* Makes a running migrate fail with LIVEMIG_CANCELLED promptly, unless its
 * handover was sent already; called while none runs, the next one fails with
 * LIVEMIG_CANCELLED at once. Thread-safe, async-signal-unsafe. NULL: no-op. */
LIVEMIG_EXPORT void livemig_sender_cancel(livemig_sender* sender);

/* A migration's page-batch compression (C++ CompressionStats), over all
 * channels. Its layout is fixed (ABI 3). */
typedef struct livemig_compression_stats {
  int codec;                       /* a livemig_codec */
  int level;                       /* zstd level, lz4 acceleration; 0: none */
  uint64_t compressed_batches;     /* sent compressed */
  uint64_t incompressible_batches; /* tried (or sampled), sent raw */
  uint64_t skipped_batches;        /* sent raw untried (back-off) */
  uint64_t bytes_in;               /* page bytes of the batches sent compressed */
  uint64_t compressed_bytes;       /* their compressed size ("compressed-size") */
  double compression_rate;         /* bytes_in / compressed_bytes; 0: none compressed */
  double busy_ms;                  /* time in the codec, summed over the channels */
  double busy_rate;                /* busy_ms / the migration's total time; 0: none */
} livemig_compression_stats;

/* ABI 3: the compression figures of the last livemig_sender_migrate() on
 * `sender` (also after it failed: what the attempt compressed), into
 * *stats_out; before any migrate: codec LIVEMIG_CODEC_NONE and zeros.
 * NULL sender or stats_out: LIVEMIG_INVALID_ARGUMENT naming it. Thread-safe
 * (a migrate running at the same time: the previous one's figures). */
LIVEMIG_EXPORT int livemig_sender_compression_stats(const livemig_sender* sender,
                                                    livemig_compression_stats* stats_out,
                                                    livemig_error** error_out);

/* -------------------------------------------------------------- Receiver */

typedef struct livemig_receiver livemig_receiver;
typedef struct livemig_received livemig_received;

/* Listens on the options' endpoint (port 0: a free port). NULL on error:
 * "endpoint: not set" (INVALID_ARGUMENT), the bind error, TLS files. */
LIVEMIG_EXPORT livemig_receiver* livemig_receiver_listen(const livemig_options* options,
                                                         livemig_error** error_out);
/* Closes the listener. REQUIRES: no receive_one or cancel runs. NULL: no-op.
 * Results already received stay valid. */
LIVEMIG_EXPORT void livemig_receiver_free(livemig_receiver* receiver);

/* The bound endpoint's text ("127.0.0.1:40123", "unix:/run/m.sock") into
 * `buf` (NUL-terminated, truncated to buf_size - 1); returns its full length
 * as snprintf does. `port_out` (may be NULL) gets the TCP port (0 for Unix).
 * buf may be NULL when buf_size is 0. Thread-safe. NULL receiver: 0. */
LIVEMIG_EXPORT size_t livemig_receiver_endpoint(const livemig_receiver* receiver, char* buf,
                                                size_t buf_size, uint16_t* port_out);

/* Receives one migration, blocking. On LIVEMIG_OK *result_out is a new
 * result the caller frees with livemig_received_free(); on error NULL.
 * CANCELLED "cancelled while waiting for a source" when cancelled before a
 * source connected. REQUIRES: not running twice at once. */
LIVEMIG_EXPORT int livemig_receiver_receive_one(livemig_receiver* receiver,
                                                livemig_received** result_out,
                                                livemig_error** error_out);

/* Makes a running receive_one fail with LIVEMIG_CANCELLED promptly; while
 * none runs, the next one does. After the source was told its copy is
 * verified, the cancel is the answer to its handover (nothing committed, the
 * source resumes), so it waits for that one frame. A running one that had
 * already committed
 * (the destination owns the guest) finishes and returns the migration; the
 * request then stops the next one. Thread-safe. NULL: no-op. */
LIVEMIG_EXPORT void livemig_receiver_cancel(livemig_receiver* receiver);

/* One received region. host_ptr: its rebuilt bytes, mapped read-write,
 * valid until livemig_received_free() (for memory the region_memory callback
 * provided: that mapping, which stays the caller's). file_path: the rebuilt
 * file, or NULL for a region held only in memory; owned by the result. */
typedef struct livemig_received_region {
  uint64_t guest_addr;
  uint64_t size;
  void* host_ptr;
  const char* file_path;
} livemig_received_region;

/* Regions in guest address order. NULL result: 0. */
LIVEMIG_EXPORT size_t livemig_received_num_regions(const livemig_received* result);
/* Region `index`: LIVEMIG_OUT_OF_RANGE past the end; NULL arguments:
 * LIVEMIG_INVALID_ARGUMENT. */
LIVEMIG_EXPORT int livemig_received_region_at(const livemig_received* result, size_t index,
                                              livemig_received_region* region_out);
/* The bytes of the device state section "vmm" (what a source's device_state
 * callback gave; owned by the result; may be non-NULL with size 0), or size
 * 0 when there is no such section. NULL result: NULL, *size_out 0. */
LIVEMIG_EXPORT const void* livemig_received_device_state(const livemig_received* result,
                                                         size_t* size_out);
/* The device state's sections, in the order the source sent them (one "vmm"
 * section for a source that used device_state). NULL result: 0. */
LIVEMIG_EXPORT size_t livemig_received_num_device_sections(const livemig_received* result);
/* Section `index` into *section_out: id (NUL-terminated) and data are owned
 * by the result and valid until livemig_received_free(); data may be
 * non-NULL with size 0. NULL result or section_out: LIVEMIG_INVALID_ARGUMENT
 * naming it; past the end: LIVEMIG_OUT_OF_RANGE naming the index and the
 * count. Thread-safe (the result is immutable). */
LIVEMIG_EXPORT int livemig_received_device_section_at(const livemig_received* result,
                                                      size_t index,
                                                      livemig_device_section* section_out,
                                                      livemig_error** error_out);
/* The section whose id is `id`, as device_section_at; none: LIVEMIG_NOT_FOUND
 * naming the id. NULL result, id or section_out: LIVEMIG_INVALID_ARGUMENT. */
LIVEMIG_EXPORT int livemig_received_find_device_section(const livemig_received* result,
                                                        const char* id,
                                                        livemig_device_section* section_out,
                                                        livemig_error** error_out);
/* What a receiver counted for one migration (C++ ReceivedMigration). Its
 * layout is fixed (ABI 3). */
typedef struct livemig_received_stats {
  uint32_t rounds;
  uint32_t channels;
  uint64_t raw_pages;              /* pages received with their bytes */
  uint64_t zero_pages;             /* pages received as zero runs */
  uint64_t bytes_received;
  uint64_t pages_written_to_files; /* of raw_pages: through the file, not the mapping */
  int compression;                 /* the codec agreed, a livemig_codec */
  uint64_t compressed_batches;     /* batches that arrived compressed */
  double decompress_ms;            /* summed over the channels */
  double prealloc_ms;              /* livemig_options_set_prealloc: making regions resident */
  uint64_t prealloc_bytes;         /* bytes it populated; 0 without prealloc */
} livemig_received_stats;

/* ABI 3: the result's figures into *stats_out. NULL result or stats_out:
 * LIVEMIG_INVALID_ARGUMENT naming it. Thread-safe (immutable result). */
LIVEMIG_EXPORT int livemig_received_get_stats(const livemig_received* result,
                                              livemig_received_stats* stats_out,
                                              livemig_error** error_out);
/* 1 if the page-hash digests were compared and matched, 0 otherwise. */
LIVEMIG_EXPORT int livemig_received_verified(const livemig_received* result);
/* Unmaps the rebuilt memory (files stay). NULL: no-op. */
LIVEMIG_EXPORT void livemig_received_free(livemig_received* result);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#include "livemig_abi4.h" /* ABI 4's functions and types. */
#include "livemig_abi5.h" /* ABI 5's. */

#endif /* LIVEMIG_MIGRATION_CAPI_LIVEMIG_H_ */
