#include "migration/testing/migration_harness.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace livemig::testing {

std::string TempDir(const std::string& name) {
  const char* root = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(root ? root : "/tmp", "/", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::unique_ptr<ReceiverThread> ReceiverThread::Start(const Endpoint& at,
                                                      const std::string& root,
                                                      absl::Duration io_timeout,
                                                      absl::Duration accept_timeout) {
  ReceiverOptions options;
  options.root_dir = root;
  options.io_timeout = io_timeout;
  options.accept_timeout = accept_timeout;
  return Start(at, std::move(options));
}

std::unique_ptr<ReceiverThread> ReceiverThread::Start(const Endpoint& at,
                                                      ReceiverOptions options) {
  auto t = std::make_unique<ReceiverThread>();
  auto receiver = Receiver::Listen(at, std::move(options));
  EXPECT_TRUE(receiver.ok()) << receiver.status();
  if (!receiver.ok()) return nullptr;
  t->receiver = std::move(*receiver);
  t->thread = std::thread([p = t.get()] { p->result = p->receiver->ReceiveOne(); });
  return t;
}

ReceiverThread::~ReceiverThread() {
  if (thread.joinable()) {
    receiver->Cancel();
    thread.join();
  }
}

absl::StatusOr<ReceivedMigration>& ReceiverThread::Join() {
  thread.join();
  return result;
}

void ExpectSameMemory(const GuestMemory<AtomicBitmap>& source,
                      const GuestMemory<NoBitmap>& rebuilt) {
  ASSERT_EQ(source.num_regions(), rebuilt.num_regions());
  for (size_t r = 0; r < source.num_regions(); ++r) {
    const auto& a = source.region(r);
    const auto& b = rebuilt.region(r);
    ASSERT_EQ(a.start_addr(), b.start_addr());
    ASSERT_EQ(a.len(), b.len());
    for (uint64_t page = 0; page < a.len() / 4096; ++page) {
      ASSERT_EQ(std::memcmp(a.region().as_ptr() + page * 4096,
                            b.region().as_ptr() + page * 4096, 4096),
                0)
          << "region " << r << " page " << page << " differs";
    }
  }
}

}  // namespace livemig::testing
