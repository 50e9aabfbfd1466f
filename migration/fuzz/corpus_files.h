// File: migration/fuzz/corpus_files.h
//
// The inputs a corpus replay runs: every regular file under the given paths
// (a path may also be one file), sorted so a replay is reproducible.
// Used by replay_main.cc and replay_test.cc. Thread safety: pure functions.
#ifndef LIVEMIG_MIGRATION_FUZZ_CORPUS_FILES_H_
#define LIVEMIG_MIGRATION_FUZZ_CORPUS_FILES_H_

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace livemig::fuzz {

inline std::vector<std::string> CorpusFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const std::string& path : paths) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) {
      files.push_back(path);
      continue;
    }
    for (const auto& entry : std::filesystem::recursive_directory_iterator(path, ec)) {
      if (entry.is_regular_file()) files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace livemig::fuzz

#endif  // LIVEMIG_MIGRATION_FUZZ_CORPUS_FILES_H_
