// File: tools/cli/manifest.h
//
// manifest.json: what `livemig receive` writes into --dir beside the rebuilt
// regions once a migration completed and its files were flushed: the
// received migration as one line of JSON (ReceivedJson,
// migration/received_json.h, which shows its fields). Its presence says
// "these files are complete and on disk"; the receiver removes it before the
// next migration publishes anything. `receive --json` prints the same text
// on stdout.
//
// Thread safety: WriteFileAtomically touches only the two paths it names.
#ifndef LIVEMIG_TOOLS_CLI_MANIFEST_H_
#define LIVEMIG_TOOLS_CLI_MANIFEST_H_

#include <string>

#include "absl/status/status.h"

namespace livemig::cli {

// Writes `text` to PATH.tmp, fsyncs it and renames it over `path`, so a
// reader sees the old file or the whole new one, never a part. (The
// directory is not fsynced.) Error: Internal, "cannot write <file>".
[[nodiscard]] absl::Status WriteFileAtomically(const std::string& path,
                                               const std::string& text);

// Removes `path` if it is there; with `durable`, fsyncs the directory
// `dir` holding it, so the removal outlives a crash. Errors: Internal,
// "cannot remove <file>: <reason>", or "removed <file>, but the fsync of
// <dir> failed: <reason>".
[[nodiscard]] absl::Status RemoveFile(const std::string& path, const std::string& dir,
                                      bool durable);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_MANIFEST_H_
