// Mutual TLS on connections (tls_context.h, Connection::StartTls): what a
// pair of good peers can do, and how each kind of wrong peer is refused.
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/transport/connection.h"
#include "migration/transport/listener.h"
#include "migration/transport/testing/socket_dir.h"
#include "migration/transport/testing/test_certs.h"
#include "migration/transport/tls_context.h"

namespace livemig {
namespace {

using ::livemig::testing::MakeTestCerts;
using ::livemig::testing::SocketDir;
using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;
using ::livemig::testing::TestCerts;
using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(10);

iovec Piece(const void* data, size_t size) { return iovec{const_cast<void*>(data), size}; }

class Tls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string root = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/tls_test_certs");
    auto made = MakeTestCerts(root);
    if (made.ok()) {
      certs_ = new TestCerts(*made);
    } else {
      skip_reason_ = new std::string(made.status().ToString());
    }
  }
  void SetUp() override {
    if (certs_ == nullptr) GTEST_SKIP() << "no test certificates: " << *skip_reason_;
  }

  struct Pair {
    std::unique_ptr<Connection> source;
    std::unique_ptr<Connection> destination;
    absl::Status source_tls;
    absl::Status destination_tls;
  };

  // Connects over `at` and runs both handshakes at once.
  static Pair Handshake(const TlsContext& source, const TlsContext& destination,
                        const Endpoint& at = Endpoint::Tcp("127.0.0.1", 0)) {
    Pair pair;
    auto listener = Listener::Listen(at);
    EXPECT_TRUE(listener.ok()) << listener.status();
    if (!listener.ok()) return pair;
    auto client = Connection::Connect((*listener)->local_endpoint(), kTimeout);
    EXPECT_TRUE(client.ok()) << client.status();
    auto server = (*listener)->Accept(kTimeout);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!client.ok() || !server.ok()) return pair;
    pair.source = std::move(*client);
    pair.destination = std::move(*server);
    std::thread accept([&] { pair.destination_tls = pair.destination->StartTls(destination, kTimeout); });
    pair.source_tls = pair.source->StartTls(source, kTimeout);
    accept.join();
    return pair;
  }

  static std::shared_ptr<const TlsContext> Source(const std::string& dir,
                                                  const std::string& host = "127.0.0.1") {
    auto tls = TlsContext::ForSource(dir, host);
    EXPECT_TRUE(tls.ok()) << tls.status();
    return tls.ok() ? *tls : nullptr;
  }
  static std::shared_ptr<const TlsContext> Destination() {
    auto tls = TlsContext::ForDestination(certs_->good);
    EXPECT_TRUE(tls.ok()) << tls.status();
    return tls.ok() ? *tls : nullptr;
  }

  static TestCerts* certs_;
  static std::string* skip_reason_;
};

TestCerts* Tls::certs_ = nullptr;
std::string* Tls::skip_reason_ = nullptr;

// 16 MiB each way at once, in pieces of mixed sizes: the reader and the
// writer of each end share one OpenSSL session.
TEST_F(Tls, MutualPeersMoveBytesBothWaysAtOnceAndSeeEachOther) {
  Pair pair = Handshake(*Source(certs_->good), *Destination());
  ASSERT_OK(pair.source_tls);
  ASSERT_OK(pair.destination_tls);
  EXPECT_TRUE(pair.source->tls());
  EXPECT_THAT(pair.destination->tls_peer(), HasSubstr("CN=livemig-source"));
  EXPECT_THAT(pair.source->tls_peer(), HasSubstr("CN=localhost"));
  EXPECT_EQ(pair.source->tls_cipher(), "TLS_AES_128_GCM_SHA256");

  constexpr size_t kBytes = 16 << 20;
  std::vector<uint8_t> a(kBytes), b(kBytes);
  for (size_t i = 0; i < kBytes; ++i) {
    a[i] = static_cast<uint8_t>(i * 7 + 1);
    b[i] = static_cast<uint8_t>(i * 13 + 5);
  }
  // Pieces of 32 B, 300 B and 1 MiB - 332 B, repeated: both the gathering
  // of small pieces and direct writes of large ones.
  auto pieces = [](std::vector<uint8_t>& v) {
    std::vector<iovec> out;
    for (size_t off = 0; off < v.size();) {
      for (size_t len : {size_t{32}, size_t{300}, size_t{(1 << 20) - 332}}) {
        out.push_back(Piece(v.data() + off, len));
        off += len;
      }
    }
    return out;
  };
  std::vector<uint8_t> got_a(kBytes), got_b(kBytes);
  absl::Status write_a, write_b, read_b;
  std::thread writer_a([&] { write_a = pair.source->WriteAll(pieces(a), kTimeout); });
  std::thread writer_b([&] { write_b = pair.destination->WriteAll(pieces(b), kTimeout); });
  std::thread reader_b([&] {
    read_b = pair.source->ReadExact({Piece(got_b.data(), kBytes)}, kTimeout);
  });
  EXPECT_OK(pair.destination->ReadExact(pieces(got_a), kTimeout));
  writer_a.join();
  writer_b.join();
  reader_b.join();
  EXPECT_OK(write_a);
  EXPECT_OK(write_b);
  EXPECT_OK(read_b);
  EXPECT_TRUE(got_a == a);
  EXPECT_TRUE(got_b == b);
  EXPECT_EQ(pair.source->bytes_written(), kBytes);
  EXPECT_EQ(pair.destination->bytes_read(), kBytes);
}

TEST_F(Tls, WorksOverUnixSockets) {
  Pair pair = Handshake(*Source(certs_->good, "localhost"), *Destination(),
                        Endpoint::Unix(SocketDir() + "/tls.sock"));
  ASSERT_OK(pair.source_tls);
  ASSERT_OK(pair.destination_tls);
  ASSERT_OK(pair.source->WriteAll({Piece("ping", 4)}, kTimeout));
  char got[4];
  ASSERT_OK(pair.destination->ReadExact({Piece(got, 4)}, kTimeout));
  EXPECT_EQ(std::string(got, 4), "ping");
}

// TLS 1.3: the destination refuses the certificate after the source's
// handshake finished, so the source hears of it on its first read.
TEST_F(Tls, ADestinationRefusesASourceSignedByAnotherCa) {
  Pair pair = Handshake(*Source(certs_->rogue), *Destination());
  EXPECT_THAT(pair.destination_tls,
              StatusIsWithMessage(absl::StatusCode::kUnauthenticated,
                                  "this side refused the peer's certificate"));
  if (pair.source_tls.ok()) {
    char byte;
    EXPECT_THAT(pair.source->ReadExact({Piece(&byte, 1)}, kTimeout),
                StatusIsWithMessage(absl::StatusCode::kUnauthenticated,
                                    "the peer refused this side's certificate"));
  } else {
    EXPECT_THAT(pair.source_tls, StatusIs(absl::StatusCode::kUnauthenticated));
  }
}

TEST_F(Tls, ASourceRefusesADestinationWithAnotherName) {
  Pair pair = Handshake(*Source(certs_->good, "migrate.example"), *Destination());
  EXPECT_THAT(pair.source_tls, StatusIsWithMessage(absl::StatusCode::kUnauthenticated,
                                                   "hostname mismatch"));
  EXPECT_THAT(pair.destination_tls, StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_F(Tls, ASourceChecksAnIpAddressAgainstTheCertificate) {
  Pair pair = Handshake(*Source(certs_->good, "127.0.0.2"), *Destination());
  EXPECT_THAT(pair.source_tls, StatusIsWithMessage(absl::StatusCode::kUnauthenticated,
                                                   "IP address mismatch"));
}

// A TLS source whose destination answers in plaintext (a livemig receiver
// without --tls-dir answers junk with a plaintext Abort frame).
TEST_F(Tls, APlaintextAnswerToTheHandshakeSaysThePeerDoesNotSpeakTls) {
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  ASSERT_OK(listener.status());
  ASSERT_OK_AND_ASSIGN(auto client, Connection::Connect((*listener)->local_endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto server, (*listener)->Accept(kTimeout));
  std::shared_ptr<const TlsContext> source = Source(certs_->good);
  absl::Status handshake;
  std::thread tls([&] { handshake = client->StartTls(*source, kTimeout); });
  char hello[32];
  EXPECT_OK(server->ReadExact({Piece(hello, sizeof(hello))}, kTimeout));
  const std::string reply = "LMIG plaintext abort frame......";
  EXPECT_OK(server->WriteAll({Piece(reply.data(), reply.size())}, kTimeout));
  tls.join();
  EXPECT_THAT(handshake, StatusIsWithMessage(absl::StatusCode::kFailedPrecondition,
                                             "the peer does not speak TLS 1.3"));
}

TEST_F(Tls, PeekShowsThePeersFirstBytesWithoutTakingThem) {
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  ASSERT_OK(listener.status());
  ASSERT_OK_AND_ASSIGN(auto client, Connection::Connect((*listener)->local_endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto server, (*listener)->Accept(kTimeout));
  ASSERT_OK(client->WriteAll({Piece("LM", 2)}, kTimeout));
  std::thread rest([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    (void)client->WriteAll({Piece("IG!", 3)}, kTimeout);
  });
  ASSERT_OK_AND_ASSIGN(const std::string first, server->Peek(4, kTimeout));
  EXPECT_EQ(first, "LMIG");
  rest.join();
  char all[5];
  ASSERT_OK(server->ReadExact({Piece(all, 5)}, kTimeout));
  EXPECT_EQ(std::string(all, 5), "LMIG!");
  // A peer that closes before sending: empty.
  client.reset();
  ASSERT_OK_AND_ASSIGN(auto again, Connection::Connect((*listener)->local_endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto accepted, (*listener)->Accept(kTimeout));
  again.reset();
  ASSERT_OK_AND_ASSIGN(const std::string none, accepted->Peek(4, kTimeout));
  EXPECT_EQ(none, "");
}

TEST_F(Tls, AHandshakeWithASilentPeerTimesOut) {
  auto listener = Listener::Listen(Endpoint::Tcp("127.0.0.1", 0));
  ASSERT_OK(listener.status());
  ASSERT_OK_AND_ASSIGN(auto client, Connection::Connect((*listener)->local_endpoint(), kTimeout));
  ASSERT_OK_AND_ASSIGN(auto server, (*listener)->Accept(kTimeout));
  EXPECT_THAT(server->StartTls(*Destination(), absl::Milliseconds(50)),
              StatusIsWithMessage(absl::StatusCode::kDeadlineExceeded, "TLS handshake with"));
}

TEST_F(Tls, AClosedPeerEndsTheStreamAsPlaintextWould) {
  Pair pair = Handshake(*Source(certs_->good), *Destination());
  ASSERT_OK(pair.source_tls);
  ASSERT_OK(pair.destination_tls);
  ASSERT_OK(pair.source->WriteAll({Piece("abc", 3)}, kTimeout));
  pair.source.reset();
  char got[8];
  EXPECT_THAT(pair.destination->ReadExact({Piece(got, 8)}, kTimeout),
              StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                  "connection closed mid-read after 3 of 8 bytes"));
}

// OpenSSL's own socket BIO writes with write(2): SIGPIPE would kill the
// process (the default disposition, which tests keep) once the peer is gone.
TEST_F(Tls, AWriteAfterThePeerClosedIsUnavailableNotSigpipe) {
  Pair pair = Handshake(*Source(certs_->good), *Destination());
  ASSERT_OK(pair.source_tls);
  ASSERT_OK(pair.destination_tls);
  pair.destination.reset();
  std::vector<uint8_t> bytes(4 << 20, 1);
  absl::Status status;
  for (int i = 0; i < 8 && status.ok(); ++i) {
    status = pair.source->WriteAll({Piece(bytes.data(), bytes.size())}, kTimeout);
  }
  EXPECT_THAT(status, StatusIsWithMessage(absl::StatusCode::kUnavailable,
                                          "peer closed the connection"));
}

TEST_F(Tls, ShutdownCancelsABlockedRead) {
  Pair pair = Handshake(*Source(certs_->good), *Destination());
  ASSERT_OK(pair.source_tls);
  ASSERT_OK(pair.destination_tls);
  std::thread stop([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pair.destination->Shutdown();
  });
  char got[8];
  EXPECT_THAT(pair.destination->ReadExact({Piece(got, 8)}, absl::Seconds(30)),
              StatusIs(absl::StatusCode::kCancelled));
  stop.join();
}

TEST_F(Tls, ContextsNameTheFileThatIsMissingOrBad) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/tls_bad");
  std::filesystem::create_directories(dir);
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kNotFound, dir + "/ca-cert.pem: no such file"));
  EXPECT_THAT(TlsContext::ForDestination(dir + "/nope"),
              StatusIsWithMessage(absl::StatusCode::kNotFound, "no such directory"));
  for (const char* name : {"ca-cert.pem", "server-cert.pem"}) {
    std::filesystem::copy_file(certs_->good + "/" + name, dir + "/" + name,
                               std::filesystem::copy_options::overwrite_existing);
  }
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kNotFound, "/server-key.pem: no such file"));
  std::ofstream(dir + "/server-key.pem") << "not a key\n";
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "cannot load private key " + dir + "/server-key.pem"));
  // The client's key belongs to another certificate.
  std::filesystem::copy_file(certs_->good + "/client-key.pem", dir + "/server-key.pem",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  dir + "/server-key.pem: key values mismatch"));
  EXPECT_THAT(TlsContext::ForSource(certs_->good, ""),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// An encrypted key would have OpenSSL ask for its passphrase on the
// terminal (or read stdin): refused at once instead, naming it.
TEST_F(Tls, AnEncryptedKeyOrAFileThatIsNotRegularIsRefusedNamingIt) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/tls_encrypted");
  std::filesystem::create_directories(dir);
  for (const char* name : {"ca-cert.pem", "server-cert.pem"}) {
    std::filesystem::copy_file(certs_->good + "/" + name, dir + "/" + name,
                               std::filesystem::copy_options::overwrite_existing);
  }
  const std::string encrypt = absl::StrCat("openssl pkey -in ", certs_->good,
                                           "/server-key.pem -aes256 -passout pass:secret -out ",
                                           dir, "/server-key.pem >/dev/null 2>&1");
  ASSERT_EQ(std::system(encrypt.c_str()), 0) << encrypt;
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "private key " + dir +
                                      "/server-key.pem is encrypted; livemig needs it without a "
                                      "passphrase"));
  std::filesystem::remove(dir + "/ca-cert.pem");
  std::filesystem::create_directory(dir + "/ca-cert.pem");
  EXPECT_THAT(TlsContext::ForDestination(dir),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  dir + "/ca-cert.pem: not a regular file"));
}

}  // namespace
}  // namespace livemig
