// File: migration/transport/connection_interrupt_test.cc
//
// Connection::Interrupt() and WriteLast(): stopping a connection's users at
// a frame boundary so that one last message can still follow.
#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Seconds(30);

struct Pair {
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
};

Pair Connect() {
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  EXPECT_TRUE(listener.ok()) << listener.status();
  auto client = Connection::Connect((*listener)->local_endpoint(), kTimeout);
  EXPECT_TRUE(client.ok()) << client.status();
  auto server = (*listener)->Accept(kTimeout);
  EXPECT_TRUE(server.ok()) << server.status();
  return Pair{std::move(*client), std::move(*server)};
}

iovec Piece(const void* data, size_t size) { return iovec{const_cast<void*>(data), size}; }

// Waits until `c` has handed some bytes to the kernel: its write is under way.
void AwaitWriteUnderWay(const Connection& c) {
  while (c.bytes_written() == 0) absl::SleepFor(absl::Milliseconds(1));
}

std::string ReadString(Connection& c, size_t size) {
  std::string out(size, '\0');
  const iovec in[] = {Piece(out.data(), out.size())};
  EXPECT_OK(c.ReadExact(in, kTimeout));
  return out;
}

TEST(ConnectionInterrupt, EndsABlockedReadWithCancelledButLeavesTheSocketOpen) {
  Pair pair = Connect();
  absl::Status read;
  std::thread reader([&] {
    char buffer[16] = {};
    const iovec in[] = {Piece(buffer, sizeof(buffer))};
    read = pair.server->ReadExact(in, kTimeout);
  });
  absl::SleepFor(absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  pair.server->Interrupt(absl::Milliseconds(250));
  reader.join();
  EXPECT_LT(absl::Now() - start, kTimeout / 2);  // Not the read's timeout.
  EXPECT_THAT(read,
              StatusIsWithMessage(absl::StatusCode::kCancelled, "connection was interrupted"));
  EXPECT_TRUE(pair.server->is_interrupted());
  EXPECT_FALSE(pair.server->is_shut_down());
  // Later reads stop at once too.
  char byte = 0;
  const iovec one[] = {Piece(&byte, 1)};
  EXPECT_THAT(pair.server->ReadExact(one, kTimeout), StatusIs(absl::StatusCode::kCancelled));
}

TEST(ConnectionInterrupt, RefusesAWriteNotBegunAndLetsTheLastMessageThrough) {
  Pair pair = Connect();
  const std::string frame = "a whole frame";
  const iovec first[] = {Piece(frame.data(), frame.size())};
  ASSERT_OK(pair.client->WriteAll(first, kTimeout));
  pair.client->Interrupt(absl::Milliseconds(250));
  const std::string more = "never sent";
  const iovec refused[] = {Piece(more.data(), more.size())};
  EXPECT_THAT(pair.client->WriteAll(refused, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kCancelled, "connection was interrupted"));
  EXPECT_EQ(pair.client->bytes_written(), frame.size());
  const std::string last = "abort: cancelled";
  const iovec bye[] = {Piece(last.data(), last.size())};
  ASSERT_OK(pair.client->WriteLast(bye, kTimeout));
  pair.client->Shutdown();
  // The peer reads the whole frame, then the last message, then the end.
  EXPECT_EQ(ReadString(*pair.server, frame.size() + last.size()), frame + last);
  char byte = 0;
  const iovec one[] = {Piece(&byte, 1)};
  EXPECT_THAT(pair.server->ReadExact(one, kTimeout), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ConnectionInterrupt, LetsAWriteUnderWayFinishWithinTheGrace) {
  Pair pair = Connect();
  // Far more than the socket buffers hold: the write blocks until the peer
  // reads.
  std::vector<uint8_t> big(size_t{32} << 20, 0x5a);
  absl::Status write;
  std::thread writer([&] {
    const iovec out[] = {Piece(big.data(), big.size())};
    write = pair.client->WriteAll(out, kTimeout);
  });
  AwaitWriteUnderWay(*pair.client);
  pair.client->Interrupt(kTimeout);  // A grace the drain below ends well within.
  std::string got = ReadString(*pair.server, big.size());
  writer.join();
  EXPECT_OK(write);
  EXPECT_EQ(got, std::string(big.begin(), big.end()));
  const std::string last = "last";
  const iovec bye[] = {Piece(last.data(), last.size())};
  ASSERT_OK(pair.client->WriteLast(bye, kTimeout));
  EXPECT_EQ(ReadString(*pair.server, last.size()), last);
}

// A slow link: the grace counts from the last byte moved, so a write the
// peer keeps draining (here 64 KiB every 10 ms, about ten graces in all)
// finishes, and the last message follows it whole. (With a grace counted
// from the interrupt alone, it was cut 100 ms in.)
TEST(ConnectionInterrupt, LetsAWriteThatKeepsMovingFinishPastTheGrace) {
  Pair pair = Connect();
  std::vector<uint8_t> big(size_t{16} << 20, 0xa5);
  absl::Status write;
  std::thread writer([&] {
    const iovec out[] = {Piece(big.data(), big.size())};
    write = pair.client->WriteAll(out, kTimeout);
  });
  AwaitWriteUnderWay(*pair.client);
  pair.client->Interrupt(absl::Milliseconds(100));
  std::string got;
  std::vector<char> chunk(64 * 1024);
  while (got.size() < big.size()) {
    absl::StatusOr<size_t> n =
        pair.server->ReadSome(chunk.data(), std::min(chunk.size(), big.size() - got.size()),
                              kTimeout);
    ASSERT_TRUE(n.ok()) << n.status();
    got.append(chunk.data(), *n);
    absl::SleepFor(absl::Milliseconds(10));
  }
  writer.join();
  EXPECT_OK(write);
  EXPECT_EQ(got, std::string(big.begin(), big.end()));
  const std::string last = "abort: too slow";
  const iovec bye[] = {Piece(last.data(), last.size())};
  ASSERT_OK(pair.client->WriteLast(bye, kTimeout));
  EXPECT_EQ(ReadString(*pair.server, last.size()), last);
}

TEST(ConnectionInterrupt, CutsAWriteStillUnderWayWhenTheGraceEndsAndRefusesALastMessage) {
  Pair pair = Connect();
  std::vector<uint8_t> big(size_t{64} << 20);  // The peer never reads.
  absl::Status write;
  std::thread writer([&] {
    const iovec out[] = {Piece(big.data(), big.size())};
    write = pair.client->WriteAll(out, kTimeout);
  });
  AwaitWriteUnderWay(*pair.client);
  const absl::Time start = absl::Now();
  pair.client->Interrupt(absl::Milliseconds(100));
  writer.join();
  EXPECT_LT(absl::Now() - start, kTimeout / 2);
  EXPECT_THAT(write, StatusIsWithMessage(absl::StatusCode::kCancelled,
                                         "connection was interrupted mid-write after"));
  EXPECT_LT(pair.client->bytes_written(), big.size());
  const std::string last = "last";
  const iovec bye[] = {Piece(last.data(), last.size())};
  EXPECT_THAT(pair.client->WriteLast(bye, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kFailedPrecondition, "stopped part-way"));
}

TEST(ConnectionInterrupt, AWriteThatTimedOutPartWayAlsoRefusesALastMessage) {
  Pair pair = Connect();
  std::vector<uint8_t> big(size_t{64} << 20);
  const iovec out[] = {Piece(big.data(), big.size())};
  ASSERT_THAT(pair.client->WriteAll(out, absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const iovec bye[] = {Piece("x", 1)};
  EXPECT_THAT(pair.client->WriteLast(bye, kTimeout),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ConnectionInterrupt, ShutdownEndsALastWriteThePeerDoesNotRead) {
  Pair pair = Connect();
  pair.client->Interrupt(absl::Milliseconds(1));
  std::vector<uint8_t> big(size_t{64} << 20);
  absl::Status write;
  std::thread writer([&] {
    const iovec out[] = {Piece(big.data(), big.size())};
    write = pair.client->WriteLast(out, kTimeout);
  });
  AwaitWriteUnderWay(*pair.client);
  const absl::Time start = absl::Now();
  pair.client->Shutdown();
  writer.join();
  EXPECT_LT(absl::Now() - start, kTimeout / 2);
  EXPECT_THAT(write, StatusIsWithMessage(absl::StatusCode::kCancelled, "connection was shut down"));
}

TEST(ConnectionInterrupt, ALastMessageAfterShutdownIsCancelled) {
  Pair pair = Connect();
  pair.client->Interrupt(absl::Milliseconds(250));
  pair.client->Shutdown();
  const iovec bye[] = {Piece("x", 1)};
  EXPECT_THAT(pair.client->WriteLast(bye, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kCancelled, "connection was shut down"));
}

}  // namespace
}  // namespace livemig
