// File: migration/transport/tls_context.cc
#include "migration/transport/tls_context.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace livemig {
namespace {

namespace ssl = boost::asio::ssl;

absl::Status MissingFile(const std::string& path) {
  return absl::NotFoundError(absl::StrCat("TLS: ", path, ": no such file"));
}

// OpenSSL asks for an encrypted key's passphrase on the terminal unless
// told otherwise: no passphrase, so loading such a key fails at once.
int NoPassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return 0; }

// Whether `path` holds an encrypted PEM private key.
bool IsEncryptedKey(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  for (int i = 0; i < 4 && std::getline(in, line); ++i) {
    if (absl::StrContains(line, "ENCRYPTED")) return true;
  }
  return false;
}

absl::Status LoadError(const std::string& what, const std::string& path,
                       const boost::system::error_code& ec) {
  return absl::InvalidArgumentError(
      absl::StrCat("TLS: cannot load ", what, " ", path, ": ", ec.message()));
}

// Checks that every file is there before loading any, so the message names
// the first missing one rather than an OpenSSL error about it.
absl::Status RequireFiles(std::initializer_list<std::string> paths) {
  for (const std::string& path : paths) {
    std::error_code ec;
    const std::filesystem::file_status st = std::filesystem::status(path, ec);
    if (!std::filesystem::exists(st)) return MissingFile(path);
    if (!std::filesystem::is_regular_file(st)) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS: ", path, ": not a regular file (a directory, device or FIFO)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

struct TlsContext::Impl {
  explicit Impl(ssl::context::method method) : context(method) {}
  ssl::context context;
};

TlsContext::TlsContext(Role role, std::string dir, std::string hostname,
                       std::unique_ptr<Impl> impl)
    : role_(role), dir_(std::move(dir)), hostname_(std::move(hostname)), impl_(std::move(impl)) {}

TlsContext::~TlsContext() = default;

SSL_CTX* TlsContext::native_handle() const { return impl_->context.native_handle(); }

// TLS 1.3 only, our own certificate, the CA, no tickets, partial writes
// (Connection retries with the rest).
absl::StatusOr<std::unique_ptr<TlsContext::Impl>> TlsContext::Build(Role role,
                                                                    const std::string& dir) {
  const bool source = role == TlsContext::Role::kSource;
  const std::string ca = absl::StrCat(dir, "/ca-cert.pem");
  const std::string cert = absl::StrCat(dir, source ? "/client-cert.pem" : "/server-cert.pem");
  const std::string key = absl::StrCat(dir, source ? "/client-key.pem" : "/server-key.pem");
  std::error_code dir_ec;
  if (dir.empty() || !std::filesystem::is_directory(dir, dir_ec)) {
    return absl::NotFoundError(absl::StrCat("TLS: ", dir.empty() ? "(empty)" : dir,
                                            ": no such directory"));
  }
  if (absl::Status s = RequireFiles({ca, cert, key}); !s.ok()) return s;

  auto impl = std::make_unique<Impl>(source ? ssl::context::tls_client
                                                        : ssl::context::tls_server);
  ssl::context& context = impl->context;
  SSL_CTX* native = context.native_handle();
  boost::system::error_code ec;
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1) {
    return absl::InternalError("TLS: this OpenSSL cannot be limited to TLS 1.3");
  }
  // AES-128-GCM first: the fastest suite with AES-NI, and as strong as the
  // migration needs; the others remain for peers that insist.
  SSL_CTX_set_ciphersuites(
      native, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  context.load_verify_file(ca, ec);
  if (ec) return LoadError("CA certificate", ca, ec);
  context.use_certificate_chain_file(cert, ec);
  if (ec) return LoadError("certificate", cert, ec);
  SSL_CTX_set_default_passwd_cb(native, NoPassphrase);
  if (IsEncryptedKey(key)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS: private key ", key, " is encrypted; livemig needs it without a passphrase"));
  }
  context.use_private_key_file(key, ssl::context::pem, ec);
  if (ec) return LoadError("private key", key, ec);
  if (SSL_CTX_check_private_key(native) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: private key ", key, " does not match certificate ", cert));
  }
  context.set_verify_mode(
      source ? ssl::verify_peer : ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  if (ec) return LoadError("verify mode for", dir, ec);
  SSL_CTX_set_num_tickets(native, 0);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(native, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Truncation is still caught: every frame carries its length and checksum.
  SSL_CTX_set_mode(native, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read ahead: OpenSSL takes what the socket holds (many records) per
  // recv, instead of one syscall per record header and body.
  SSL_CTX_set_read_ahead(native, 1);
  SSL_CTX_set_default_read_buffer_len(native, 256 * 1024);
  return impl;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::ForDestination(
    const std::string& dir) {
  auto impl = Build(Role::kDestination, dir);
  if (!impl.ok()) return impl.status();
  return std::shared_ptr<const TlsContext>(
      new TlsContext(Role::kDestination, dir, "", std::move(*impl)));
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::ForSource(
    const std::string& dir, const std::string& hostname) {
  if (hostname.empty()) {
    return absl::InvalidArgumentError(
        "TLS: the source needs the destination's name to check its certificate against");
  }
  auto impl = Build(Role::kSource, dir);
  if (!impl.ok()) return impl.status();
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param((*impl)->context.native_handle());
  boost::system::error_code ec;
  boost::asio::ip::make_address(hostname, ec);
  const bool is_ip = !ec;
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, hostname.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, hostname.c_str(), hostname.size());
  if (ok != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: cannot check certificates against the name \"", hostname, "\""));
  }
  return std::shared_ptr<const TlsContext>(
      new TlsContext(Role::kSource, dir, hostname, std::move(*impl)));
}

}  // namespace livemig
