// File: migration/transport/internal/tls_stream.h
//
// TlsStream: one OpenSSL session over a connected non-blocking socket, as
// single non-blocking steps. Connection (connection.h) owns one after
// StartTls() and does the waiting: each step either moves bytes, or says
// which readiness (read or write) the socket needs before the same step is
// retried, or that the stream ended or failed.
//
// Thread safety: every step takes the stream's mutex, so a reading thread
// and a writing thread may use one stream at once (OpenSSL's SSL object is
// not safe for that by itself). A step never blocks: the mutex is held
// only while OpenSSL works on what is already there.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_TLS_STREAM_H_
#define LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_TLS_STREAM_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "migration/transport/tls_context.h"

typedef struct ssl_st SSL;

namespace livemig::transport_internal {

class TlsStream {
 public:
  // A session for `fd` (which the caller keeps owning) in the context's
  // role: the source connects, the destination accepts.
  static absl::StatusOr<std::unique_ptr<TlsStream>> Create(const TlsContext& context, int fd);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  struct Step {
    enum class State { kDone, kWantRead, kWantWrite, kEnd, kFailed };
    State state = State::kDone;
    size_t bytes = 0;     // kDone: bytes moved (0 for the handshake).
    absl::Status error;   // kFailed: what OpenSSL said, in words.
  };

  Step Handshake();
  Step Write(const void* data, size_t size);  // Moves 1..size bytes when kDone.
  Step Read(void* data, size_t size);         // Moves 1..size bytes when kDone.
  // Sends close_notify (best effort, one step).
  void CloseNotify();

  // The peer certificate's subject, for logs ("CN=source-1,O=...").
  std::string PeerSubject() const;
  const char* cipher() const;

 private:
  TlsStream(SSL* ssl, TlsContext::Role role) : ssl_(ssl), role_(role) {}
  // Turns the result `ret` of an SSL call into a step.
  Step Result(int ret, size_t bytes, const char* operation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable std::mutex mu_;
  SSL* const ssl_;  // Owned; every use holds mu_.
  const TlsContext::Role role_;
};

}  // namespace livemig::transport_internal

#endif  // LIVEMIG_MIGRATION_TRANSPORT_INTERNAL_TLS_STREAM_H_
