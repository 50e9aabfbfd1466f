// A destination tmpfs that is, or becomes, too small: the receiver refuses
// with ResourceExhausted naming the file — at the region table when the
// files cannot fit together, later when someone else took the space — and
// never writes a page through a mapping into a hole the filesystem can no
// longer back (which would kill it with SIGBUS). Space on tmpfs is checked
// at the table and claimed after round 0 (internal/space_claim.h).
#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "migration/testing/raw_source.h"
#include "migration/testing/scoped_tmpfs.h"
#include "migration/wire/compression.h"

namespace livemig::testing {
namespace {

constexpr uint64_t kPage = kMigrationPageSize;
constexpr uint64_t kPages = 192;  // 768 KiB: one fits a 1 MiB tmpfs, two do not.

class FullTmpfs : public RawSourceTest {
 protected:
  void SetUp() override {
    RawSourceTest::SetUp();
    tmpfs_ = std::make_unique<ScopedTmpfs>(root_, "1m");
  }
  void TearDown() override {
    RawSourceTest::TearDown();
    tmpfs_.reset();
  }

  // File-backed regions of kPages pages each, "r<i>.mem".
  static proto::RegionTable Files(int count) {
    proto::RegionTable table;
    for (int i = 0; i < count; ++i) {
      proto::RegionInfo* r = table.add_regions();
      r->set_index(i);
      r->set_guest_addr(i * kPages * kPage);
      r->set_size(kPages * kPage);
      r->set_page_size(kPage);
      r->set_backing(proto::BACKING_FILE);
      r->set_file_path(absl::StrCat("r", i, ".mem"));
      r->set_flags(proto::REGION_FLAG_SHARED);
      r->set_prot(3);
    }
    return table;
  }

  // Someone else takes all the free space of the tmpfs.
  void FillTheFilesystem() {
    const int fd = ::open((root_ + "/other").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    for (uint64_t pages = 256; pages > 0; pages /= 2) {  // As much as fits.
      struct stat st;
      ASSERT_EQ(::fstat(fd, &st), 0);
      (void)::fallocate(fd, 0, st.st_size, static_cast<off_t>(pages * kPage));
    }
    ::close(fd);
  }

  std::string Staging(int i) const { return absl::StrCat(root_, "/r", i, ".mem.livemig-partial"); }

  std::unique_ptr<ScopedTmpfs> tmpfs_;
};

#define SKIP_WITHOUT_TMPFS() \
  if (!tmpfs_->mounted()) GTEST_SKIP() << tmpfs_->why()

TEST_F(FullTmpfs, FilesThatFitOnlyOneAtATimeAreRefusedAtTheTable) {
  SKIP_WITHOUT_TMPFS();
  ASSERT_NO_FATAL_FAILURE(SendHello());
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kRegionTable, Files(2)));
  ExpectAbortThenEof(absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(Result(sent),
              StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                  "region 0: \"" + Staging(0) + "\" and the other files on its "
                                  "filesystem need 1572864 bytes together"));
}

// A hostile source sends one page range as ZERO twice in round 0: the second
// is refused before anything is written (round 0's ZERO pages may be holes
// of a full filesystem: clearing them through the mapping would be SIGBUS).
TEST_F(FullTmpfs, ZeroPagesSentTwiceInRoundZeroAreRefusedWithoutTouchingTheHoles) {
  SKIP_WITHOUT_TMPFS();
  ASSERT_NO_FATAL_FAILURE(Handshake(Files(1)));
  ASSERT_NO_FATAL_FAILURE(FillTheFilesystem());
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kPages)));
  const absl::Time sent = absl::Now();
  ASSERT_OK(Send(wire::FrameType::kPageBatch, Batch(0, proto::ENCODING_ZERO, 0, kPages)));
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kDataLoss,
                                                "region 0 page 0 (guest 0x0) arrived twice in "
                                                "round 0"));
}

// Compressed round-0 batches are decompressed into the mapping: their runs
// are claimed first, so a full filesystem is an error, not SIGBUS.
TEST_F(FullTmpfs, ACompressedRoundZeroBatchIntoAFullFilesystemIsResourceExhausted) {
  SKIP_WITHOUT_TMPFS();
  proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
  const wire::CompressionSpec zstd{wire::Codec::kZstd, 1};
  OfferCompression(zstd, &hello);
  ASSERT_OK(Send(wire::FrameType::kHello, hello));
  proto::Hello reply;
  ASSERT_OK(Read(wire::FrameType::kHello, &reply));
  ASSERT_OK(Send(wire::FrameType::kRegionTable, Files(1)));
  proto::Ack ack;
  ASSERT_OK(Read(wire::FrameType::kAck, &ack));
  ASSERT_EQ(ack.status_code(), 0);
  ASSERT_NO_FATAL_FAILURE(FillTheFilesystem());

  std::vector<uint8_t> pages(kPages * kPage);
  for (size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<uint8_t>(i / 64);
  ASSERT_OK_AND_ASSIGN(auto compressor, wire::BatchCompressor::Create(zstd, pages.size()));
  const std::optional<absl::Span<const uint8_t>> packed = compressor->Compress(pages);
  ASSERT_TRUE(packed.has_value());
  const std::vector<uint8_t> payload(packed->begin(), packed->end());
  const absl::Time sent = absl::Now();
  SendBatch(Batch(0, proto::ENCODING_ZSTD, 0, kPages), pages, payload);
  EXPECT_THAT(Result(sent), StatusIsWithMessage(absl::StatusCode::kResourceExhausted,
                                                "region 0: \"" + Staging(0) + "\" needs " +
                                                    std::to_string(kPages * kPage) + " bytes"));
}

}  // namespace
}  // namespace livemig::testing
