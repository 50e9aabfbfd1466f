// File: migration/capi/vmm_features_test.cc
//
// The C ABI's additions of ABI 2, what a real VMM needs beside the basics
// (capi_test.cc): endpoints from connected fds, device state as named
// sections, destination memory the VMM provides, file-backed regions. Each
// with its success path and its failure paths, exact codes and messages.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/capi/livemig.h"
#include "migration/capi/testing/c_fixtures.h"

namespace {

using ::livemig::capi_testing::CReceiver;
using ::livemig::capi_testing::DeviceState;
using ::livemig::capi_testing::Err;
using ::livemig::capi_testing::FakeVm;
using ::livemig::capi_testing::Guest;
using ::livemig::capi_testing::kOps;
using ::livemig::capi_testing::NoSuchSocket;
using ::livemig::capi_testing::SenderTo;
using ::testing::HasSubstr;
using ::testing::StartsWith;

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
  EXPECT_EQ(err.message(),
            "fd " + std::to_string(p[0]) + ": not a socket (Socket operation on non-socket)");
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
  bool null_array = false;  // Return NULL with the vector's count.
};

int Sections(void* ud, const livemig_device_section** sections, size_t* count, char* message,
             size_t size) {
  auto* vm = static_cast<SectionsVm*>(ud);
  if (vm->sections_rc != LIVEMIG_OK) {
    std::snprintf(message, size, "virtio-net: queue busy");
    return vm->sections_rc;
  }
  *sections = vm->null_array ? nullptr : vm->sections.data();
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
    bool null_array = false;
  };
  const std::vector<Case> cases = {
      {std::vector<livemig_device_section>(4097, {"a", 1, nullptr, 0}),
       "vm_ops.device_sections: 4097 sections; at most 4096"},
      {{{"a", 1, bytes.data(), 1}, {"b", 1, bytes.data(), 1}},
       "vm_ops.device_sections: returned NULL sections with count 2",
       /*null_array=*/true},
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
    vm.null_array = c.null_array;
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
