// File: tools/cli/manifest.h
//
// manifest.json: what `livemig receive` writes into --dir beside the rebuilt
// regions once a migration completed and its files were flushed. Its
// presence says "these files are complete and on disk"; the receiver removes
// it before the next migration publishes anything. One line, no spaces:
//
//   {"status":"completed","verified":true,
//    "regions":[{"index":0,"guest_addr":0,"size":1073741824,
//                "file":"/var/lib/vm/guest.mem","file_offset":0,
//                "page_hash_root":"0123456789abcdef"},...],
//    "stats":{"raw_pages":N,"zero_pages":N,"torn_pages":N,"bytes_received":N,
//             "rounds":N,"channels":N,"device_state_bytes":N,
//             "compression":"none","compressed_batches":N,"decompress_ms":X}}
//
// Regions are in region-table order; "file" is the rebuilt file's path,
// JSON-escaped; "page_hash_root" is the root of the page hashes that landed,
// 16 lower-case hex digits; "verified" false means the source sent no
// digests. `receive --json` prints the same text on stdout.
//
// Thread safety: ManifestJson is pure; WriteFileAtomically touches only the
// two paths it names.
#ifndef LIVEMIG_TOOLS_CLI_MANIFEST_H_
#define LIVEMIG_TOOLS_CLI_MANIFEST_H_

#include <string>

#include "absl/status/status.h"
#include "migration/receiver.h"

namespace livemig::cli {

// The manifest of `got`, as above.
std::string ManifestJson(const ReceivedMigration& got);

// Writes `text` to PATH.tmp, fsyncs it and renames it over `path`, so a
// reader sees the old file or the whole new one, never a part. (The
// directory is not fsynced.) Error: Internal, "cannot write <file>".
[[nodiscard]] absl::Status WriteFileAtomically(const std::string& path,
                                               const std::string& text);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_MANIFEST_H_
