// File: migration/transport/tls_context.h
//
// TlsContext: the certificates and rules of mutual TLS for migration
// channels, loaded once from a directory laid out as Cloud Hypervisor's:
//
//   ca-cert.pem                      both sides: the CA that signs the peers
//   server-cert.pem, server-key.pem  the destination (receiver)
//   client-cert.pem, client-key.pem  the source (sender)
//
//   LIVEMIG_ASSIGN_OR_RETURN(auto tls, TlsContext::ForSource(dir, "dest.example"));
//   LIVEMIG_ASSIGN_OR_RETURN(auto conn, Connection::Connect(to, timeout));
//   LIVEMIG_RETURN_IF_ERROR(conn->StartTls(*tls, timeout));
//
// The rules: TLS 1.3 only; both sides present a certificate and verify the
// other's against ca-cert.pem (a destination refuses a source without one,
// or with one the CA did not sign, before it reads any migration frame); the
// source also checks that the destination's certificate names `hostname`
// (subjectAltName DNS or IP, or the CN when there is no SAN). No session
// tickets or resumption: every channel does a full handshake.
//
// Built on Boost.Asio's ssl::context (OpenSSL 3); the per-connection TLS
// state lives in Connection (connection.h), which drives OpenSSL over its
// own non-blocking socket with the same deadlines as plaintext I/O.
//
// Errors from the factories name the file: NotFound when it is missing,
// InvalidArgument when it cannot be loaded (not PEM, key does not match the
// certificate).
//
// Thread safety: immutable once built; one context may serve any number of
// connections on any threads at once (OpenSSL's SSL_CTX is thread-safe for
// creating sessions). Share it as a shared_ptr<const TlsContext>.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_TLS_CONTEXT_H_
#define LIVEMIG_MIGRATION_TRANSPORT_TLS_CONTEXT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace livemig {

class TlsContext {
 public:
  enum class Role { kSource, kDestination };

  // The destination's context: server-cert.pem/server-key.pem, verifies
  // sources against ca-cert.pem.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const TlsContext>> ForDestination(
      const std::string& dir);
  // The source's context: client-cert.pem/client-key.pem, verifies the
  // destination against ca-cert.pem and checks that it is `hostname` (a DNS
  // name or an IP address). InvalidArgument for an empty hostname.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<const TlsContext>> ForSource(
      const std::string& dir, const std::string& hostname);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  Role role() const { return role_; }
  const std::string& hostname() const { return hostname_; }  // Source only.
  const std::string& dir() const { return dir_; }
  SSL_CTX* native_handle() const;

 private:
  struct Impl;
  // What both roles share: loads the files and sets the rules above.
  static absl::StatusOr<std::unique_ptr<Impl>> Build(Role role, const std::string& dir);
  TlsContext(Role role, std::string dir, std::string hostname, std::unique_ptr<Impl> impl);

  const Role role_;
  const std::string dir_;
  const std::string hostname_;
  const std::unique_ptr<Impl> impl_;
};

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_TRANSPORT_TLS_CONTEXT_H_
