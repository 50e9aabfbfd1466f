// File: migration/transport/internal/tls_stream.cc
#include "migration/transport/internal/tls_stream.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace livemig::transport_internal {
namespace {

// The reasons that mean "the certificates do not let us talk": this side
// or the peer refused the other's certificate.
bool IsAuthenticationFailure(int reason) {
  switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
      return true;
    default:
      return false;
  }
}

// The reasons that mean "what came is not TLS 1.3 at all".
bool IsNotTls(int reason) {
  switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsStream>> TlsStream::Create(const TlsContext& context, int fd) {
  SSL* ssl = SSL_new(context.native_handle());
  if (ssl == nullptr) return absl::ResourceExhaustedError("TLS: SSL_new failed");
  if (SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError("TLS: SSL_set_fd failed");
  }
  if (context.role() == TlsContext::Role::kSource) {
    SSL_set_connect_state(ssl);
    // SNI, so a destination serving several names could pick; harmless here.
    SSL_set_tlsext_host_name(ssl, context.hostname().c_str());
  } else {
    SSL_set_accept_state(ssl);
  }
  return std::unique_ptr<TlsStream>(new TlsStream(ssl, context.role()));
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

TlsStream::Step TlsStream::Result(int ret, size_t bytes, const char* operation) {
  Step step;
  const int error = SSL_get_error(ssl_, ret);
  switch (error) {
    case SSL_ERROR_NONE:
      step.bytes = bytes;
      return step;
    case SSL_ERROR_WANT_READ:
      step.state = Step::State::kWantRead;
      return step;
    case SSL_ERROR_WANT_WRITE:
      step.state = Step::State::kWantWrite;
      return step;
    case SSL_ERROR_ZERO_RETURN:
      step.state = Step::State::kEnd;
      return step;
    case SSL_ERROR_SYSCALL: {
      const int e = errno;
      if (e == 0 || e == EPIPE || e == ECONNRESET) {
        step.state = Step::State::kEnd;
        return step;
      }
      step.state = Step::State::kFailed;
      step.error = absl::InternalError(absl::StrCat("TLS ", operation, ": ", std::strerror(e)));
      return step;
    }
    default:
      break;
  }
  step.state = Step::State::kFailed;
  const unsigned long err = ERR_peek_last_error();
  const int reason = ERR_GET_REASON(err);
  const char* text = ERR_reason_error_string(err);
  std::string why = text != nullptr ? text : absl::StrCat("OpenSSL error ", err);
  const long verify = SSL_get_verify_result(ssl_);
  if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
    absl::StrAppend(&why, ": ", X509_verify_cert_error_string(verify));
  }
  ERR_clear_error();
  const std::string message = absl::StrCat("TLS ", operation, ": ", why);
  if (IsNotTls(reason)) {
    step.error = absl::FailedPreconditionError(
        absl::StrCat(message, " (the peer does not speak TLS 1.3: is it using --tls-dir?)"));
  } else if (IsAuthenticationFailure(reason)) {
    const bool ours = reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
                      reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
    step.error = absl::UnauthenticatedError(absl::StrCat(
        message, ours ? " (this side refused the peer's certificate)"
                      : " (the peer refused this side's certificate)"));
  } else if (reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC) {
    step.error = absl::DataLossError(message);
  } else {
    step.error = absl::UnavailableError(message);
  }
  return step;
}

TlsStream::Step TlsStream::Handshake() {
  std::lock_guard<std::mutex> lock(mu_);
  ERR_clear_error();
  return Result(SSL_do_handshake(ssl_), 0, "handshake");
}

TlsStream::Step TlsStream::Write(const void* data, size_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  ERR_clear_error();
  size_t written = 0;
  const int ret = SSL_write_ex(ssl_, data, size, &written);
  return Result(ret, written, "write");
}

TlsStream::Step TlsStream::Read(void* data, size_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  ERR_clear_error();
  size_t read = 0;
  const int ret = SSL_read_ex(ssl_, data, size, &read);
  return Result(ret, read, "read");
}

void TlsStream::CloseNotify() {
  std::lock_guard<std::mutex> lock(mu_);
  ERR_clear_error();
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
}

std::string TlsStream::PeerSubject() const {
  std::lock_guard<std::mutex> lock(mu_);
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return "";
  char buffer[256];
  X509_NAME_oneline(X509_get_subject_name(cert), buffer, sizeof(buffer));
  X509_free(cert);
  return buffer;
}

const char* TlsStream::cipher() const {
  std::lock_guard<std::mutex> lock(mu_);
  return SSL_get_cipher_name(ssl_);
}

}  // namespace livemig::transport_internal
