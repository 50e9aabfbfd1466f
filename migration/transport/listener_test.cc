// File: migration/transport/listener_test.cc
#include "migration/transport/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/transport/testing/socket_dir.h"

namespace livemig {
namespace {

using ::livemig::testing::SocketDir;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

bool Exists(const std::string& path) {
  struct stat info;
  return ::lstat(path.c_str(), &info) == 0;
}

TEST(Listener, PortZeroPicksAFreePort) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  EXPECT_EQ(listener->local_endpoint().host, "127.0.0.1");
  EXPECT_NE(listener->local_endpoint().port, 0);
}

TEST(Listener, ResolvesLocalhostToANumericAddress) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("localhost", 0)));
  const Endpoint bound = listener->local_endpoint();
  EXPECT_TRUE(bound.host == "127.0.0.1" || bound.host == "::1") << bound.host;
  ASSERT_OK_AND_ASSIGN(auto client,
                       Connection::Connect(bound, absl::Seconds(2)));
  ASSERT_OK_AND_ASSIGN(auto server, listener->Accept(absl::Seconds(2)));
}

TEST(Listener, AcceptTimesOutWithDeadlineExceeded) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  const absl::Time start = absl::Now();
  EXPECT_THAT(listener->Accept(absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(45));
}

TEST(Listener, CloseUnblocksAcceptWithCancelled) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  absl::Status accepted;
  std::thread acceptor(
      [&] { accepted = listener->Accept(absl::Seconds(10)).status(); });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time start = absl::Now();
  listener->Close();
  acceptor.join();
  EXPECT_THAT(accepted, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  listener->Close();  // Idempotent.
  EXPECT_THAT(listener->Accept(absl::Seconds(1)),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST(Listener, WakeEndsOneAcceptEarlyAndTheListenerKeepsWorking) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  absl::Status accepted;
  std::thread acceptor(
      [&] { accepted = listener->Accept(absl::Seconds(60)).status(); });
  listener->Wake();  // Before or during the Accept: either way it ends it.
  acceptor.join();
  EXPECT_THAT(accepted, StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, ": woken"));
  // Woken once: the next Accept waits for its timeout or a connection.
  EXPECT_THAT(listener->Accept(absl::Milliseconds(20)),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "no connection within"));
  ASSERT_OK_AND_ASSIGN(auto client,
                       Connection::Connect(listener->local_endpoint(), absl::Seconds(5)));
  EXPECT_OK(listener->Accept(absl::Seconds(5)).status());
  listener->Wake();
  listener->Close();  // Close wins over a pending wake-up.
  EXPECT_THAT(listener->Accept(absl::Seconds(1)), StatusIs(absl::StatusCode::kCancelled));
}

TEST(Listener, ClosedListenerRefusesConnections) {
  ASSERT_OK_AND_ASSIGN(auto listener,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  listener->Close();
  EXPECT_THAT(Connection::Connect(listener->local_endpoint(), absl::Seconds(2)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(Listener, SecondListenerOnTheSamePortIsAlreadyExistsNamingTheAddress) {
  ASSERT_OK_AND_ASSIGN(auto first,
                       Listener::Listen(Endpoint::Tcp("127.0.0.1", 0)));
  EXPECT_THAT(Listener::Listen(first->local_endpoint()),
              StatusIsWithMessage(absl::StatusCode::kAlreadyExists,
                                  absl::StrCat("bind ", first->local_endpoint().ToString(),
                                               ": Address already in use")));
}

TEST(Listener, UnixListenerReplacesStaleSocketAndRemovesItsFile) {
  const std::string path = SocketDir() + "/stale.sock";
  {
    // A socket file nobody listens on any more, as a crashed process leaves.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ::unlink(path.c_str());
    ASSERT_EQ(
        ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ::close(fd);
    ASSERT_TRUE(Exists(path));
  }
  {
    ASSERT_OK_AND_ASSIGN(auto listener, Listener::Listen(Endpoint::Unix(path)));
    EXPECT_EQ(listener->local_endpoint(), Endpoint::Unix(path));
    ASSERT_OK_AND_ASSIGN(auto client, Connection::Connect(Endpoint::Unix(path),
                                                          absl::Seconds(2)));
    ASSERT_OK_AND_ASSIGN(auto server, listener->Accept(absl::Seconds(2)));
    EXPECT_EQ(server->peer(), "unix:" + path);
  }
  EXPECT_FALSE(Exists(path));
}

// A second listener on a live socket must not steal it: the first keeps its
// socket file and keeps accepting, and no connection reaches it in between.
TEST(Listener, UnixListenerRefusesASocketSomeoneListensOn) {
  const std::string path = SocketDir() + "/live.sock";
  ASSERT_OK_AND_ASSIGN(auto first, Listener::Listen(Endpoint::Unix(path)));
  EXPECT_THAT(Listener::Listen(Endpoint::Unix(path)),
              StatusIsWithMessage(absl::StatusCode::kAlreadyExists,
                                  "unix:" + path + " is a live socket"));
  EXPECT_TRUE(Exists(path));
  EXPECT_THAT(first->Accept(absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));  // Nothing probed it.
  ASSERT_OK_AND_ASSIGN(auto client, Connection::Connect(Endpoint::Unix(path), absl::Seconds(2)));
  EXPECT_OK(first->Accept(absl::Seconds(2)));
}

TEST(Listener, UnixListenerLeavesNonSocketFilesAlone) {
  const std::string path = SocketDir() + "/regular.file";
  const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_FALSE(Listener::Listen(Endpoint::Unix(path)).ok());
  EXPECT_TRUE(Exists(path));
  ::unlink(path.c_str());
}

TEST(Listener, RejectsOverlongUnixPath) {
  EXPECT_THAT(Listener::Listen(Endpoint::Unix("/tmp/" + std::string(200, 'x'))),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace livemig

namespace livemig {
namespace {

// Connected socket pairs, closed at the end of the test.
struct SocketPairs {
  std::vector<int> ours, theirs;
  explicit SocketPairs(int n) {
    for (int i = 0; i < n; ++i) {
      int sv[2];
      EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
      ours.push_back(sv[0]);
      theirs.push_back(sv[1]);
    }
  }
  ~SocketPairs() {
    for (int fd : ours) ::close(fd);
    for (int fd : theirs) ::close(fd);
  }
};

TEST(Listener, AnFdEndpointAcceptsItsDescriptorsInOrderThenTimesOut) {
  SocketPairs pairs(2);
  ASSERT_OK_AND_ASSIGN(auto listener, Listener::Listen(Endpoint::Fds(pairs.ours)));
  // The listener works on dups: the caller may close its own at once.
  for (int& fd : pairs.ours) {
    ::close(fd);
    fd = -1;
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(auto conn, listener->Accept(absl::Seconds(5)));
    char byte = static_cast<char>('a' + i);
    ASSERT_EQ(::write(pairs.theirs[i], &byte, 1), 1);
    char got = 0;
    ASSERT_OK(conn->ReadExact({iovec{&got, 1}}, absl::Seconds(5)));
    EXPECT_EQ(got, byte) << "connection " << i << " is descriptor " << i;
  }
  EXPECT_THAT(listener->Accept(absl::Milliseconds(20)),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded,
                                  "every descriptor was taken"));
}

TEST(Listener, AnFdEndpointRefusesWhatIsNotAConnectedStreamSocket) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  EXPECT_THAT(Listener::Listen(Endpoint::Fds({pipe_fds[0]})),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  absl::StrCat("fd ", pipe_fds[0], ": not a socket")));
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  const int unconnected = ::socket(AF_UNIX, SOCK_STREAM, 0);
  EXPECT_THAT(Connection::FromFd(unconnected),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  absl::StrCat("fd ", unconnected, ": not connected")));
  const int datagram = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  EXPECT_THAT(Connection::FromFd(datagram),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "not a stream socket"));
  ::close(unconnected);
  ::close(datagram);
}

}  // namespace
}  // namespace livemig
