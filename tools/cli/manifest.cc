#include "tools/cli/manifest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/file_offset.h"
#include "migration/internal/region_paths.h"
#include "migration/region_store.h"

namespace livemig::cli {

absl::Status WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(errno)));
  }
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() &&
                  std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int error = errno;
  std::fclose(f);
  if (!ok) {
    return absl::InternalError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(error)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status RemoveFile(const std::string& path, const std::string& dir, bool durable) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("cannot remove ", path, ": ", std::strerror(errno)));
  }
  if (!durable) return absl::OkStatus();
  const ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || ::fsync(fd.get()) != 0) {
    const int error = errno;
    return absl::InternalError(absl::StrCat("removed ", path, ", but the fsync of ", dir,
                                            " failed: ", std::strerror(error)));
  }
  return absl::OkStatus();
}

namespace {

// The string literal starting at text[*at] (a '"'), decoded; *at is moved
// past it. Nullopt if it is not a well-formed JSON string.
std::optional<std::string> ReadString(const std::string& text, size_t* at) {
  std::string out;
  size_t i = *at + 1;
  while (i < text.size() && text[i] != '"') {
    if (text[i] != '\\') {
      out += text[i++];
      continue;
    }
    if (++i >= text.size()) return std::nullopt;
    const char e = text[i++];
    switch (e) {
      case '"': case '\\': case '/': out += e; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        // JsonEscape writes \u00XX for control bytes only; others are not
        // names this receiver wrote.
        unsigned value = 0;
        if (i + 4 > text.size() ||
            !absl::SimpleHexAtoi(absl::string_view(text).substr(i, 4), &value) || value > 0xff) {
          return std::nullopt;
        }
        out += static_cast<char>(value);
        i += 4;
        break;
      }
      default: return std::nullopt;
    }
  }
  if (i >= text.size()) return std::nullopt;
  *at = i + 1;
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ManifestFiles(const std::string& manifest) {
  // The manifest is ReceivedJson's one line: its string tokens are walked,
  // and the string after each "file" key is a file. (Not protobuf's JSON
  // parser: its Map code is not safe in this build's TSan configuration.)
  const size_t first = manifest.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || manifest[first] != '{') {
    return absl::InvalidArgumentError("manifest.json: not JSON (no object)");
  }
  std::vector<std::string> files;
  bool regions = false;
  std::string key;           // The last string, while a ':' may follow it.
  bool after_string = false;
  bool file_value = false;   // The next token is the value of a "file" key.
  for (size_t i = first; i < manifest.size();) {
    const char c = manifest[i];
    if (c == '"') {
      std::optional<std::string> text = ReadString(manifest, &i);
      if (!text.has_value()) {
        return absl::InvalidArgumentError(
            absl::StrCat("manifest.json: not JSON (a bad string at byte ", i, ")"));
      }
      if (file_value) {
        if (!text->empty() && std::find(files.begin(), files.end(), *text) == files.end()) {
          files.push_back(*text);
        }
        file_value = after_string = false;
      } else {
        key = *std::move(text);
        after_string = true;
      }
      continue;
    }
    if (c == ':' && after_string) {
      file_value = key == "file";
      if (key == "regions") regions = true;
    } else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      file_value = false;
    }
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') after_string = false;
    ++i;
  }
  if (!regions) return absl::InvalidArgumentError("manifest.json: no \"regions\" list");
  return files;
}

namespace {

// Removes dir/`relative` if it is a regular file reached without a symlink,
// then the directories on its way that this left empty. True if it removed
// the file, false if it was gone already; otherwise the reason it stays.
absl::StatusOr<bool> RemovePublished(const std::string& dir, const std::string& relative) {
  absl::StatusOr<std::vector<std::string>> parts =
      migration_internal::SplitFilePath(0, relative, kStagingSuffix);
  if (!parts.ok()) return absl::InvalidArgumentError("not a path the receiver publishes");
  if (parts->size() == 1 &&
      ((*parts)[0] == "manifest.json" || (*parts)[0] == "manifest.json.tmp")) {
    return absl::InvalidArgumentError("the name of the manifest, not of a region");
  }
  std::vector<ScopedFd> dirs;
  dirs.emplace_back(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dirs.back().valid()) return absl::InternalError(std::strerror(errno));
  for (size_t i = 0; i + 1 < parts->size(); ++i) {
    absl::StatusOr<ScopedFd> next = migration_internal::OpenDir(
        dirs.back().get(), (*parts)[i], /*create=*/false, 0, relative);
    if (absl::IsNotFound(next.status())) return false;
    if (!next.ok()) {
      return absl::FailedPreconditionError("a directory on its way is a symlink or unreadable");
    }
    dirs.push_back(*std::move(next));
  }
  const std::string& name = parts->back();
  struct stat st;
  if (::fstatat(dirs.back().get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return absl::InternalError(std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError("not a regular file");
  if (::unlinkat(dirs.back().get(), name.c_str(), 0) != 0) {
    if (errno == ENOENT) return false;
    return absl::InternalError(std::strerror(errno));
  }
  // Its directories, deepest first, while they are empty (ENOTEMPTY stops).
  for (size_t i = parts->size() - 1; i-- > 0;) {
    if (::unlinkat(dirs[i].get(), (*parts)[i].c_str(), AT_REMOVEDIR) != 0) break;
  }
  return true;
}

}  // namespace

Unlisted RemoveUnlisted(const std::string& dir, const std::vector<std::string>& earlier,
                        const std::vector<std::string>& current) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = fs::absolute(dir, ec).lexically_normal();
  auto normal = [&](const std::string& p) {
    std::error_code e;
    return fs::absolute(p, e).lexically_normal();
  };
  std::vector<fs::path> listed;
  for (const std::string& p : current) listed.push_back(normal(p));
  Unlisted result;
  for (const std::string& path : earlier) {
    const fs::path full = normal(path);
    if (std::find(listed.begin(), listed.end(), full) != listed.end()) continue;
    const fs::path relative = full.lexically_relative(root);
    absl::StatusOr<bool> removed =
        relative.empty() || *relative.begin() == ".."
            ? absl::StatusOr<bool>(
                  absl::InvalidArgumentError(absl::StrCat("not under --dir=", dir)))
            : RemovePublished(dir, relative.string());
    if (!removed.ok()) {
      result.kept.push_back(absl::StrCat(path, ": ", removed.status().message()));
    } else if (*removed) {
      result.removed.push_back(path);
    }
  }
  return result;
}

}  // namespace livemig::cli
