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
// In repeated mode each migration's files replace the earlier one's; a file
// the earlier migration published under a name the new one does not use is
// removed once the new manifest is written (RemoveUnlisted), so --dir holds
// what its manifest lists.
//
// Thread safety: WriteFileAtomically touches only the two paths it names;
// RemoveUnlisted only the files and directories it is given.
#ifndef LIVEMIG_TOOLS_CLI_MANIFEST_H_
#define LIVEMIG_TOOLS_CLI_MANIFEST_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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

// The files a manifest lists (its regions' "file" fields), each once, in
// the order of its regions. InvalidArgument "manifest.json: ..." when
// `manifest` is not a manifest's JSON.
absl::StatusOr<std::vector<std::string>> ManifestFiles(const std::string& manifest);

// What RemoveUnlisted did: the files it removed, and one line per file of
// the earlier migration it left in place, saying why.
struct Unlisted {
  std::vector<std::string> removed;
  std::vector<std::string> kept;
};

// Removes each file of `earlier` (an earlier migration's files, as its
// manifest named them) that `current` does not list, and then each of its
// directories under `dir` that this left empty. Only files the receiver
// could have published are touched: a path must be `dir`/<a region path
// the receiver accepts>, reached without following a symlink, and name a
// regular file; anything else, and a removal that fails, is kept and said.
// A file already gone is neither.
Unlisted RemoveUnlisted(const std::string& dir, const std::vector<std::string>& earlier,
                        const std::vector<std::string>& current);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_MANIFEST_H_
