/* File: migration/capi/example.c
 *
 * A C99 program that embeds livemig through its C ABI only (livemig.h,
 * liblivemig.so), built with the system's plain gcc by c_example_test.sh:
 *
 *   example LIVEMIG_BINARY WORKDIR
 *
 * Part 1: maps two regions itself (anonymous memory and a memfd), writes
 * them, and migrates them with livemig_sender_migrate() and a VM control of
 * function pointers to a `livemig receive --once` process over a Unix
 * socket; then checks the pause/resume counts, the manifest, and the rebuilt
 * files byte for byte.
 * Part 2: the same memory to a livemig_receiver in this process (TCP,
 * 127.0.0.1, port 0) on a second thread; checks the received regions (host
 * pointers and files) and the device state byte for byte; ABI 3: the pages
 * go zstd-compressed, and a round callback sees every round, the last one
 * flagged final; ABI 4: limits set (a refused one named), and the stats as
 * JSON by the size-query convention.
 * Part 3 (ABI 2): over two socketpairs handed to both sides as connected
 * fds, a memory whose second region is file-backed (the memfd, sent as
 * BACKING_FILE and rebuilt into a named file at its offset), device state as
 * named sections, and a receiver that takes region 0 into a memfd mapping
 * of its own, lent with the memfd (ABI 4's region_memory_fd callback), so
 * round 0 lands in that file.
 *
 * Exit status 0 when every check held; otherwise 1, the failure on stderr.
 */
#define _GNU_SOURCE /* memfd_create */

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "livemig.h"

#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "example.c:%d: check failed: %s\n", __LINE__, #cond); \
      exit(1);                                                              \
    }                                                                       \
  } while (0)

/* Fails with the error's code and message unless rc is LIVEMIG_OK. */
static void check_ok(int rc, livemig_error* err, const char* what) {
  if (rc != LIVEMIG_OK) {
    fprintf(stderr, "example.c: %s: %s (%d): %s\n", what, livemig_code_name(rc), rc,
            livemig_error_message(err));
    exit(1);
  }
  livemig_error_free(err);
}

enum { kRegionA = 1 << 20, kRegionB = 512 << 10 };
static const uint64_t kGuestA = 0;
static const uint64_t kGuestB = 0x40000000u;
static const char kDeviceState[] = "cpu0:rip=0xfff0,rax=42;virtio-blk:queue=3";

/* The fake VM behind the function pointers. */
typedef struct fake_vm {
  int pauses;
  int resumes;
  int last_throttle;
} fake_vm;

static int vm_pause(void* user_data, char* message, size_t message_size) {
  (void)message;
  (void)message_size;
  ((fake_vm*)user_data)->pauses++;
  return LIVEMIG_OK;
}

static int vm_resume(void* user_data, char* message, size_t message_size) {
  (void)message;
  (void)message_size;
  ((fake_vm*)user_data)->resumes++;
  return LIVEMIG_OK;
}

static void vm_set_throttle(void* user_data, int percent) {
  ((fake_vm*)user_data)->last_throttle = percent;
}

static int vm_device_state(void* user_data, const void** data, size_t* size, char* message,
                           size_t message_size) {
  (void)user_data;
  (void)message;
  (void)message_size;
  *data = kDeviceState;
  *size = sizeof kDeviceState - 1;
  return LIVEMIG_OK;
}

static uint64_t vm_device_state_size_hint(void* user_data) {
  (void)user_data;
  return sizeof kDeviceState - 1;
}

static const livemig_vm_ops kVmOps = {vm_pause,        vm_resume,
                                      vm_set_throttle, vm_device_state,
                                      vm_device_state_size_hint, NULL, NULL};

/* Part 3's device state: one section per device. */
static const char kCpuState[] = "rip=0xfff0,rax=42";
static const char kBlkState[] = "virtio-blk:queue=3";
static const livemig_device_section kSections[] = {
    {"cpu0", 2, kCpuState, sizeof kCpuState - 1},
    {"virtio-blk", 1, kBlkState, sizeof kBlkState - 1}};

static int vm_device_sections(void* user_data, const livemig_device_section** sections,
                              size_t* count, char* message, size_t message_size) {
  (void)user_data;
  (void)message;
  (void)message_size;
  *sections = kSections;
  *count = sizeof kSections / sizeof kSections[0];
  return LIVEMIG_OK;
}

static const livemig_vm_ops kSectionVmOps = {vm_pause, vm_resume, vm_set_throttle, NULL,
                                             NULL,     NULL,      vm_device_sections};

/* Compares the file at `path` with `size` bytes at `expected`. */
static void check_file(const char* path, const unsigned char* expected, size_t size) {
  FILE* f = fopen(path, "rb");
  unsigned char* got;
  size_t n;
  if (f == NULL) {
    fprintf(stderr, "example.c: cannot open %s: %s\n", path, strerror(errno));
    exit(1);
  }
  got = malloc(size + 1);
  CHECK(got != NULL);
  n = fread(got, 1, size + 1, f);
  fclose(f);
  if (n != size || memcmp(got, expected, size) != 0) {
    fprintf(stderr, "example.c: %s: %zu bytes, differs from the source's %zu\n", path, n,
            size);
    exit(1);
  }
  free(got);
}

static char* read_text(const char* path) {
  FILE* f = fopen(path, "rb");
  char* text;
  size_t n;
  CHECK(f != NULL);
  text = malloc(1 << 16);
  CHECK(text != NULL);
  n = fread(text, 1, (1 << 16) - 1, f);
  text[n] = '\0';
  fclose(f);
  return text;
}

/* Part 1: to `livemig receive` over a Unix socket. */
static void migrate_to_cli(const char* livemig_bin, const char* work, livemig_memory* memory,
                           const unsigned char* a, const unsigned char* b) {
  char sock[256], dir[256], listen_flag[300], dir_flag[300], line[512], path[300],
      expect[64];
  int pipe_fds[2], status, listening = 0;
  pid_t child;
  FILE* child_err;
  livemig_options* options;
  livemig_sender* sender;
  livemig_error* err = NULL;
  livemig_stats stats;
  fake_vm vm = {0, 0, -1};
  char* manifest;
  int rc;

  snprintf(sock, sizeof sock, "%s/recv.sock", work);
  snprintf(dir, sizeof dir, "%s/cli-out", work);
  snprintf(listen_flag, sizeof listen_flag, "--unix=%s", sock);
  snprintf(dir_flag, sizeof dir_flag, "--dir=%s", dir);
  CHECK(mkdir(dir, 0755) == 0);

  CHECK(pipe(pipe_fds) == 0);
  child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    dup2(pipe_fds[1], 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    execl(livemig_bin, "livemig", "receive", listen_flag, dir_flag, "--once", (char*)NULL);
    perror("execl");
    _exit(127);
  }
  close(pipe_fds[1]);
  child_err = fdopen(pipe_fds[0], "r");
  CHECK(child_err != NULL);
  /* The receiver says when it listens: no polling, no sleeps. */
  while (!listening && fgets(line, sizeof line, child_err) != NULL) {
    fprintf(stderr, "[receive] %s", line);
    if (strstr(line, "listening on") != NULL) listening = 1;
  }
  CHECK(listening);

  options = livemig_options_new();
  CHECK(options != NULL);
  check_ok(livemig_options_set_unix(options, sock, &err), err, "set_unix");
  check_ok(livemig_options_set_channels(options, 2, &err), err, "set_channels");
  check_ok(livemig_options_set_io_timeout_ms(options, 60000, &err), err, "set_io_timeout_ms");
  sender = livemig_sender_new(options, &err);
  check_ok(sender != NULL ? LIVEMIG_OK : livemig_error_code(err), err, "sender_new");
  livemig_options_free(options);

  rc = livemig_sender_migrate(sender, memory, &kVmOps, &vm, &stats, &err);
  check_ok(rc, err, "sender_migrate to livemig receive");
  livemig_sender_free(sender);
  fprintf(stderr, "part 1: %s in %u rounds, %.1f ms (downtime %.1f ms), %llu bytes sent\n",
          stats.status, stats.rounds, stats.total_time_ms, stats.downtime_ms,
          (unsigned long long)stats.transferred_bytes);
  CHECK(strcmp(stats.status, "completed") == 0);
  CHECK(stats.rounds >= 1);
  CHECK(stats.total_bytes == kRegionA + kRegionB);
  CHECK(vm.pauses == 1);
  CHECK(vm.resumes == 0); /* Success: the destination owns the VM now. */
  CHECK(vm.last_throttle == 0 || vm.last_throttle == -1);

  while (fgets(line, sizeof line, child_err) != NULL) fprintf(stderr, "[receive] %s", line);
  fclose(child_err);
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  snprintf(path, sizeof path, "%s/manifest.json", dir);
  manifest = read_text(path);
  CHECK(strstr(manifest, "\"status\":\"completed\"") != NULL);
  CHECK(strstr(manifest, "\"verified\":true") != NULL);
  snprintf(expect, sizeof expect, "\"device_state_bytes\":%zu", sizeof kDeviceState - 1);
  CHECK(strstr(manifest, expect) != NULL);
  CHECK(strstr(manifest, "\"guest_addr\":1073741824") != NULL);
  free(manifest);
  snprintf(path, sizeof path, "%s/region-0.mem", dir);
  check_file(path, a, kRegionA);
  snprintf(path, sizeof path, "%s/region-1.mem", dir);
  check_file(path, b, kRegionB);
  fprintf(stderr, "part 1: manifest and rebuilt files match the source\n");
}

typedef struct receive_job {
  livemig_receiver* receiver;
  livemig_received* result;
  livemig_error* error;
  int rc;
} receive_job;

static void* receive_thread(void* arg) {
  receive_job* job = arg;
  job->rc = livemig_receiver_receive_one(job->receiver, &job->result, &job->error);
  return NULL;
}

/* Part 2's round callback (ABI 3): runs on the migrating thread. */
typedef struct round_log {
  uint32_t count;
  int last_final;
} round_log;

static void on_round(void* user_data, const livemig_round* round) {
  round_log* log = user_data;
  if (round->round == log->count) log->count++;
  log->last_final = round->final;
}

/* Part 2: to a livemig_receiver in this process, over 127.0.0.1. */
static void migrate_to_c_receiver(const char* work, livemig_memory* memory,
                                  const unsigned char* a, const unsigned char* b) {
  char dir[256], endpoint[128];
  uint16_t port = 0;
  livemig_options* options;
  livemig_receiver* receiver;
  livemig_sender* sender;
  livemig_error* err = NULL;
  livemig_stats stats;
  livemig_received_region region;
  receive_job job;
  pthread_t thread;
  fake_vm vm = {0, 0, -1};
  const void* state;
  size_t state_size = 0;
  round_log rounds = {0, 0};
  livemig_compression_stats compression;
  livemig_received_stats received;
  size_t json_size;
  char* json;

  snprintf(dir, sizeof dir, "%s/c-out", work);
  CHECK(mkdir(dir, 0755) == 0);
  options = livemig_options_new();
  CHECK(options != NULL);
  check_ok(livemig_options_set_tcp(options, "127.0.0.1", 0, &err), err, "set_tcp");
  check_ok(livemig_options_set_root_dir(options, dir, 1, &err), err, "set_root_dir");
  receiver = livemig_receiver_listen(options, &err);
  check_ok(receiver != NULL ? LIVEMIG_OK : livemig_error_code(err), err, "receiver_listen");
  livemig_options_free(options);
  CHECK(livemig_receiver_endpoint(receiver, endpoint, sizeof endpoint, &port) > 0);
  CHECK(port != 0);
  fprintf(stderr, "part 2: receiver listening on %s\n", endpoint);

  memset(&job, 0, sizeof job);
  job.receiver = receiver;
  CHECK(pthread_create(&thread, NULL, receive_thread, &job) == 0);

  options = livemig_options_new();
  CHECK(options != NULL);
  check_ok(livemig_options_set_tcp(options, "127.0.0.1", port, &err), err, "set_tcp");
  check_ok(livemig_options_set_channels(options, 3, &err), err, "set_channels");
  check_ok(livemig_options_set_verify(options, LIVEMIG_VERIFY_FULL, &err), err, "set_verify");
  check_ok(livemig_options_set_compression(options, "zstd:3", &err), err, "set_compression");
  CHECK(livemig_options_set_compression(options, "zstd:99", &err) == LIVEMIG_INVALID_ARGUMENT);
  CHECK(strstr(livemig_error_message(err), "zstd levels are 1..19") != NULL);
  livemig_error_free(err);
  err = NULL;
  check_ok(livemig_options_set_round_callback(options, on_round, &rounds, &err), err,
           "set_round_callback");
  check_ok(livemig_options_set_limits(options, 10, 60000, LIVEMIG_ON_LIMIT_FORCE, &err), err,
           "set_limits");
  check_ok(livemig_options_set_batch_pages(options, 64, &err), err, "set_batch_pages");
  CHECK(livemig_options_set_batch_pages(options, 0, &err) == LIVEMIG_INVALID_ARGUMENT);
  CHECK(strncmp(livemig_error_message(err), "batch_pages: ", 13) == 0);
  livemig_error_free(err);
  err = NULL;
  sender = livemig_sender_new(options, &err);
  check_ok(sender != NULL ? LIVEMIG_OK : livemig_error_code(err), err, "sender_new");
  livemig_options_free(options);
  check_ok(livemig_sender_migrate(sender, memory, &kVmOps, &vm, &stats, &err), err,
           "sender_migrate to livemig_receiver");
  check_ok(livemig_sender_compression_stats(sender, &compression, &err), err,
           "sender_compression_stats");
  json_size = livemig_sender_stats_json(sender, NULL, 0);
  json = malloc(json_size + 1);
  CHECK(json != NULL);
  CHECK(livemig_sender_stats_json(sender, json, json_size + 1) == json_size);
  CHECK(strlen(json) == json_size && strncmp(json, "{\"status\":\"completed\"", 21) == 0);
  fprintf(stderr, "part 2: stats as JSON, %zu bytes: %.60s...\n", json_size, json);
  free(json);
  livemig_sender_free(sender);
  CHECK(compression.codec == LIVEMIG_CODEC_ZSTD && compression.level == 3);
  CHECK(rounds.count == stats.rounds && rounds.last_final == 1);
  fprintf(stderr,
          "part 2: %u rounds, zstd: %llu of %llu batches compressed, %llu -> %llu bytes\n",
          (unsigned)stats.rounds, (unsigned long long)compression.compressed_batches,
          (unsigned long long)(compression.compressed_batches +
                               compression.incompressible_batches +
                               compression.skipped_batches),
          (unsigned long long)compression.bytes_in,
          (unsigned long long)compression.compressed_bytes);
  CHECK(pthread_join(thread, NULL) == 0);
  check_ok(job.rc, job.error, "receiver_receive_one");
  CHECK(strcmp(stats.status, "completed") == 0);
  CHECK(stats.audit_ran && stats.audit_untracked_pages == 0);
  CHECK(vm.pauses == 1 && vm.resumes == 0);

  CHECK(livemig_received_verified(job.result) == 1);
  check_ok(livemig_received_get_stats(job.result, &received, &err), err, "received_get_stats");
  CHECK(received.compression == LIVEMIG_CODEC_ZSTD);
  CHECK(received.compressed_batches == compression.compressed_batches);
  json_size = livemig_received_stats_json(job.result, NULL, 0);
  json = malloc(json_size + 1);
  CHECK(json != NULL);
  CHECK(livemig_received_stats_json(job.result, json, json_size + 1) == json_size);
  CHECK(strlen(json) == json_size &&
        strncmp(json, "{\"status\":\"completed\",\"verified\":true,", 38) == 0);
  CHECK(strstr(json, "\"torn_pages\":0,") != NULL);
  CHECK(strstr(json, "\"compression\":\"zstd\"") != NULL);
  fprintf(stderr, "part 2: the received migration as JSON, %zu bytes: %.60s...\n", json_size, json);
  free(json);
  CHECK(livemig_received_num_regions(job.result) == 2);
  check_ok(livemig_received_region_at(job.result, 0, &region), NULL, "region_at(0)");
  CHECK(region.guest_addr == kGuestA && region.size == kRegionA);
  CHECK(memcmp(region.host_ptr, a, kRegionA) == 0);
  CHECK(region.file_path != NULL);
  check_file(region.file_path, a, kRegionA);
  check_ok(livemig_received_region_at(job.result, 1, &region), NULL, "region_at(1)");
  CHECK(region.guest_addr == kGuestB && region.size == kRegionB);
  CHECK(memcmp(region.host_ptr, b, kRegionB) == 0);
  CHECK(region.file_path != NULL);
  check_file(region.file_path, b, kRegionB);
  CHECK(livemig_received_region_at(job.result, 2, &region) == LIVEMIG_OUT_OF_RANGE);
  state = livemig_received_device_state(job.result, &state_size);
  CHECK(state_size == sizeof kDeviceState - 1);
  CHECK(memcmp(state, kDeviceState, state_size) == 0);
  livemig_received_free(job.result);
  livemig_receiver_free(receiver);
  fprintf(stderr, "part 2: received regions and device state match the source\n");
}

/* Part 3's destination memory for region 0: a memfd mapping the receiver
 * fills and never unmaps, lent with the memfd (which stays the VMM's). */
typedef struct dest_ram {
  void* addr;
  size_t size;
  int fd;
  int calls;
} dest_ram;

static int provide_ram(void* user_data, const livemig_region_info* region,
                       livemig_provided_memory* memory_out, char* message,
                       size_t message_size) {
  dest_ram* ram = user_data;
  ram->calls++;
  if (region->index != 0) return LIVEMIG_OK; /* Declined: the receiver's own. */
  if (region->size > ram->size) {
    snprintf(message, message_size, "region %u: %llu bytes, more than the VMM's %zu",
             region->index, (unsigned long long)region->size, ram->size);
    return LIVEMIG_RESOURCE_EXHAUSTED;
  }
  memory_out->addr = ram->addr;
  memory_out->size = ram->size;
  memory_out->fd = ram->fd;
  memory_out->file_offset = 0;
  return LIVEMIG_OK;
}

/* Part 3: connected fds, a file-backed region, sections, provided memory. */
static void migrate_over_fds(const char* work, int memfd, const unsigned char* a,
                             const unsigned char* b) {
  char dir[256], path[300];
  int pairs[2][2], source[2], destination[2], i, dest_fd;
  livemig_options* options;
  livemig_receiver* receiver;
  livemig_sender* sender;
  livemig_memory* memory;
  livemig_error* err = NULL;
  livemig_stats stats;
  livemig_received_region region;
  livemig_device_section section;
  livemig_received_stats received;
  receive_job job;
  pthread_t thread;
  fake_vm vm = {0, 0, -1};
  dest_ram ram;

  for (i = 0; i < 2; ++i) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]) == 0);
    source[i] = pairs[i][0];
    destination[i] = pairs[i][1];
  }
  dest_fd = memfd_create("dest-ram-a", 0);
  CHECK(dest_fd >= 0);
  CHECK(ftruncate(dest_fd, kRegionA) == 0);
  ram.addr = mmap(NULL, kRegionA, PROT_READ | PROT_WRITE, MAP_SHARED, dest_fd, 0);
  CHECK(ram.addr != MAP_FAILED);
  ram.size = kRegionA;
  ram.fd = dest_fd;
  ram.calls = 0;

  /* The destination: the fds are borrowed (dup'ed by listen), so closed at once. */
  snprintf(dir, sizeof dir, "%s/fd-out", work);
  CHECK(mkdir(dir, 0755) == 0);
  options = livemig_options_new();
  CHECK(options != NULL);
  check_ok(livemig_options_set_fds(options, destination, 2, &err), err, "set_fds");
  check_ok(livemig_options_set_root_dir(options, dir, 0, &err), err, "set_root_dir");
  check_ok(livemig_options_set_region_memory_fd(options, provide_ram, &ram, &err), err,
           "set_region_memory_fd");
  receiver = livemig_receiver_listen(options, &err);
  check_ok(receiver != NULL ? LIVEMIG_OK : livemig_error_code(err), err, "receiver_listen");
  livemig_options_free(options);
  close(destination[0]);
  close(destination[1]);
  memset(&job, 0, sizeof job);
  job.receiver = receiver;
  CHECK(pthread_create(&thread, NULL, receive_thread, &job) == 0);

  /* The source: region A anonymous, region B the memfd as a file. */
  memory = livemig_memory_new();
  CHECK(memory != NULL);
  check_ok(livemig_memory_add_region(memory, kGuestA, (void*)a, kRegionA, &err), err,
           "add_region a");
  check_ok(livemig_memory_add_file_region(memory, kGuestB, kRegionB, memfd, 0, "ram/b.img",
                                          &err),
           err, "add_file_region b");
  options = livemig_options_new();
  CHECK(options != NULL);
  check_ok(livemig_options_set_fds(options, source, 2, &err), err, "set_fds");
  sender = livemig_sender_new(options, &err);
  check_ok(sender != NULL ? LIVEMIG_OK : livemig_error_code(err), err, "sender_new");
  livemig_options_free(options);
  check_ok(livemig_sender_migrate(sender, memory, &kSectionVmOps, &vm, &stats, &err), err,
           "sender_migrate over fds");
  livemig_sender_free(sender);
  close(source[0]);
  close(source[1]);
  CHECK(pthread_join(thread, NULL) == 0);
  check_ok(job.rc, job.error, "receiver_receive_one over fds");
  CHECK(strcmp(stats.status, "completed") == 0);
  CHECK(stats.channels == 2);
  CHECK(vm.pauses == 1 && vm.resumes == 0);
  CHECK(ram.calls == 2);
  /* Round 0's pages with bytes landed through files: region 0's (the first
   * half of a) through the VMM's memfd, all of b's through the rebuilt file. */
  check_ok(livemig_received_get_stats(job.result, &received, &err), err, "received_get_stats");
  CHECK(received.pages_written_to_files == received.raw_pages);
  CHECK(received.raw_pages == kRegionA / 2 / 4096 + kRegionB / 4096);

  CHECK(livemig_received_num_regions(job.result) == 2);
  check_ok(livemig_received_region_at(job.result, 0, &region), NULL, "region_at(0)");
  CHECK(region.host_ptr == ram.addr && region.file_path == NULL);
  CHECK(memcmp(ram.addr, a, kRegionA) == 0);
  check_ok(livemig_received_region_at(job.result, 1, &region), NULL, "region_at(1)");
  snprintf(path, sizeof path, "%s/ram/b.img", dir);
  CHECK(region.file_path != NULL && strcmp(region.file_path, path) == 0);
  check_file(path, b, kRegionB);

  CHECK(livemig_received_num_device_sections(job.result) == 2);
  for (i = 0; i < 2; ++i) {
    check_ok(livemig_received_device_section_at(job.result, (size_t)i, &section, &err), err,
             "device_section_at");
    CHECK(strcmp(section.id, kSections[i].id) == 0);
    CHECK(section.format_version == kSections[i].format_version);
    CHECK(section.size == kSections[i].size &&
          memcmp(section.data, kSections[i].data, section.size) == 0);
  }
  CHECK(livemig_received_find_device_section(job.result, "vmm", &section, &err) ==
        LIVEMIG_NOT_FOUND);
  livemig_error_free(err);
  livemig_received_free(job.result);
  livemig_receiver_free(receiver);
  livemig_memory_free(memory);
  /* Still the VMM's: mapped and holding the guest's bytes after the free. */
  CHECK(memcmp(ram.addr, a, kRegionA) == 0);
  munmap(ram.addr, kRegionA);
  close(dest_fd);
  fprintf(stderr, "part 3: fds, file-backed region, sections and provided memory match\n");
}

int main(int argc, char** argv) {
  unsigned char *a, *b;
  int memfd;
  size_t i;
  livemig_memory* memory;
  livemig_error* err = NULL;
  const char hello[] = "hello from a tracked write";
  const char raw[] = "written through the caller's pointer, then marked";

  if (argc != 3) {
    fprintf(stderr, "usage: %s LIVEMIG_BINARY WORKDIR\n", argv[0]);
    return 2;
  }

  CHECK(livemig_abi_version() == LIVEMIG_ABI_VERSION);

  /* The caller's own mappings: anonymous memory and a memfd. */
  a = mmap(NULL, kRegionA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(a != MAP_FAILED);
  memfd = memfd_create("guest-ram-b", 0);
  CHECK(memfd >= 0);
  CHECK(ftruncate(memfd, kRegionB) == 0);
  b = mmap(NULL, kRegionB, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  CHECK(b != MAP_FAILED);
  for (i = 0; i < kRegionA / 2; ++i) a[i] = (unsigned char)(i * 7 + (i >> 12)); /* rest: zero */
  for (i = 0; i < kRegionB; ++i) b[i] = (unsigned char)("memfd-bytes"[i % 11] ^ (i >> 9));

  memory = livemig_memory_new();
  CHECK(memory != NULL);
  check_ok(livemig_memory_add_region(memory, kGuestA, a, kRegionA, &err), err, "add_region a");
  check_ok(livemig_memory_add_region(memory, kGuestB, b, kRegionB, &err), err, "add_region b");
  /* A tracked write, and a raw one marked afterwards, as a VMM's device would. */
  check_ok(livemig_memory_write(memory, kGuestA + 0x1000, hello, sizeof hello, &err), err,
           "memory_write");
  memcpy(b + 0x2000, raw, sizeof raw);
  check_ok(livemig_memory_mark_dirty(memory, kGuestB + 0x2000, sizeof raw, &err), err,
           "mark_dirty");
  CHECK(livemig_memory_add_region(memory, 0x80000000u, a, 4096, &err) ==
        LIVEMIG_FAILED_PRECONDITION);
  livemig_error_free(err);
  err = NULL;

  migrate_to_cli(argv[1], argv[2], memory, a, b);
  migrate_to_c_receiver(argv[2], memory, a, b);
  migrate_over_fds(argv[2], memfd, a, b);

  livemig_memory_free(memory);
  munmap(a, kRegionA);
  munmap(b, kRegionB);
  close(memfd);
  fprintf(stderr, "example: all checks passed\n");
  return 0;
}
