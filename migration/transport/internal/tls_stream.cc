// File: migration/transport/internal/tls_stream.cc
#include "migration/transport/internal/tls_stream.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
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

// A socket BIO that never raises SIGPIPE: OpenSSL's own writes with
// write(2), which kills a process whose peer closed (Connection promises
// not to). The fd is in the BIO's data pointer; the BIO does not own it.
int SocketOf(BIO* bio) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(bio))); }

int BioWrite(BIO* bio, const char* data, size_t size, size_t* written) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(SocketOf(bio), data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n >= 0) {
    *written = static_cast<size_t>(n);
    return 1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_write(bio);
  return 0;
}

int BioRead(BIO* bio, char* data, size_t size, size_t* read) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(SocketOf(bio), data, size, MSG_DONTWAIT);
  if (n > 0) {
    *read = static_cast<size_t>(n);
    return 1;
  }
  if (n == 0) {
    errno = 0;  // EOF: SSL_ERROR_ZERO_RETURN / SYSCALL with errno 0.
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(bio);
  return 0;
}

long BioCtrl(BIO* /*bio*/, int command, long /*num*/, void* /*ptr*/) {
  switch (command) {
    case BIO_CTRL_FLUSH:  // Nothing is buffered here.
    case BIO_CTRL_PUSH:
    case BIO_CTRL_POP:
      return 1;
    default:
      return 0;
  }
}

int BioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* NoSigpipeSocketMethod() {
  // Built once, never freed: OpenSSL keeps using it for the process's life.
  static const BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "livemig socket");
    BIO_meth_set_write_ex(m, BioWrite);
    BIO_meth_set_read_ex(m, BioRead);
    BIO_meth_set_ctrl(m, BioCtrl);
    BIO_meth_set_create(m, BioCreate);
    return m;
  }();
  return method;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsStream>> TlsStream::Create(const TlsContext& context, int fd) {
  SSL* ssl = SSL_new(context.native_handle());
  if (ssl == nullptr) return absl::ResourceExhaustedError("TLS: SSL_new failed");
  BIO* bio = BIO_new(NoSigpipeSocketMethod());
  if (bio == nullptr) {
    SSL_free(ssl);
    return absl::ResourceExhaustedError("TLS: BIO_new failed");
  }
  BIO_set_data(bio, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  SSL_set_bio(ssl, bio, bio);  // The SSL owns the BIO (one reference each way).
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
