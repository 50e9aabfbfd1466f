// File: migration/testing/raw_source.h
//
// RawSourceTest: a GoogleTest fixture that stands in for a migration source
// at the wire level. SetUp() starts a Receiver (root_dir under TEST_TMPDIR,
// io_timeout kIo, a 60 s handshake timeout) running ReceiveOne() on its own
// thread and connects one raw Connection (conn_) to it; a test then writes
// hand-crafted frames, well-formed or not, and reads the receiver's answers.
// Result() joins the thread and checks ReceiveOne() ended within kPrompt;
// TearDown() cancels and joins a receiver the test never joined.
//
// Ownership: the fixture owns the receiver, its thread and conn_; result_ is
// written by the receiver thread and read only after Result() joined it.
// Not thread-safe: call the helpers from the test's own thread only. They use
// GoogleTest assertions, so wrap the void ones in ASSERT_NO_FATAL_FAILURE.
//
// The helpers speak protocol.h's sequence correctly (see the test
// ProtocolCorrectInputIsReceivedExactly); tests break it one step at a time:
//
//   SendHello(f)    Hello offering features `f`, reply  (receiver: handshake)
//   Handshake(t, f) SendHello(f), table `t`, its Ack    (receiver: round 0)
//   Batch(), SendBatch()  page batches                  (receiver: rounds)
//   Finish(d)       final marker, device state, Completion with digests `d`
//   ReadVerified()  the ACK_VERIFIED                    (receiver: handover)
//   UpToTheHandover()  all of the above for FileTable("guest.mem")
//   HandoverAck()   the Ack that lets the receiver commit
//   HandOverAndExpectCommitted()  sends it, reads COMMITTED (no error)
#ifndef LIVEMIG_MIGRATION_TESTING_RAW_SOURCE_H_
#define LIVEMIG_MIGRATION_TESTING_RAW_SOURCE_H_

#include <sys/uio.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "migration/page_hashes.h"
#include "migration/protocol.h"
#include "migration/receiver.h"
#include "migration/testing/migration_harness.h"
#include "migration/transport/connection.h"
#include "migration/transport/endpoint.h"
#include "migration/verification.h"
#include "migration/wire/frame_codec.h"
#include "migration/wire/frame_format.h"
#include "migration/wire/frame_io.h"
#include "proto/migration.pb.h"

namespace livemig::testing {

// The deadline of every read and write, and the receiver's io_timeout.
inline constexpr absl::Duration kIo = absl::Seconds(3);
// Every refusal the tests expect is detected on the frame that causes it:
// far sooner than the receiver's io_timeout.
inline constexpr absl::Duration kPrompt = absl::Seconds(2);
// The size of AnonymousTable()'s (and FileTable()'s) one region.
inline constexpr uint64_t kRegionPages = 16;
inline constexpr uint64_t kRegionSize = kRegionPages * kMigrationPageSize;

// Every path under `dir`, recursively (empty: nothing was left behind).
inline std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    names.push_back(entry.path().string());
  }
  return names;
}

// A receiver running ReceiveOne() on a thread, and the raw client
// connection a test speaks to it through.
class RawSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string name =
        ::testing::UnitTest::GetInstance()->current_test_info()->name();
    base_ = TempDir(absl::StrCat("input_", name));
    root_ = absl::StrCat(base_, "/root");
    std::filesystem::create_directories(root_);
    ReceiverOptions options;
    options.root_dir = root_;
    options.io_timeout = kIo;
    options.accept_timeout = absl::Seconds(10);
    // Longer than any test: a stranger is dropped for what it sends, not
    // for its silence (tests of that set their own).
    options.handshake_timeout = absl::Seconds(60);
    Configure(options);
    ASSERT_OK_AND_ASSIGN(receiver_, Receiver::Listen(Endpoint::Tcp("127.0.0.1", 0), options));
    thread_ = std::thread([this] {
      result_ = receiver_->ReceiveOne();
      finished_ = absl::Now();
    });
    ASSERT_OK_AND_ASSIGN(conn_, Connection::Connect(receiver_->endpoint(), kIo));
  }

  // A derived fixture's changes to the receiver's options, before it starts.
  virtual void Configure(ReceiverOptions& options) {}

  void TearDown() override {
    if (thread_.joinable()) {
      receiver_->Cancel();
      thread_.join();
    }
  }

  // Waits for ReceiveOne() and checks it ended within kPrompt of `since`.
  absl::Status Result(absl::Time since) {
    thread_.join();
    EXPECT_LT(finished_ - since, kPrompt) << "ReceiveOne() was not prompt";
    return result_.status();
  }

  absl::Status Send(wire::FrameType type, const google::protobuf::MessageLite& message) {
    return wire::WriteFrame(*conn_, type, message, kIo);
  }
  absl::Status SendBytes(const std::string& bytes) {
    const iovec piece{const_cast<char*>(bytes.data()), bytes.size()};
    return conn_->WriteAll(absl::MakeConstSpan(&piece, 1), kIo);
  }

  // Reads one whole payload-less frame of type `type` into `out`.
  absl::Status Read(wire::FrameType type, google::protobuf::MessageLite* out) {
    absl::StatusOr<wire::IncomingFrame> frame = wire::ReadFrameStart(*conn_, kIo);
    if (!frame.ok()) return frame.status();
    if (frame->header.type != type) {
      return absl::InternalError(absl::StrCat("got a ", wire::FrameTypeName(frame->header.type),
                                              " frame, expected ",
                                              wire::FrameTypeName(type)));
    }
    return wire::FinishFrame(*frame, out);
  }

  // The receiver answered with an Abort carrying `code` (and `message`),
  // then closed.
  void ExpectAbortThenEof(absl::StatusCode code, const std::string& message = "") {
    proto::Abort abort;
    ASSERT_OK(Read(wire::FrameType::kAbort, &abort));
    EXPECT_EQ(abort.code(), static_cast<int>(code)) << abort.message();
    EXPECT_THAT(abort.message(), ::testing::HasSubstr(message));
    EXPECT_EQ(abort.role(), proto::ROLE_DESTINATION);
    EXPECT_THAT(wire::ReadFrameStart(*conn_, kIo), StatusIs(absl::StatusCode::kUnavailable));
  }

  // `features`: what the source offers (this build's by default).
  void SendHello(uint64_t features = kSupportedFeatures) {
    proto::Hello hello = MakeHello(proto::ROLE_SOURCE, 0, 1, "id");
    hello.set_features(features);
    ASSERT_OK(Send(wire::FrameType::kHello, hello));
    proto::Hello reply;
    ASSERT_OK(Read(wire::FrameType::kHello, &reply));
    ASSERT_OK(CheckHello(reply, proto::ROLE_DESTINATION));
  }

  // Hello, then `table`, then the table's Ack: the receiver is in round 0.
  void Handshake(const proto::RegionTable& table, uint64_t features = kSupportedFeatures) {
    ASSERT_NO_FATAL_FAILURE(SendHello(features));
    ASSERT_OK(Send(wire::FrameType::kRegionTable, table));
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_REGION_TABLE);
    ASSERT_EQ(ack.status_code(), 0);
  }

  // One anonymous region of kRegionPages pages at guest address 0.
  static proto::RegionTable AnonymousTable() {
    proto::RegionTable table;
    proto::RegionInfo* r = table.add_regions();
    r->set_index(0);
    r->set_guest_addr(0);
    r->set_size(kRegionSize);
    r->set_page_size(kMigrationPageSize);
    r->set_backing(proto::BACKING_ANONYMOUS);
    r->set_prot(3);
    return table;
  }

  static proto::RegionTable FileTable(const std::string& path) {
    proto::RegionTable table = AnonymousTable();
    table.mutable_regions(0)->set_backing(proto::BACKING_FILE);
    table.mutable_regions(0)->set_file_path(path);
    table.mutable_regions(0)->set_flags(proto::REGION_FLAG_SHARED);
    return table;
  }

  // The END marker of `round`.
  static proto::IterationMarker EndOf(uint32_t round, bool final = false) {
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    marker.set_final(final);
    return marker;
  }

  static proto::PageBatch Batch(uint32_t region, proto::Encoding encoding, uint64_t first_page,
                                uint64_t count, uint32_t round = 0) {
    proto::PageBatch batch;
    batch.set_region_index(region);
    batch.set_encoding(encoding);
    batch.set_round(round);
    proto::PageRun* run = batch.add_runs();
    run->set_first_page(first_page);
    run->set_count(count);
    return batch;
  }

  // Sends a RAW PAGE_BATCH frame with `payload` whose message carries the
  // page hashes of `header_payload` (the same bytes unless a test corrupts
  // them after encoding), as a source does, on `on` (null: conn_). The
  // receiver may refuse the frame before reading its payload and close: the
  // write's outcome is not the test's subject.
  void SendBatch(proto::PageBatch batch, const std::vector<uint8_t>& header_payload,
                 const std::vector<uint8_t>& payload,
                 uint16_t flags = wire::kFramePagesHashed, Connection* on = nullptr) {
    for (size_t off = 0; off + kMigrationPageSize <= header_payload.size();
         off += kMigrationPageSize) {
      batch.add_page_hashes(HashPage(header_payload.data() + off));
    }
    const absl::Span<const uint8_t> piece(header_payload);
    ASSERT_OK_AND_ASSIGN(wire::EncodedFrame frame,
                         wire::EncodeFrame(wire::FrameType::kPageBatch, batch,
                                           absl::MakeConstSpan(&piece, 1), flags));
    const iovec pieces[] = {
        {frame.header.data(), frame.header.size()},
        {frame.message.data(), frame.message.size()},
        {const_cast<uint8_t*>(payload.data()), payload.size()},
    };
    (void)(on != nullptr ? on : conn_.get())->WriteAll(absl::MakeConstSpan(pieces), kIo);
  }

  // The final round's end, the device state and a completion with
  // `digests`: what a source sends after its last page.
  void Finish(const std::vector<proto::RegionDigest>& digests, uint32_t round = 0,
              uint64_t pages_sent = kRegionPages) {
    proto::IterationMarker marker;
    marker.set_round(round);
    marker.set_phase(proto::PHASE_END);
    marker.set_final(true);
    ASSERT_OK(Send(wire::FrameType::kIterationMarker, marker));
    proto::DeviceState device;
    device.set_device_id("vmm");
    device.set_format_version(1);
    device.set_state("state");
    ASSERT_OK(Send(wire::FrameType::kDeviceState, device));
    proto::Completion completion;
    for (const proto::RegionDigest& d : digests) *completion.add_digests() = d;
    completion.set_rounds(round + 1);
    completion.set_total_pages_sent(pages_sent);
    ASSERT_OK(Send(wire::FrameType::kCompletion, completion));
  }

  void ReadVerified() {
    proto::Ack ack;
    ASSERT_OK(Read(wire::FrameType::kAck, &ack));
    ASSERT_EQ(ack.kind(), proto::ACK_VERIFIED);
    ASSERT_EQ(ack.status_code(), 0);
  }

  // A broken handshake does not end ReceiveOne(): the bad connection was
  // answered and dropped, and the next source is received as usual.
  void ExpectTheNextSourceIsReceived() {
    ASSERT_OK_AND_ASSIGN(conn_, Connection::Connect(receiver_->endpoint(), kIo));
    ASSERT_NO_FATAL_FAILURE(UpToTheHandover());
    ASSERT_NO_FATAL_FAILURE(HandOverAndExpectCommitted());
    EXPECT_OK(Result(absl::Now()));
  }

  // After ReadVerified(): the source's HANDOVER, and a COMMITTED without error.
  void HandOverAndExpectCommitted() {
    ASSERT_OK(Send(wire::FrameType::kAck, HandoverAck()));
    proto::Ack committed;
    ASSERT_OK(Read(wire::FrameType::kAck, &committed));
    EXPECT_EQ(committed.status_code(), 0);
  }

  static proto::Ack HandoverAck() {
    proto::Ack ack;
    ack.set_kind(proto::ACK_HANDOVER);
    return ack;
  }

  // Handshake, one zero batch for every page and a correct completion for
  // FileTable: the receiver has verified everything and waits for the
  // handover.
  void UpToTheHandover() {
    ASSERT_NO_FATAL_FAILURE(Handshake(FileTable("guest.mem")));
    ASSERT_OK(Send(wire::FrameType::kPageBatch,
                   Batch(0, proto::ENCODING_ZERO, 0, kRegionPages)));
    ASSERT_NO_FATAL_FAILURE(Finish({Digest(0, std::vector<uint8_t>(kRegionSize, 0))}));
    ASSERT_NO_FATAL_FAILURE(ReadVerified());
  }

  // The page hashes of a source that sent every page of `contents`.
  static PageHashes SentHashes(const std::vector<uint8_t>& contents) {
    PageHashes hashes(contents.size() / kMigrationPageSize);
    for (uint64_t p = 0; p < hashes.pages(); ++p) {
      hashes.Set(p, HashPage(contents.data() + p * kMigrationPageSize));
    }
    return hashes;
  }

  // The completion digest of such a source, for region `region`.
  static proto::RegionDigest Digest(uint32_t region, const std::vector<uint8_t>& contents) {
    std::vector<PageHashes> sent;
    sent.push_back(SentHashes(contents));
    proto::Completion completion;
    AddDigests(sent, &completion);
    proto::RegionDigest d = completion.digests(0);
    d.set_region_index(region);
    return d;
  }

  std::string base_;  // Holds root_ and nothing else.
  std::string root_;
  std::unique_ptr<Receiver> receiver_;
  std::thread thread_;
  absl::StatusOr<ReceivedMigration> result_ = absl::UnknownError("not run");
  absl::Time finished_;
  std::unique_ptr<Connection> conn_;
};

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TESTING_RAW_SOURCE_H_
