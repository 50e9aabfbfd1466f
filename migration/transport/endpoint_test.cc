// File: migration/transport/endpoint_test.cc
#include "migration/transport/endpoint.h"

#include <string>
#include <vector>

#include "core/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace livemig {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

TEST(Endpoint, ParsesIpv4HostAndPort) {
  ASSERT_OK_AND_ASSIGN(Endpoint endpoint, Endpoint::Parse("127.0.0.1:7000"));
  EXPECT_EQ(endpoint.kind, Endpoint::Kind::kTcp);
  EXPECT_EQ(endpoint.host, "127.0.0.1");
  EXPECT_EQ(endpoint.port, 7000);
  EXPECT_EQ(endpoint, Endpoint::Tcp("127.0.0.1", 7000));
}

TEST(Endpoint, ParsesHostName) {
  ASSERT_OK_AND_ASSIGN(Endpoint endpoint, Endpoint::Parse("localhost:65535"));
  EXPECT_EQ(endpoint, Endpoint::Tcp("localhost", 65535));
}

TEST(Endpoint, ParsesBracketedIpv6) {
  ASSERT_OK_AND_ASSIGN(Endpoint endpoint, Endpoint::Parse("[::1]:8080"));
  EXPECT_EQ(endpoint, Endpoint::Tcp("::1", 8080));
}

TEST(Endpoint, ParsesPortZeroForListening) {
  ASSERT_OK_AND_ASSIGN(Endpoint endpoint, Endpoint::Parse("127.0.0.1:0"));
  EXPECT_EQ(endpoint.port, 0);
}

TEST(Endpoint, ParsesConnectedDescriptorsInChannelOrder) {
  ASSERT_OK_AND_ASSIGN(Endpoint e, Endpoint::Parse("fd:7,3"));
  EXPECT_EQ(e.kind, Endpoint::Kind::kFd);
  EXPECT_EQ(e.fds, (std::vector<int>{7, 3}));
  EXPECT_EQ(e.ToString(), "fd:7,3");
  EXPECT_EQ(Endpoint::Parse(e.ToString()).value(), e);
}

TEST(Endpoint, RejectsBadDescriptorLists) {
  for (const char* text : {"fd:", "fd:x", "fd:3,", "fd:-1", "fd:1,,2", "fd:99999999999"}) {
    EXPECT_THAT(Endpoint::Parse(text),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                    "file descriptors must be decimal numbers"))
        << text;
  }
  EXPECT_THAT(Endpoint::Parse("fd:4,4"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument, "descriptor 4 given twice"));
}

TEST(Endpoint, ParsesUnixPath) {
  ASSERT_OK_AND_ASSIGN(Endpoint endpoint, Endpoint::Parse("unix:/tmp/a.sock"));
  EXPECT_EQ(endpoint.kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(endpoint.path, "/tmp/a.sock");
  EXPECT_EQ(endpoint, Endpoint::Unix("/tmp/a.sock"));
}

TEST(Endpoint, ToStringRoundTripsThroughParse) {
  for (const Endpoint& endpoint :
       {Endpoint::Tcp("127.0.0.1", 1), Endpoint::Tcp("::1", 65535),
        Endpoint::Tcp("localhost", 0), Endpoint::Unix("/run/x.sock")}) {
    ASSERT_OK_AND_ASSIGN(Endpoint parsed, Endpoint::Parse(endpoint.ToString()));
    EXPECT_EQ(parsed, endpoint) << endpoint.ToString();
  }
  EXPECT_EQ(Endpoint::Tcp("::1", 7).ToString(), "[::1]:7");
  EXPECT_EQ(Endpoint::Tcp("127.0.0.1", 7).ToString(), "127.0.0.1:7");
  EXPECT_EQ(Endpoint::Unix("/a").ToString(), "unix:/a");
}

TEST(Endpoint, RejectsMalformedTextNamingIt) {
  for (const char* text :
       {"", "127.0.0.1", "127.0.0.1:", ":7000", "127.0.0.1:65536",
        "127.0.0.1:-1", "127.0.0.1:70a", "127.0.0.1: 70", "::1:7000", "[::1]",
        "[::1]7000", "[]:7000", "[::1:7000", "[127.0.0.1]:7000",
        "unix:", "host:123456", "a b:7"}) {
    EXPECT_THAT(Endpoint::Parse(text),
                StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                    std::string("\"") + text + "\""))
        << text;
  }
}

TEST(Endpoint, RejectsUnixPathLongerThanTheKernelAccepts) {
  const std::string longest(Endpoint::kMaxUnixPathLength, 'a');
  EXPECT_THAT(Endpoint::Parse("unix:" + longest),
              StatusIs(absl::StatusCode::kOk));
  EXPECT_THAT(Endpoint::Parse("unix:" + longest + "a"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace livemig
