#include "migration/internal/file_landing.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/transport/connection.h"
#include "migration/wire/frame_io.h"

namespace livemig::migration_internal {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Seconds(5);
constexpr size_t kPage = kMigrationPageSize;

struct Pair {
  std::unique_ptr<Connection> a, b;
};

Pair SocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  Pair p;
  p.a = *Connection::FromFd(fds[0]);
  p.b = *Connection::FromFd(fds[1]);
  ::close(fds[0]);  // The connections hold their own dup()s.
  ::close(fds[1]);
  return p;
}

proto::PageBatch Batch(std::vector<std::pair<uint64_t, uint64_t>> runs) {
  proto::PageBatch batch;
  batch.set_region_index(2);
  batch.set_encoding(proto::ENCODING_RAW);
  for (auto [first, count] : runs) {
    proto::PageRun* run = batch.add_runs();
    run->set_first_page(first);
    run->set_count(count);
  }
  return batch;
}

// Writes `batch` with `payload` on a thread of its own (the reader may take
// the payload in pieces smaller than the socket buffers).
std::thread SendBatch(Connection& to, const proto::PageBatch& batch,
                      const std::vector<uint8_t>& payload) {
  return std::thread([&to, &batch, &payload] {
    const iovec piece{const_cast<uint8_t*>(payload.data()), payload.size()};
    EXPECT_OK(wire::WriteFrame(to, wire::FrameType::kPageBatch, batch,
                               absl::MakeConstSpan(&piece, 1), kTimeout));
  });
}

std::vector<uint8_t> Pages(uint64_t n) {
  std::vector<uint8_t> bytes(n * kPage);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + i / kPage);
  return bytes;
}

// A memfd of `pages` pages at file offset `start`, and the whole file mapped.
struct File {
  explicit File(uint64_t pages, uint64_t start) : size((pages * kPage) + start) {
    const int fd = ::memfd_create("file_landing_test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    map = static_cast<uint8_t*>(::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0));
    offset = std::make_unique<FileOffset>(ScopedFd(fd), start);
  }
  ~File() { ::munmap(map, size); }
  size_t size;
  uint8_t* map;
  std::unique_ptr<FileOffset> offset;
};

TEST(FileLanding, WritesEveryRunAtItsFileOffsetThroughASmallBuffer) {
  // Two runs of 5 and 2 pages through a 3-page buffer: pieces split runs.
  const proto::PageBatch batch = Batch({{1, 5}, {9, 2}});
  const std::vector<uint8_t> payload = Pages(7);
  File file(12, 3 * kPage);
  Pair p = SocketPair();
  std::thread send = SendBatch(*p.a, batch, payload);
  ASSERT_OK_AND_ASSIGN(wire::IncomingFrame frame, wire::ReadFrameStart(*p.b, kTimeout));
  FileLanding landing(3 * kPage);
  std::mutex writes;
  ASSERT_OK(landing.Land(*p.b, frame, batch, *file.offset, writes, kTimeout, "region 2"));
  send.join();
  const uint8_t* region = file.map + 3 * kPage;
  EXPECT_EQ(0, std::memcmp(region + 1 * kPage, payload.data(), 5 * kPage));
  EXPECT_EQ(0, std::memcmp(region + 9 * kPage, payload.data() + 5 * kPage, 2 * kPage));
  // Pages between and around the runs, and the bytes before the region's
  // start in the file, were not written.
  for (uint64_t page : {0u, 6u, 7u, 8u, 11u}) {
    EXPECT_EQ(region[page * kPage], 0) << "page " << page;
  }
  EXPECT_EQ(file.map[0], 0);
  // Every page's hash, in run order, of the bytes that went into the file.
  std::vector<uint64_t> expected;
  for (uint64_t i = 0; i < 7; ++i) expected.push_back(HashPage(payload.data() + i * kPage));
  EXPECT_EQ(landing.hashes(), expected);
}

TEST(FileLanding, EachLandReportsOnlyItsOwnBatchsHashes) {
  const proto::PageBatch first = Batch({{0, 2}});
  const proto::PageBatch second = Batch({{3, 1}});
  const std::vector<uint8_t> payload = Pages(2);
  File file(4, 0);
  Pair p = SocketPair();
  FileLanding landing(kPage);
  std::mutex writes;
  for (const proto::PageBatch* batch : {&first, &second}) {
    const std::vector<uint8_t> bytes(payload.begin(),
                                     payload.begin() + batch->runs(0).count() * kPage);
    std::thread send = SendBatch(*p.a, *batch, bytes);
    ASSERT_OK_AND_ASSIGN(wire::IncomingFrame frame, wire::ReadFrameStart(*p.b, kTimeout));
    ASSERT_OK(landing.Land(*p.b, frame, *batch, *file.offset, writes, kTimeout, "region 2"));
    send.join();
  }
  EXPECT_EQ(landing.hashes(), std::vector<uint64_t>{HashPage(payload.data())});
  EXPECT_EQ(0, std::memcmp(file.map + 3 * kPage, payload.data(), kPage));
}

TEST(FileLanding, APayloadThatEndsEarlyIsDataLoss) {
  const proto::PageBatch batch = Batch({{0, 4}});
  const std::vector<uint8_t> payload = Pages(4);
  File file(4, 0);
  Pair p = SocketPair();
  // The header announces 4 pages; only 1.5 pages follow before the close.
  ASSERT_OK_AND_ASSIGN(wire::EncodedFrame encoded,
                       wire::EncodeFrame(wire::FrameType::kPageBatch, batch,
                                         {absl::MakeConstSpan(payload)}));
  const iovec pieces[] = {{encoded.header.data(), encoded.header.size()},
                          {encoded.message.data(), encoded.message.size()},
                          {const_cast<uint8_t*>(payload.data()), kPage + kPage / 2}};
  ASSERT_OK(p.a->WriteAll(pieces, kTimeout));
  p.a->Shutdown();  // The peer sees EOF.
  ASSERT_OK_AND_ASSIGN(wire::IncomingFrame frame, wire::ReadFrameStart(*p.b, kTimeout));
  FileLanding landing(kPage);
  std::mutex writes;
  EXPECT_THAT(landing.Land(*p.b, frame, batch, *file.offset, writes, kTimeout, "region 2"),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "frame PAGE_BATCH truncated in its payload"));
}

TEST(FileLanding, AFileThatCannotBeWrittenNamesTheRegionAndOffset) {
  const proto::PageBatch batch = Batch({{2, 1}});
  const std::vector<uint8_t> payload = Pages(1);
  const int fd = ::memfd_create("read_only", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4 * kPage), 0);
  const int ro = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(ro, 0);
  ::close(fd);
  FileOffset file(ScopedFd(ro), 0);
  Pair p = SocketPair();
  std::thread send = SendBatch(*p.a, batch, payload);
  ASSERT_OK_AND_ASSIGN(wire::IncomingFrame frame, wire::ReadFrameStart(*p.b, kTimeout));
  FileLanding landing;
  std::mutex writes;
  EXPECT_THAT(landing.Land(*p.b, frame, batch, file, writes, kTimeout, "region 2"),
              StatusIsWithMessage(absl::StatusCode::kInternal,
                                  "region 2: write 4096 bytes at file offset 8192"));
  send.join();
}

TEST(FileLanding, ReadingPastThePayloadIsRefused) {
  wire::IncomingFrame frame;
  frame.header.type = wire::FrameType::kPageBatch;
  frame.header.payload_len = kPage;
  Pair p = SocketPair();
  std::vector<uint8_t> buffer(2 * kPage);
  EXPECT_THAT(wire::ReadPayloadPiece(*p.b, frame, absl::MakeSpan(buffer), kTimeout),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "has 4096 payload bytes left, not 8192"));
  EXPECT_THAT(wire::FinishPayload(frame),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "0 of 4096 payload bytes read"));
}

}  // namespace
}  // namespace livemig::migration_internal
