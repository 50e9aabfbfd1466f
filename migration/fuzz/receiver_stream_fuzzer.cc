// File: migration/fuzz/receiver_stream_fuzzer.cc
//
// libFuzzer target for the receiver's state machine (migration/receiver.h,
// protocol.h): one input is the whole byte stream a source writes on its one
// channel — Hello, RegionTable, page batches, markers, device state,
// completion, page-hash list, handover — fed to a real Receiver over a Unix
// socket in this process. Input: one control byte, then the stream.
//
//   control bit 0  repair every frame's checksums and the page hashes of
//                  hashed RAW batches (wire_model.h), so mutations reach the
//                  protocol logic instead of dying at a checksum
//   control bit 1  ReceiverOptions::anonymous_regions_as_files
//   control bit 2  ReceiverOptions::durable
//
// Why a socket: the receiver only takes input from a Listener (there is no
// in-memory Connection), so each input costs one Listen, one connect and the
// receiver's own threads. The whole stream is written at once and the write
// side then closed, so the receiver never waits on a clock: everything it
// will ever get is already in the socket, followed by EOF. The acceptor only
// looks at a completed handshake when Accept() returns (it polls every
// 50 ms), so the target "pokes" it with an empty connection as soon as the
// Hello answer arrives; a rejected Hello leaves ReceiveOne() waiting for the
// next source, so after EOF the target cancels it (harmless otherwise: the
// receiver only closes a channel once the migration's outcome is decided).
// One channel only (max_channels 1): a group of several would wait for
// channels this input cannot provide.
//
// Invariants, from receiver.h and protocol.h:
//   - ReceiveOne() returns OK only if the stream held a Completion and the
//     source's handover (an Ack{HANDOVER} frame), the pages it counted are
//     those the completion announced, it reports verified exactly when the
//     completion carried digests, and then the rebuilt memory itself hashes
//     to the source's digests (the receiver never reports complete from a
//     stream whose completion did not verify);
//   - a failed ReceiveOne() leaves root_dir empty (staging files removed,
//     nothing renamed); a successful one leaves only the final region files;
//   - Cancelled only ever means "no migration began";
//   - the receiver never hangs on a stream that has ended (libFuzzer
//     -timeout, and the bound on the client loop below).
//
// LIVEMIG_FUZZ_VERBOSE=1 in the environment prints each input's outcome.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migration/fuzz/fuzz_check.h"
#include "migration/fuzz/quiet_protobuf.h"
#include "migration/fuzz/scratch_dir.h"
#include "migration/fuzz/wire_model.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/region_store.h"
#include "migration/transport/endpoint.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "proto/migration.pb.h"

namespace livemig::fuzz {
namespace {

// A generous bound: every input here finishes in milliseconds; only a
// receiver that waits for input that will never come reaches it.
constexpr absl::Duration kHang = absl::Seconds(20);

// What the stream says, read with the codec: the first Completion and
// whether an Ack{HANDOVER} follows it, frame by frame from the start.
struct StreamModel {
  std::optional<proto::Completion> completion;
  bool handover = false;
};

StreamModel ModelOf(absl::string_view stream) {
  StreamModel model;
  while (HeaderIsValid(stream)) {
    const RawHeader raw = ReadRawHeader(stream);
    const uint64_t size = wire::kFrameHeaderSize + uint64_t{raw.message_len} + raw.payload_len;
    if (size > stream.size()) break;
    const absl::string_view frame = stream.substr(0, size);
    stream.remove_prefix(size);
    if (raw.type == static_cast<uint16_t>(wire::FrameType::kCompletion) &&
        !model.completion.has_value()) {
      proto::Completion completion;
      if (wire::DecodeFrame(frame, &completion).ok()) model.completion = completion;
    } else if (raw.type == static_cast<uint16_t>(wire::FrameType::kAck) &&
               model.completion.has_value()) {
      proto::Ack ack;
      if (wire::DecodeFrame(frame, &ack).ok() && ack.kind() == proto::ACK_HANDOVER) {
        model.handover = true;
      }
    }
  }
  return model;
}

int ConnectUnix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  LIVEMIG_FUZZ_CHECK(fd >= 0, "socket: ", std::strerror(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  LIVEMIG_FUZZ_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
                     "connect ", path, ": ", std::strerror(errno));
  return fd;
}

// An empty connection that makes the acceptor's Accept() return at once.
void Poke(const std::string& path) { ::close(ConnectUnix(path)); }

// Writes `stream` to the receiver while reading its answers, then closes the
// write side and reads until the receiver closes. Returns what it answered.
std::string Converse(const std::string& socket_path, absl::string_view stream) {
  const int fd = ConnectUnix(socket_path);
  std::string answers;
  bool poked = false;
  bool write_closed = false;
  size_t written = 0;
  const absl::Time deadline = absl::Now() + kHang;
  while (true) {
    LIVEMIG_FUZZ_CHECK(absl::Now() < deadline, "the receiver hung: ", written, " of ",
                       stream.size(), " bytes written, ", answers.size(), " answered");
    if (!write_closed && written == stream.size()) {
      ::shutdown(fd, SHUT_WR);
      write_closed = true;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (write_closed ? 0 : POLLOUT)), 0};
    if (::poll(&p, 1, 100) < 0 && errno != EINTR) break;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[64 << 10];
      const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0) break;  // The receiver closed: its outcome is decided.
      if (n < 0 && errno != EAGAIN && errno != EINTR) break;  // Reset: the same.
      if (n > 0) answers.append(buf, static_cast<size_t>(n));
      if (!poked && answers.size() >= wire::kFrameHeaderSize) {
        Poke(socket_path);  // The Hello answer (or an Abort) has been sent.
        poked = true;
      }
    }
    if (!write_closed && (p.revents & POLLOUT)) {
      const ssize_t n = ::send(fd, stream.data() + written, stream.size() - written,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        written += static_cast<size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        written = stream.size();  // The receiver stopped reading.
      }
    }
  }
  ::close(fd);
  return answers;
}

// The rebuilt memory's own page hashes, digested as the source digests.
uint64_t MemoryRoot(const GuestRegion<NoBitmap>& region) {
  const uint64_t pages = region.len() / kMigrationPageSize;
  PageHashes hashes(pages);
  const uint8_t* base = region.region().as_ptr();
  for (uint64_t p = 0; p < pages; ++p) hashes.Set(p, HashPage(base + p * kMigrationPageSize));
  hashes.RefreshChunks();
  return hashes.Root();
}

void CheckSucceeded(const ReceivedMigration& got, const StreamModel& model,
                    const std::string& root) {
  LIVEMIG_FUZZ_CHECK(model.completion.has_value() && model.handover,
                     "complete without ", model.completion ? "a handover" : "a completion");
  const proto::Completion& completion = *model.completion;
  LIVEMIG_FUZZ_CHECK(got.raw_pages + got.zero_pages == completion.total_pages_sent(),
                     "complete with ", got.raw_pages + got.zero_pages,
                     " pages received; the completion announced ",
                     completion.total_pages_sent());
  LIVEMIG_FUZZ_CHECK(got.verified == (completion.digests_size() > 0), "verified is ",
                     got.verified, " for a completion with ", completion.digests_size(),
                     " digests");
  LIVEMIG_FUZZ_CHECK(got.memory.num_regions() == got.regions.size() &&
                         got.digests.size() == got.regions.size(),
                     "complete with ", got.memory.num_regions(), " mapped regions for ",
                     got.regions.size(), " in the table");
  if (got.verified) {
    for (size_t m = 0; m < got.memory.num_regions(); ++m) {
      const GuestRegion<NoBitmap>& region = got.memory.region(m);
      size_t index = got.regions.size();
      for (size_t i = 0; i < got.regions.size(); ++i) {
        if (got.regions[i].guest_addr == region.start_addr().value) index = i;
      }
      LIVEMIG_FUZZ_CHECK(index < got.regions.size(), "a rebuilt region at 0x",
                         absl::Hex(region.start_addr().value), " is in no table entry");
      const proto::RegionDigest* digest = nullptr;
      for (const proto::RegionDigest& d : completion.digests()) {
        if (d.region_index() == index) digest = &d;
      }
      LIVEMIG_FUZZ_CHECK(digest != nullptr, "verified without a digest for region ", index);
      LIVEMIG_FUZZ_CHECK(MemoryRoot(region) == digest->root(), "verified, but region ", index,
                         "'s memory does not hash to the source's root");
      LIVEMIG_FUZZ_CHECK(got.digests[index] == digest->root(), "verified, but region ", index,
                         "'s landed root differs from the source's");
    }
  }
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root, ec)) {
    const std::string path = entry.path().string();
    LIVEMIG_FUZZ_CHECK(!absl::EndsWith(path, kStagingSuffix), "a staging file survived: ", path);
    if (!entry.is_regular_file()) continue;
    bool named = false;
    for (const std::string& f : got.files) named = named || f == path;
    LIVEMIG_FUZZ_CHECK(named, "a file no region names: ", path);
  }
}

void RunOne(absl::string_view stream, uint8_t control) {
  const std::string& scratch = ScratchDir::Get();
  const std::string root = absl::StrCat(scratch, "/root");
  const std::string socket_path = absl::StrCat(scratch, "/s");
  std::error_code ec;
  std::filesystem::create_directories(root, ec);

  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = absl::Seconds(5);
  options.handshake_timeout = absl::Seconds(5);
  options.accept_timeout = kHang;
  options.max_channels = 1;
  options.max_total_bytes = uint64_t{8} << 20;
  options.max_regions = 8;
  options.anonymous_regions_as_files = (control & 2) != 0;
  options.durable = (control & 4) != 0;
  absl::StatusOr<std::unique_ptr<Receiver>> receiver =
      Receiver::Listen(Endpoint::Unix(socket_path), options);
  LIVEMIG_FUZZ_CHECK(receiver.ok(), "Listen: ", receiver.status().ToString());

  const absl::Time start = absl::Now();
  absl::StatusOr<ReceivedMigration> result = absl::UnknownError("not run");
  std::thread thread([&] { result = (*receiver)->ReceiveOne(); });
  const std::string answers = Converse(socket_path, stream);
  // Either the Hello was refused (ReceiveOne waits for another source) or
  // the migration's outcome is decided: see the file comment.
  (*receiver)->Cancel();
  Poke(socket_path);
  thread.join();

  static const bool verbose = std::getenv("LIVEMIG_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "ReceiveOne: %s (%zu answer bytes, %.1f ms)\n",
                 result.ok() ? "OK" : result.status().ToString().c_str(), answers.size(),
                 absl::ToDoubleMilliseconds(absl::Now() - start));
  }
  if (result.ok()) {
    CheckSucceeded(*result, ModelOf(stream), root);
  } else {
    if (absl::IsCancelled(result.status())) {
      LIVEMIG_FUZZ_CHECK(result.status().message() == kCancelledWhileWaiting,
                         "cancelled after a migration began: ", result.status().ToString());
    }
    LIVEMIG_FUZZ_CHECK(std::filesystem::is_empty(root, ec), "a failed migration (",
                       result.status().ToString(), ") left files in root_dir");
  }
  result = absl::UnknownError("done");  // Unmaps the rebuilt memory first.
  receiver->reset();
  ScratchDir::Empty(scratch);
}

}  // namespace
}  // namespace livemig::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::once_flag once;
  // A peer that closed makes a write raise SIGPIPE unless it is ignored.
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
  livemig::fuzz::QuietProtobuf();
  if (size == 0) return 0;
  const uint8_t control = data[0];
  absl::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string repaired;
  if (control & 1) {
    repaired = livemig::fuzz::RepairStream(stream);
    stream = repaired;
  }
  livemig::fuzz::RunOne(stream, control);
  return 0;
}
