#include "migration/internal/channel_acceptor.h"

#include <cstring>

#include <condition_variable>
#include <list>
#include <optional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "migration/protocol.h"
#include "migration/wire/frame_io.h"

namespace livemig::migration_internal {
namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(50);

// What is left until `deadline` (zero once it passed).
absl::Duration Left(absl::Time deadline) {
  return std::max(deadline - absl::Now(), absl::ZeroDuration());
}

// The channels of one migration seen so far.
struct Group {
  uint32_t count = 0;
  std::vector<std::unique_ptr<Connection>> slots;  // By channel index.
  std::vector<bool> reserved;                      // Index taken (answer in flight).
  uint32_t present = 0;
  absl::Time first;  // The group's first channel: the eviction's order.
  absl::Time last;   // Its latest channel to arrive: its timeout runs from here.
  uint64_t features = 0;  // Of channel 0's Hello, once it came.
  wire::Codec compression = wire::Codec::kNone;  // Of channel 0's Hello.
  // What the first channel to arrive asked for: every channel of a
  // migration must ask for the same compression (UNSPECIFIED == NONE).
  std::optional<proto::Compression> asked;
  uint32_t asked_by = 0;
  uint64_t generation = 0;  // Unique per group made (Acceptor::generations_).
};

class Acceptor {
 public:
  // `refusing`: every Hello is answered "busy" (BusyRefuser); Run() returns
  // only when `cancelled` is set.
  Acceptor(Listener& listener, const AcceptOptions& options,
           const std::atomic<bool>& cancelled, bool refusing = false)
      : listener_(listener), options_(options), cancelled_(cancelled), refusing_(refusing) {}
  ~Acceptor() { Drain(); }

  absl::StatusOr<AcceptedMigration> Run();

 private:
  // One accepted connection's handshake, on its own thread.
  void Handshake(std::unique_ptr<Connection> conn);
  absl::Status ReadHello(Connection& conn, proto::Hello* hello, absl::Time deadline);
  // With options_.tls: refuses a plaintext source, then the TLS handshake.
  // *answer: whether an Abort can still reach the peer after a failure.
  absl::Status StartTls(Connection& conn, bool* answer, absl::Time deadline);
  // Shuts every connection not handed out down and joins every thread.
  void Drain();
  // Connections whose Hello was answered, waiting in incomplete groups.
  uint32_t WaitingLocked() const;
  // At most that many may wait (each holds a descriptor until group_timeout).
  uint32_t MaxWaiting() const { return options_.max_pending + options_.max_channels; }
  // Makes room for one more connection of group `id`: while MaxWaiting()
  // wait, the incomplete group whose first channel came longest ago (not
  // `id`'s) is dropped, its connections shut down. So strangers that park
  // connections cannot lock a real source out for group_timeout: they must
  // keep arriving faster than it connects its channels. False if only `id`'s
  // own connections wait.
  bool EvictForLocked(const std::string& id);

  Listener& listener_;
  const AcceptOptions& options_;
  const std::atomic<bool>& cancelled_;
  const bool refusing_;

  // std::mutex: see migration/internal/send_channel.h. Guards the rest.
  std::mutex mu_;
  std::condition_variable changed_;
  std::set<Connection*> handshaking_;  // Owned by their threads.
  std::map<std::string, Group> groups_;
  std::string complete_;  // Id of the first complete migration.
  bool done_ = false;     // Run() has returned or is returning.
  uint32_t pending_ = 0;
  uint64_t generations_ = 0;  // Groups made so far.
  std::list<std::thread> threads_;
  std::vector<std::thread::id> finished_;  // Threads done, to be joined.
  absl::Status last_refusal_;  // The last Hello refused, for the deadline's message.
};

absl::Status Acceptor::ReadHello(Connection& conn, proto::Hello* hello, absl::Time deadline) {
  LIVEMIG_ASSIGN_OR_RETURN(wire::IncomingFrame frame,
                           wire::ReadFrameStart(conn, Left(deadline)));
  if (frame.header.type != wire::FrameType::kHello) {
    return absl::DataLossError(absl::StrCat("expected a HELLO frame, got ",
                                            wire::FrameTypeName(frame.header.type)));
  }
  LIVEMIG_RETURN_IF_ERROR(wire::FinishFrame(frame, hello));
  LIVEMIG_RETURN_IF_ERROR(CheckHello(*hello, proto::ROLE_SOURCE));
  if (hello->channel_count() > 1 &&
      (hello->features() & proto::FEATURE_MULTI_CHANNEL) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "source asks for ", hello->channel_count(),
        " channels without offering FEATURE_MULTI_CHANNEL"));
  }
  LIVEMIG_RETURN_IF_ERROR(CheckCompressionRequest(*hello, options_.accept_compression));
  if (hello->channel_count() > options_.max_channels) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "source asks for ", hello->channel_count(), " channels; at most ",
        options_.max_channels));
  }
  return absl::OkStatus();
}

absl::Status Acceptor::StartTls(Connection& conn, bool* answer, absl::Time deadline) {
  if (options_.tls == nullptr) return absl::OkStatus();
  // A plaintext livemig source starts with the frame magic; TLS starts
  // with a handshake record (0x16). Tell the former in its own language.
  uint32_t magic = 0;
  LIVEMIG_ASSIGN_OR_RETURN(const std::string first,
                           conn.Peek(sizeof(magic), Left(deadline)));
  if (first.size() == sizeof(magic)) std::memcpy(&magic, first.data(), sizeof(magic));
  if (magic == wire::kFrameMagic) {  // The header is little-endian, as this host.
    return absl::FailedPreconditionError(
        "this destination requires TLS: the source sent plaintext (give it --tls-dir)");
  }
  *answer = false;  // Mid-handshake, neither plaintext nor TLS reaches it.
  LIVEMIG_RETURN_IF_ERROR(conn.StartTls(*options_.tls, Left(deadline)));
  *answer = true;
  return absl::OkStatus();
}

void Acceptor::Handshake(std::unique_ptr<Connection> conn) {
  Connection* raw = conn.get();
  proto::Hello hello;
  bool answer = true;  // Whether the peer can read a (plaintext or TLS) Abort.
  // One deadline for the whole handshake: TLS first, then the Hello.
  const absl::Time deadline = absl::Now() + options_.handshake_timeout;
  absl::Status status = StartTls(*conn, &answer, deadline);
  if (status.ok()) status = ReadHello(*conn, &hello, deadline);
  const std::string& id = hello.migration_id();
  const uint32_t index = hello.channel_index();
  // The generation of the group in which this connection holds `index` (0:
  // none). The group may be dropped (timeout, eviction) while the answer
  // goes out, and another made under the same id: that one is not ours.
  uint64_t reserved = 0;
  if (status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    Group& g = groups_[id];
    if (g.count == 0) {
      g.count = hello.channel_count();
      g.slots.resize(g.count);
      g.reserved.assign(g.count, false);
      g.first = g.last = absl::Now();
      g.generation = ++generations_;
    }
    if (refusing_ || done_ || !complete_.empty()) {
      status = absl::UnavailableError("the destination is busy with another migration");
    } else if (hello.channel_count() != g.count) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "channel ", index, " says the migration has ", hello.channel_count(),
          " channels; its channel 0 said ", g.count));
    } else if (g.reserved[index]) {
      status = absl::InvalidArgumentError(absl::StrCat("channel index ", index, " used twice"));
    } else if (const proto::Compression asks = hello.compression() == proto::COMPRESSION_UNSPECIFIED
                                                   ? proto::COMPRESSION_NONE
                                                   : hello.compression();
               g.asked.has_value() && *g.asked != asks) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "channel ", index, " asks for compression ", proto::Compression_Name(asks),
          "; channel ", g.asked_by, " of the same migration asked for ",
          proto::Compression_Name(*g.asked)));
    } else if (!EvictForLocked(id)) {  // Only for a Hello that would be taken.
      status = absl::ResourceExhaustedError(absl::StrCat(
          WaitingLocked(), " connections already wait for the other channels of their "
          "migrations; at most ", MaxWaiting(), " may"));
    } else {
      if (!g.asked.has_value()) {
        g.asked = asks;
        g.asked_by = index;
      }
      g.reserved[index] = true;
      reserved = g.generation;
    }
  }
  if (status.ok()) {
    proto::Hello reply =
        MakeHello(proto::ROLE_DESTINATION, index, hello.channel_count(), id);
    reply.set_features(AgreedFeatures(hello));
    if (hello.compression() != proto::COMPRESSION_UNSPECIFIED) {
      reply.set_compression(hello.compression());  // Accepted by ReadHello.
    }
    status = wire::WriteFrame(*conn, wire::FrameType::kHello, reply, options_.io_timeout);
  }
  std::lock_guard<std::mutex> lock(mu_);
  handshaking_.erase(raw);
  --pending_;
  auto group = groups_.find(id);
  if (group != groups_.end() && (reserved == 0 || group->second.generation != reserved)) {
    group = groups_.end();  // Not the group this connection reserved in.
  }
  if (status.ok() && !done_ && group != groups_.end()) {
    Group& g = group->second;
    g.slots[index] = std::move(conn);
    g.last = absl::Now();
    if (index == 0) {
      g.features = AgreedFeatures(hello);
      g.compression = CodecFromWire(hello.compression()).value_or(wire::Codec::kNone);
    }
    if (++g.present == g.count && complete_.empty()) {
      complete_ = id;
      listener_.Wake();  // Run() returns it now, not after its accept poll.
    }
  } else if (!status.ok()) {
    if (group != groups_.end()) group->second.reserved[index] = false;
    last_refusal_ = status;
    // The stranger learns why; nothing else is touched.
    if (answer) SendAbortBestEffort(*conn, status, proto::ROLE_DESTINATION);
    conn->Shutdown();
  }
  finished_.push_back(std::this_thread::get_id());
  changed_.notify_all();
  // `conn` (if still ours) closes here.
}

bool Acceptor::EvictForLocked(const std::string& id) {
  while (WaitingLocked() >= MaxWaiting()) {
    auto oldest = groups_.end();
    for (auto it = groups_.begin(); it != groups_.end(); ++it) {
      if (it->first == id || it->second.present == 0) continue;
      if (oldest == groups_.end() || it->second.first < oldest->second.first) oldest = it;
    }
    if (oldest == groups_.end()) return false;
    for (auto& c : oldest->second.slots) {
      if (c != nullptr) c->Shutdown();
    }
    groups_.erase(oldest);  // Reserved slots answer into nothing: see Handshake.
  }
  return true;
}

uint32_t Acceptor::WaitingLocked() const {
  uint32_t waiting = 0;
  for (const auto& [id, g] : groups_) waiting += g.present;
  return waiting;
}

void Acceptor::Drain() {
  std::list<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    for (Connection* c : handshaking_) c->Shutdown();
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  std::lock_guard<std::mutex> lock(mu_);
  groups_.clear();  // Closes every connection not handed out.
}

absl::StatusOr<AcceptedMigration> Acceptor::Run() {
  const absl::Time deadline = absl::Now() + options_.accept_timeout;
  while (true) {
    if (cancelled_.load(std::memory_order_relaxed)) {
      return absl::CancelledError("cancelled before a migration began");
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!complete_.empty()) {
        AcceptedMigration out;
        out.migration_id = complete_;
        out.features = groups_[complete_].features;
        out.compression = groups_[complete_].compression;
        out.channels = std::move(groups_[complete_].slots);
        groups_.erase(complete_);
        return out;
      }
      // Incomplete migrations whose latest channel came too long ago: a
      // sender that died during its setup, or a stranger. (From the latest,
      // not the first: a sender connects its channels one after another, a
      // few round trips each, and many channels over a long round trip
      // took longer than one io timeout in all.)
      for (auto it = groups_.begin(); it != groups_.end();) {
        if (absl::Now() - it->second.last < options_.group_timeout) {
          ++it;
          continue;
        }
        for (auto& c : it->second.slots) {
          if (c != nullptr) c->Shutdown();
        }
        it = groups_.erase(it);  // Reserved slots answer into nothing: see Handshake.
      }
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "no source connected all its channels within ",
            absl::FormatDuration(options_.accept_timeout),
            last_refusal_.ok() ? ""
                               : absl::StrCat(" (last refused: ", last_refusal_.message(), ")")));
      }
      if (pending_ >= options_.max_pending) {
        changed_.wait_for(lock, absl::ToChronoMilliseconds(kPoll));
        continue;
      }
    }
    // Join finished handshakes, so a flood of strangers does not pile up
    // threads.
    std::list<std::thread> finished;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::thread::id id : finished_) {
        for (auto it = threads_.begin(); it != threads_.end(); ++it) {
          if (it->get_id() == id) {
            finished.splice(finished.end(), threads_, it);
            break;
          }
        }
      }
      finished_.clear();
    }
    for (auto& t : finished) t.join();
    absl::StatusOr<std::unique_ptr<Connection>> conn = listener_.Accept(kPoll);
    if (absl::IsDeadlineExceeded(conn.status())) continue;
    // Out of descriptors, say: the door stays answered, and a migration
    // still waits for its source (the strangers holding them time out).
    if (!conn.ok() && !absl::IsCancelled(conn.status()) &&
        (refusing_ || absl::IsResourceExhausted(conn.status()))) {
      if (!refusing_) {
        std::lock_guard<std::mutex> lock(mu_);
        last_refusal_ = conn.status();
      }
      absl::SleepFor(kPoll);
      continue;
    }
    if (!conn.ok()) return conn.status();
    std::lock_guard<std::mutex> lock(mu_);
    handshaking_.insert(conn->get());
    ++pending_;
    threads_.emplace_back([this, c = std::move(*conn)]() mutable { Handshake(std::move(c)); });
  }
}

}  // namespace

struct BusyRefuser::State {
  State(Listener& l, const AcceptOptions& o) : listener(l), options(o) {}
  Listener& listener;
  const AcceptOptions options;
  // Relaxed: the refuser polls it, and the join orders everything after.
  std::atomic<bool> stop{false};
  std::thread thread;
};

BusyRefuser::BusyRefuser(Listener& listener, AcceptOptions options) {
  options.accept_timeout = absl::InfiniteDuration();  // Until it is destroyed.
  state_ = std::make_unique<State>(listener, options);
  State* s = state_.get();
  s->thread = std::thread([s] {
    Acceptor refuser(s->listener, s->options, s->stop, /*refusing=*/true);
    (void)refuser.Run();  // Cancelled once stopped (or the listener closed).
  });
}

BusyRefuser::~BusyRefuser() {
  state_->stop.store(true, std::memory_order_relaxed);
  state_->listener.Wake();  // Its Accept() returns now, not after its poll.
  state_->thread.join();
}

absl::StatusOr<AcceptedMigration> AcceptMigration(Listener& listener,
                                                  const AcceptOptions& options,
                                                  const std::atomic<bool>& cancelled) {
  Acceptor acceptor(listener, options, cancelled);
  return acceptor.Run();
}

}  // namespace livemig::migration_internal
