// File: migration/transport/connection_test.cc
#include "migration/transport/connection.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/listener.h"
#include "migration/transport/testing/socket_dir.h"

namespace livemig {
namespace {

using ::livemig::testing::IsOk;
using ::livemig::testing::SocketDir;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr absl::Duration kTimeout = absl::Seconds(5);

struct Pair {
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
};

// A connected client/server pair through a listener at `at`.
absl::StatusOr<Pair> Connect(const Endpoint& at) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Listen(at);
  if (!listener.ok()) return listener.status();
  Pair pair;
  absl::StatusOr<std::unique_ptr<Connection>> client =
      Connection::Connect((*listener)->local_endpoint(), kTimeout);
  if (!client.ok()) return client.status();
  absl::StatusOr<std::unique_ptr<Connection>> server =
      (*listener)->Accept(kTimeout);
  if (!server.ok()) return server.status();
  pair.client = std::move(*client);
  pair.server = std::move(*server);
  return pair;
}

iovec Piece(const void* data, size_t size) {
  return iovec{const_cast<void*>(data), size};
}

void ExpectRoundTrip(Pair& pair) {
  const std::string hello = "hello, ";
  const std::string world = "world";
  const iovec out[] = {Piece(hello.data(), hello.size()),
                       Piece(world.data(), world.size())};
  ASSERT_OK(pair.client->WriteAll(out, kTimeout));

  char first[5] = {};
  char second[7] = {};
  const iovec in[] = {Piece(first, sizeof(first)),
                      Piece(second, sizeof(second))};
  ASSERT_OK(pair.server->ReadExact(in, kTimeout));
  EXPECT_EQ(std::string(first, 5) + std::string(second, 7), "hello, world");

  // And back the other way.
  const iovec reply[] = {Piece("ok", 2)};
  ASSERT_OK(pair.server->WriteAll(reply, kTimeout));
  char got[2] = {};
  const iovec reply_in[] = {Piece(got, 2)};
  ASSERT_OK(pair.client->ReadExact(reply_in, kTimeout));
  EXPECT_EQ(std::string(got, 2), "ok");

  EXPECT_EQ(pair.client->bytes_written(), 12u);
  EXPECT_EQ(pair.client->bytes_read(), 2u);
  EXPECT_EQ(pair.server->bytes_read(), 12u);
  EXPECT_EQ(pair.server->bytes_written(), 2u);
}

TEST(Connection, RoundTripsOverTcpLoopback) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  ExpectRoundTrip(pair);
}

TEST(Connection, RoundTripsOverIpv6LoopbackWhenAvailable) {
  absl::StatusOr<std::unique_ptr<Listener>> listener =
      Listener::Listen(Endpoint::Tcp("::1", 0));
  if (!listener.ok()) GTEST_SKIP() << "no IPv6 loopback: " << listener.status();
  ASSERT_OK_AND_ASSIGN(
      auto client,
      Connection::Connect((*listener)->local_endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto server, (*listener)->Accept(kTimeout));
  Pair pair{std::move(client), std::move(server)};
  ExpectRoundTrip(pair);
}

TEST(Connection, RoundTripsOverUnixSocket) {
  ASSERT_OK_AND_ASSIGN(
      Pair pair, Connect(Endpoint::Unix(SocketDir() + "/round_trip.sock")));
  ExpectRoundTrip(pair);
}

TEST(Connection, EmptyWriteAndReadSucceedAtOnce) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  EXPECT_OK(pair.client->WriteAll({}, absl::ZeroDuration()));
  const iovec empty[] = {Piece(nullptr, 0)};
  EXPECT_OK(pair.server->ReadExact(empty, absl::ZeroDuration()));
}

// 64 MiB in 4 KiB pieces: far more than IOV_MAX pieces and far more than the
// socket buffers, so WriteAll must loop over partial writes and waits.
void LargeGatherWrite(const Endpoint& at) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(at));
  constexpr size_t kPieceSize = 4096;
  constexpr size_t kTotal = size_t{64} << 20;
  std::vector<uint8_t> source(kTotal);
  for (size_t i = 0; i < kTotal; ++i) {
    source[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  }
  std::vector<iovec> pieces;
  for (size_t offset = 0; offset < kTotal; offset += kPieceSize) {
    pieces.push_back(Piece(source.data() + offset, kPieceSize));
  }
  std::vector<uint8_t> sink(kTotal);
  absl::Status read_status;
  std::thread reader([&] {
    // Scatter into two uneven halves to cross piece boundaries.
    const iovec in[] = {Piece(sink.data(), 12345),
                        Piece(sink.data() + 12345, kTotal - 12345)};
    read_status = pair.server->ReadExact(in, absl::Seconds(30));
  });
  const absl::Status write_status =
      pair.client->WriteAll(pieces, absl::Seconds(30));
  reader.join();
  ASSERT_OK(write_status);
  ASSERT_OK(read_status);
  EXPECT_EQ(pair.client->bytes_written(), kTotal);
  EXPECT_EQ(pair.server->bytes_read(), kTotal);
  EXPECT_TRUE(source == sink);
}

TEST(Connection, LargeGatherWriteArrivesIntactOverTcp) {
  LargeGatherWrite(Endpoint::Tcp("127.0.0.1", 0));
}

TEST(Connection, LargeGatherWriteArrivesIntactOverUnixSocket) {
  LargeGatherWrite(Endpoint::Unix(SocketDir() + "/large.sock"));
}

TEST(Connection, ReadTimesOutWithDeadlineExceeded) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  char byte = 0;
  const iovec in[] = {Piece(&byte, 1)};
  const absl::Time start = absl::Now();
  EXPECT_THAT(pair.server->ReadExact(in, absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(45));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  // The connection is still usable afterwards.
  ASSERT_OK(pair.client->WriteAll(in, kTimeout));
  EXPECT_OK(pair.server->ReadExact(in, kTimeout));
}

TEST(Connection, ZeroTimeoutReadFailsAtOnceWhenNothingIsThere) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  char byte = 0;
  const iovec in[] = {Piece(&byte, 1)};
  EXPECT_THAT(pair.server->ReadExact(in, absl::ZeroDuration()),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(Connection, WriteTimesOutWhenThePeerDoesNotRead) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  std::vector<uint8_t> big(size_t{64} << 20);
  const iovec out[] = {Piece(big.data(), big.size())};
  EXPECT_THAT(pair.client->WriteAll(out, absl::Milliseconds(100)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GT(pair.client->bytes_written(), 0u);
  EXPECT_LT(pair.client->bytes_written(), big.size());
}

TEST(Connection, ShutdownUnblocksABlockedReaderWithCancelled) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  absl::Status read_status;
  std::thread reader([&] {
    char buffer[16] = {};
    const iovec in[] = {Piece(buffer, sizeof(buffer))};
    read_status = pair.server->ReadExact(in, absl::Seconds(30));
  });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time start = absl::Now();
  pair.server->Shutdown();
  reader.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_THAT(read_status, StatusIs(absl::StatusCode::kCancelled));
  pair.server->Shutdown();  // Idempotent.
  EXPECT_TRUE(pair.server->is_shut_down());
}

TEST(Connection, ShutdownUnblocksABlockedWriterWithCancelled) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  std::vector<uint8_t> big(size_t{64} << 20);
  absl::Status write_status;
  std::thread writer([&] {
    const iovec out[] = {Piece(big.data(), big.size())};
    write_status = pair.client->WriteAll(out, absl::Seconds(30));
  });
  absl::SleepFor(absl::Milliseconds(50));
  pair.client->Shutdown();
  writer.join();
  EXPECT_THAT(write_status, StatusIs(absl::StatusCode::kCancelled));
}

TEST(Connection, ShutdownMakesLaterOperationsCancelledAndPeerSeesEof) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  pair.client->Shutdown();
  char byte = 0;
  const iovec piece[] = {Piece(&byte, 1)};
  EXPECT_THAT(pair.client->WriteAll(piece, kTimeout),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(pair.client->ReadExact(piece, kTimeout),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(pair.server->ReadExact(piece, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                  "peer closed the connection"));
}

TEST(Connection, OneThreadWritesWhileAnotherReads) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  constexpr int kMessages = 2000;
  // Server echoes; the client writes on one thread and reads on another.
  std::thread echo([&] {
    uint32_t value = 0;
    const iovec piece[] = {Piece(&value, sizeof(value))};
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_OK(pair.server->ReadExact(piece, kTimeout));
      ASSERT_OK(pair.server->WriteAll(piece, kTimeout));
    }
  });
  std::thread client_reader([&] {
    uint32_t value = 0;
    const iovec piece[] = {Piece(&value, sizeof(value))};
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_OK(pair.client->ReadExact(piece, kTimeout));
      ASSERT_EQ(value, static_cast<uint32_t>(i));
    }
  });
  for (uint32_t i = 0; i < kMessages; ++i) {
    const iovec piece[] = {Piece(&i, sizeof(i))};
    ASSERT_OK(pair.client->WriteAll(piece, kTimeout));
  }
  client_reader.join();
  echo.join();
}

TEST(Connection, PeerCloseBeforeAnyByteIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  pair.client.reset();
  char buffer[8] = {};
  const iovec in[] = {Piece(buffer, sizeof(buffer))};
  EXPECT_THAT(pair.server->ReadExact(in, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                  "peer closed the connection"));
}

TEST(Connection, PeerCloseMidReadIsDataLoss) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  const iovec out[] = {Piece("abc", 3)};
  ASSERT_OK(pair.client->WriteAll(out, kTimeout));
  pair.client.reset();
  char buffer[8] = {};
  const iovec in[] = {Piece(buffer, sizeof(buffer))};
  EXPECT_THAT(
      pair.server->ReadExact(in, kTimeout),
      StatusIsWithMessage(absl::StatusCode::kDataLoss, "after 3 of 8 bytes"));
}

TEST(Connection, WriteToClosedPeerIsUnavailable) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  pair.server.reset();
  std::vector<uint8_t> big(size_t{8} << 20);
  const iovec out[] = {Piece(big.data(), big.size())};
  // The first bytes may still be accepted by the kernel; the reset that the
  // closed peer answers with fails the write (no SIGPIPE).
  EXPECT_THAT(pair.client->WriteAll(out, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(Connection, HalfCloseLetsThePeerReadEverythingThenEof) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  const iovec out[] = {Piece("xy", 2)};
  ASSERT_OK(pair.client->WriteAll(out, kTimeout));
  ASSERT_OK(pair.client->ShutdownWrite());
  char buffer[2] = {};
  const iovec in[] = {Piece(buffer, 2)};
  ASSERT_OK(pair.server->ReadExact(in, kTimeout));
  EXPECT_THAT(pair.server->ReadExact(in, kTimeout),
              StatusIs(absl::StatusCode::kUnavailable));
  // The other direction still works.
  ASSERT_OK(pair.server->WriteAll(out, kTimeout));
  ASSERT_OK(pair.client->ReadExact(in, kTimeout));
}

TEST(Connection, ReadSomeReturnsWhatIsAvailable) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  const iovec out[] = {Piece("abc", 3)};
  ASSERT_OK(pair.client->WriteAll(out, kTimeout));
  char buffer[64] = {};
  ASSERT_OK_AND_ASSIGN(size_t n,
                       pair.server->ReadSome(buffer, sizeof(buffer), kTimeout));
  EXPECT_EQ(std::string(buffer, n), "abc");
  EXPECT_THAT(
      pair.server->ReadSome(buffer, sizeof(buffer), absl::Milliseconds(20)),
      StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST(Connection, ConnectToClosedPortIsUnavailableNamingTheEndpoint) {
  Endpoint closed;
  {
    ASSERT_OK_AND_ASSIGN(auto listener,
                         Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
    closed = listener->local_endpoint();
  }
  EXPECT_THAT(
      Connection::Connect(closed, kTimeout),
      StatusIsWithMessage(absl::StatusCode::kUnavailable, closed.ToString()));
}

TEST(Connection, ConnectToMissingUnixSocketIsUnavailable) {
  const Endpoint nowhere = Endpoint::Unix(SocketDir() + "/nobody.sock");
  EXPECT_THAT(
      Connection::Connect(nowhere, kTimeout),
      StatusIsWithMessage(absl::StatusCode::kUnavailable, nowhere.ToString()));
}

TEST(Connection, ConnectToFullBacklogTimesOutWithDeadlineExceeded) {
  // A listener with backlog 0 that never accepts: once its accept queue is
  // full, Linux drops further SYNs, so the next connect cannot complete.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  ASSERT_EQ(::listen(fd, 0), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  const Endpoint target = Endpoint::Tcp("127.0.0.1", ntohs(address.sin_port));

  std::vector<std::unique_ptr<Connection>> queued;
  absl::Status status;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<std::unique_ptr<Connection>> connection =
        Connection::Connect(target, absl::Milliseconds(200));
    if (!connection.ok()) {
      status = connection.status();
      break;
    }
    queued.push_back(std::move(*connection));
  }
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  ::close(fd);
}

TEST(Connection, ConnectRejectsEmptyHost) {
  EXPECT_THAT(Connection::Connect(Endpoint::Tcp("", 1), kTimeout),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Connection, PeerNamesTheRemoteEnd) {
  ASSERT_OK_AND_ASSIGN(Pair pair, Connect(Endpoint::Tcp("127.0.0.1", 0)));
  EXPECT_EQ(pair.client->peer().rfind("127.0.0.1:", 0), 0u)
      << pair.client->peer();
  EXPECT_EQ(pair.server->peer().rfind("127.0.0.1:", 0), 0u)
      << pair.server->peer();
}

}  // namespace
}  // namespace livemig
