#include "migration/internal/file_landing.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "core/posix_error.h"
#include "core/status_macros.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"

namespace livemig::migration_internal {

FileLanding::FileLanding(size_t buffer_bytes) : buffer_(buffer_bytes) {}

absl::Status FileLanding::Land(Connection& conn, wire::IncomingFrame& frame,
                               const proto::PageBatch& batch, const FileOffset& file,
                               std::mutex& file_writes, absl::Duration timeout,
                               const std::string& what) {
  hashes_.clear();
  for (const proto::PageRun& run : batch.runs()) {
    uint64_t offset = file.start() + run.first_page() * kMigrationPageSize;
    uint64_t left = run.count() * kMigrationPageSize;
    while (left > 0) {
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(left, buffer_.size()));
      LIVEMIG_RETURN_IF_ERROR(wire::ReadPayloadPiece(
          conn, frame, absl::MakeSpan(buffer_.data(), piece), timeout));
      // Hashed here, while the piece is in cache (not from the mapping
      // afterwards: that read would fault every page into the mapping).
      for (size_t at = 0; at < piece; at += kMigrationPageSize) {
        hashes_.push_back(HashPage(buffer_.data() + at));
      }
      std::lock_guard<std::mutex> lock(file_writes);
      size_t done = 0;
      while (done < piece) {
        const ssize_t n = ::pwrite(file.fd(), buffer_.data() + done, piece - done,
                                   static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          return PosixError(absl::StrCat(what, ": write ", piece - done,
                                         " bytes at file offset ", offset + done),
                            n < 0 ? errno : EIO);
        }
        done += static_cast<size_t>(n);
      }
      offset += piece;
      left -= piece;
    }
  }
  return wire::FinishPayload(frame);
}

}  // namespace livemig::migration_internal
