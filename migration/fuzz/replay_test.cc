// File: migration/fuzz/replay_test.cc
//
// The corpus regression test (OSS-Fuzz's pattern): runs one fuzz target's
// LLVMFuzzerTestOneInput on every input of its checked-in corpus
// (migration/fuzz/corpus/<target>/, the directory given as the argument), so
// the seeds and every crash input ever added are re-checked in every build
// configuration, g++ default, asan and tsan, without libFuzzer. A violated
// invariant aborts the process: the test fails, its log names the input
// ("replaying ...") that did it.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "migration/fuzz/corpus_files.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace livemig::fuzz {
namespace {

std::vector<std::string>* corpus_dirs = nullptr;

TEST(CorpusReplay, EveryCheckedInInputKeepsTheTargetsInvariants) {
  const std::vector<std::string> files = CorpusFiles(*corpus_dirs);
  // An empty or missing corpus would make this test pass vacuously.
  ASSERT_GE(files.size(), 3u) << "corpus missing under the given directories";
  for (const std::string& file : files) {
    std::fprintf(stderr, "replaying %s\n", file.c_str());
    const std::string input = ReadFile(file);
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                                     input.size()),
              0)
        << file;
  }
}

}  // namespace
}  // namespace livemig::fuzz

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::vector<std::string> dirs(argv + 1, argv + argc);
  livemig::fuzz::corpus_dirs = &dirs;
  return RUN_ALL_TESTS();
}
