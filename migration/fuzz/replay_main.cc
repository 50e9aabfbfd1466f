// File: migration/fuzz/replay_main.cc
//
// main() for a fuzz target built without libFuzzer (the default g++ build
// and --config=asan/tsan): runs LLVMFuzzerTestOneInput once on every file
// under the paths given, so a crash input from a fuzz run can be reproduced
// and debugged with the ordinary toolchain:
//
//   bazel run --config=asan //migration/fuzz:receiver_stream_fuzzer -- crash-...
//
// Flags starting with '-' (libFuzzer's) are ignored. A violated invariant
// aborts (fuzz_check.h), so exit status 0 means every input passed.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "migration/fuzz/corpus_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] != '-') paths.emplace_back(argv[i]);
  }
  const std::vector<std::string> files = livemig::fuzz::CorpusFiles(paths);
  for (const std::string& file : files) {
    std::fprintf(stderr, "Running: %s\n", file.c_str());
    const std::string input = livemig::fuzz::ReadFile(file);
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  }
  std::fprintf(stderr, "Executed %zu inputs\n", files.size());
  return files.empty() ? 1 : 0;
}
