// File: migration/fuzz/record_seeds.cc
//
// Records the seed corpora from real migrations: a Sender migrates a tiny
// FakeVm (6 pages in two regions, one of them file-backed) over one channel
// to a Receiver, through a recording proxy that keeps every byte the sender
// writes. Each recorded stream becomes
//   corpus/receiver_stream/<name>        the whole stream (several control
//                                        bytes: repair on/off, anonymous
//                                        regions as files, durable)
//   corpus/frame_decoder/<name>-<i>-...  single frames, and a few back to back
//   corpus/handshake/hello-..., table-...  the Hello and RegionTable messages
// Migrations: verify=sent over mixed content, verify=full over random
// content, verify=off over zero pages, and one with the guest writing during
// the rounds (several rounds). `tools/fuzz.sh record` runs it:
//
//   bazel run //migration/fuzz:record_seeds -- $PWD/migration/fuzz/corpus
//
// Everything it creates outside the corpus is in one temporary directory,
// removed at the end. Exit status 0 only if every migration succeeded.
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migration/fuzz/wire_model.h"
#include "migration/receiver.h"
#include "migration/sender.h"
#include "migration/testing/fake_vm.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/compression.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"

namespace livemig::fuzz {
namespace {

using ::livemig::testing::FakeRegionSpec;
using ::livemig::testing::FakeVm;
using ::livemig::testing::Fill;
using ::livemig::testing::WorkloadSpec;

int UnixSocket(const std::string& path, bool listen) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const int rc = listen ? ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
                        : ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  if (rc != 0 || (listen && ::listen(fd, 4) != 0)) {
    std::fprintf(stderr, "%s %s: %s\n", listen ? "listen" : "connect", path.c_str(),
                 std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

// Accepts one connection on `listen_fd`, connects it to `target` and pumps
// both ways until both sides closed; returns what the client sent.
std::string ProxyOnce(int listen_fd, const std::string& target) {
  const int client = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  const int server = UnixSocket(target, false);
  std::string sent;
  bool client_open = true, server_open = true;
  while (client_open || server_open) {
    pollfd fds[2] = {{client, static_cast<short>(client_open ? POLLIN : 0), 0},
                     {server, static_cast<short>(server_open ? POLLIN : 0), 0}};
    if (::poll(fds, 2, 1000) < 0 && errno != EINTR) break;
    char buf[64 << 10];
    if (client_open && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::recv(client, buf, sizeof(buf), 0);
      if (n <= 0) {
        client_open = false;
        ::shutdown(server, SHUT_WR);
      } else {
        sent.append(buf, static_cast<size_t>(n));
        (void)::send(server, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      }
    }
    if (server_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::recv(server, buf, sizeof(buf), 0);
      if (n <= 0) {
        server_open = false;
        ::shutdown(client, SHUT_WR);
      } else {
        (void)::send(client, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
      }
    }
  }
  ::close(client);
  ::close(server);
  return sent;
}

struct Recording {
  std::string name;
  SenderOptions::Verify verify;
  Fill fill;
  bool writers;
  wire::Codec compression = wire::Codec::kNone;  // ZSTD/LZ4 batches in the stream.
};

std::string Record(const std::string& tmp, const Recording& r) {
  const std::string dir = absl::StrCat(tmp, "/", r.name);
  std::filesystem::create_directories(dir + "/src");
  std::filesystem::create_directories(dir + "/dst");
  const std::string receiver_path = dir + "/r.sock";
  const std::string proxy_path = dir + "/p.sock";

  ReceiverOptions receiver_options;
  receiver_options.root_dir = dir + "/dst";
  receiver_options.io_timeout = absl::Seconds(10);
  receiver_options.accept_timeout = absl::Seconds(20);
  auto receiver = Receiver::Listen(Endpoint::Unix(receiver_path), receiver_options);
  if (!receiver.ok()) {
    std::fprintf(stderr, "listen: %s\n", receiver.status().ToString().c_str());
    std::exit(1);
  }
  absl::StatusOr<ReceivedMigration> received = absl::UnknownError("not run");
  std::thread receiving([&] { received = (*receiver)->ReceiveOne(); });
  const int proxy_fd = UnixSocket(proxy_path, true);
  std::string stream;
  std::thread proxy([&] { stream = ProxyOnce(proxy_fd, receiver_path); });

  auto vm = FakeVm::Create({{0, 4 * 4096, "", 0}, {1 << 20, 2 * 4096, dir + "/src/guest.mem", 0}},
                           r.fill, 7);
  if (!vm.ok()) {
    std::fprintf(stderr, "vm: %s\n", vm.status().ToString().c_str());
    std::exit(1);
  }
  if (r.writers) (*vm)->StartWorkload(WorkloadSpec{1, 20000, 0, 3});
  SenderOptions options;
  options.destination = Endpoint::Unix(proxy_path);
  options.channels = 1;
  options.batch_pages = 2;  // Several batches per region, runs of several pages.
  options.verify = r.verify;
  options.compression.codec = r.compression;
  options.migration_id = r.name;
  options.io_timeout = absl::Seconds(10);
  options.downtime_limit = r.writers ? absl::Microseconds(1) : absl::Milliseconds(300);
  options.max_rounds = 2;
  options.on_limit = SenderOptions::OnLimit::kForce;
  Sender sender(options);
  const auto stats = sender.Migrate((*vm)->memory(), **vm);
  if (r.writers) (*vm)->StopWorkload();
  proxy.join();
  receiving.join();
  ::close(proxy_fd);
  if (!stats.ok() || !received.ok()) {
    std::fprintf(stderr, "%s: sender %s, receiver %s\n", r.name.c_str(),
                 stats.status().ToString().c_str(), received.status().ToString().c_str());
    std::exit(1);
  }
  std::fprintf(stderr, "%s: %zu bytes, %u rounds\n", r.name.c_str(), stream.size(),
               received->rounds);
  return stream;
}

void Write(const std::string& path, uint8_t control, absl::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.put(static_cast<char>(control));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The frames of a recorded (valid) stream.
std::vector<std::pair<uint16_t, std::string>> Frames(absl::string_view stream) {
  std::vector<std::pair<uint16_t, std::string>> frames;
  while (HeaderIsValid(stream)) {
    const RawHeader h = ReadRawHeader(stream);
    const size_t size = wire::kFrameHeaderSize + h.message_len + h.payload_len;
    frames.emplace_back(h.type, std::string(stream.substr(0, size)));
    stream.remove_prefix(size);
  }
  return frames;
}

void Emit(const std::string& corpus, const std::string& name, const std::string& stream,
          bool first) {
  const std::string out = corpus + "/receiver_stream/";
  Write(out + name, 0x01, stream);
  if (first) {
    Write(out + name + "-norepair", 0x00, stream);
    Write(out + name + "-anon-as-files", 0x03, stream);
    Write(out + name + "-durable", 0x05, stream);
  }
  // Two frames of each type per stream keep the frame corpus small.
  std::map<uint16_t, int> kept;
  const auto frames = Frames(stream);
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto& [type, frame] = frames[i];
    if (kept[type]++ >= 2) continue;
    const std::string type_name = wire::FrameTypeName(static_cast<wire::FrameType>(type));
    Write(absl::StrCat(corpus, "/frame_decoder/", name, "-", i, "-", type_name), 0x00, frame);
    if (type == static_cast<uint16_t>(wire::FrameType::kHello)) {
      Write(absl::StrCat(corpus, "/handshake/hello-", name), 0x00,
            frame.substr(wire::kFrameHeaderSize));
    }
    if (type == static_cast<uint16_t>(wire::FrameType::kRegionTable)) {
      Write(absl::StrCat(corpus, "/handshake/table-", name), 0x01,
            frame.substr(wire::kFrameHeaderSize));
      Write(absl::StrCat(corpus, "/handshake/table-", name, "-anon-as-files"), 0x03,
            frame.substr(wire::kFrameHeaderSize));
    }
  }
  if (first && frames.size() >= 3) {  // Frames back to back, for FindAbort.
    Write(absl::StrCat(corpus, "/frame_decoder/", name, "-first3"), 0x00,
          frames[0].second + frames[1].second + frames[2].second);
  }
}

}  // namespace
}  // namespace livemig::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: record_seeds CORPUS_DIR\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const std::string corpus = argv[1];
  for (const char* sub : {"receiver_stream", "frame_decoder", "handshake"}) {
    std::filesystem::create_directories(corpus + "/" + sub);
  }
  char tmpl[] = "/tmp/livemig-record-XXXXXX";
  const std::string tmp = ::mkdtemp(tmpl);
  using livemig::SenderOptions;
  using livemig::testing::Fill;
  const std::vector<livemig::fuzz::Recording> recordings = {
      {"sent-mixed", SenderOptions::Verify::kSent, Fill::kMixed, false},
      {"full-random", SenderOptions::Verify::kFull, Fill::kRandom, false},
      {"off-zero", SenderOptions::Verify::kOff, Fill::kZero, false},
      {"sent-rounds", SenderOptions::Verify::kSent, Fill::kMixed, true},
      {"zstd-text", SenderOptions::Verify::kSent, Fill::kText, false,
       livemig::wire::Codec::kZstd},
      {"lz4-text", SenderOptions::Verify::kSent, Fill::kText, false,
       livemig::wire::Codec::kLz4},
  };
  bool first = true;
  for (const auto& r : recordings) {
    const std::string stream = livemig::fuzz::Record(tmp, r);
    livemig::fuzz::Emit(corpus, r.name, stream, first);
    first = false;
  }
  std::filesystem::remove_all(tmp);
  return 0;
}
