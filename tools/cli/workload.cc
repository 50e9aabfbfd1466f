#include "tools/cli/workload.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "tools/cli/units.h"

namespace livemig::cli {
namespace {

constexpr int kMaxThreads = 256;
// How far behind its schedule a writer may fall before it forgets the rest
// (a descheduled writer catches up, but never bursts for long).
constexpr std::chrono::milliseconds kMaxBacklog{100};

std::string_view KindName(WorkloadSpec::Kind kind) {
  switch (kind) {
    case WorkloadSpec::Kind::kIdle:
      return "idle";
    case WorkloadSpec::Kind::kUniform:
      return "uniform";
    case WorkloadSpec::Kind::kHotset:
      return "hotset";
    case WorkloadSpec::Kind::kSequential:
      return "sequential";
    case WorkloadSpec::Kind::kZipf:
      return "zipf";
  }
  return "unknown";
}

// Debian's Abseil is built with its own string_view (not std's alias).
absl::string_view Sv(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

absl::Status BadSpec(std::string_view spec, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid workload \"", Sv(spec), "\": ", Sv(why)));
}

// "64MiB" when `bytes` is a whole number of a binary unit, else "12345".
std::string SizeToSpec(uint64_t bytes) {
  static constexpr std::pair<int, std::string_view> kUnits[] = {
      {40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}};
  for (const auto& [shift, name] : kUnits) {
    const uint64_t unit = uint64_t{1} << shift;
    if (bytes >= unit && bytes % unit == 0) {
      return absl::StrCat(bytes >> shift, Sv(name));
    }
  }
  return absl::StrCat(bytes);
}

// "200MB/s" or "64MiB/s" when `rate` is a whole number of a unit (decimal
// preferred), else the bytes per second with 17 significant digits.
std::string RateToSpec(double rate) {
  static constexpr std::pair<double, std::string_view> kUnits[] = {
      {1e12, "TB/s"},    {1e9, "GB/s"},     {1e6, "MB/s"},
      {1e3, "KB/s"},     {0x1p40, "TiB/s"}, {0x1p30, "GiB/s"},
      {0x1p20, "MiB/s"}, {0x1p10, "KiB/s"}};
  for (const auto& [unit, name] : kUnits) {
    const double n = rate / unit;
    if (rate >= unit && n == std::floor(n) && n * unit == rate && n < 1e15) {
      return absl::StrFormat("%.0f%s", n, Sv(name));
    }
  }
  return absl::StrFormat("%.17g", rate);
}

// Samples ranks 1..n with P(k) proportional to 1 / k^s, in O(1) time and
// space: rejection-inversion (W. Hörmann, G. Derflinger, "Rejection-inversion
// to generate variates from monotone discrete distributions", 1996), as in
// Apache Commons RNG's RejectionInversionZipfSampler. REQUIRES: n >= 1, s > 0.
class ZipfSampler {
 public:
  ZipfSampler(uint64_t n, double s)
      : n_(n),
        s_(s),
        h_integral_x1_(HIntegral(1.5) - 1.0),
        h_integral_n_(HIntegral(static_cast<double>(n) + 0.5)),
        squeeze_(2.0 - HIntegralInverse(HIntegral(2.5) - H(2.0))) {}

  template <typename Rng>
  uint64_t Sample(Rng& rng) const {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    while (true) {
      const double u =
          h_integral_n_ + uniform(rng) * (h_integral_x1_ - h_integral_n_);
      const double x = HIntegralInverse(u);
      double k = std::floor(x + 0.5);
      if (k < 1) k = 1;
      if (k > static_cast<double>(n_)) k = static_cast<double>(n_);
      if (k - x <= squeeze_ || u >= HIntegral(k + 0.5) - H(k)) {
        return static_cast<uint64_t>(k);
      }
    }
  }

 private:
  // log1p(x) / x, and expm1(x) / x, accurate near 0.
  static double Helper1(double x) {
    if (std::fabs(x) > 1e-8) return std::log1p(x) / x;
    return 1 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
  }
  static double Helper2(double x) {
    if (std::fabs(x) > 1e-8) return std::expm1(x) / x;
    return 1 + x * 0.5 * (1 + x * (1.0 / 3.0) * (1 + 0.25 * x));
  }
  double H(double x) const { return std::exp(-s_ * std::log(x)); }
  double HIntegral(double x) const {
    const double log_x = std::log(x);
    return Helper2((1.0 - s_) * log_x) * log_x;
  }
  double HIntegralInverse(double x) const {
    double t = x * (1.0 - s_);
    if (t < -1.0) t = -1.0;
    return std::exp(Helper1(t) * x);
  }

  uint64_t n_;
  double s_;
  double h_integral_x1_;
  double h_integral_n_;
  double squeeze_;
};

// A fixed bijection of [0, n): rank r -> (a * r + b) mod n with gcd(a, n) = 1,
// so Zipf's hot ranks land all over memory rather than in its first pages.
class RankScatter {
 public:
  explicit RankScatter(uint64_t n) : n_(n) {
    a_ = n <= 1 ? 0 : 0x9E3779B97F4A7C15ull % n;
    if (n > 1 && a_ == 0) a_ = 1;
    while (n > 1 && std::gcd(a_, n) != 1) ++a_;
    b_ = n == 0 ? 0 : 0x2545F4914F6CDD1Dull % n;
  }
  uint64_t operator()(uint64_t rank) const {
    return static_cast<uint64_t>(
        (static_cast<unsigned __int128>(a_) * rank + b_) % n_);
  }

 private:
  uint64_t n_;
  uint64_t a_;
  uint64_t b_;
};

WorkloadSpec Clamped(WorkloadSpec spec) {
  spec.threads = std::clamp(spec.threads, 1, kMaxThreads);
  if (!(spec.zipf_s > 0) || !std::isfinite(spec.zipf_s)) spec.zipf_s = 1.1;
  if (!std::isfinite(spec.rate) || spec.rate < 0) spec.rate = 0;
  return spec;
}

}  // namespace

absl::StatusOr<WorkloadSpec> ParseWorkload(std::string_view spec) {
  using Kind = WorkloadSpec::Kind;
  const size_t colon = spec.find(':');
  const std::string_view kind_name = spec.substr(0, colon);
  WorkloadSpec out;
  if (kind_name == "idle") {
    out.kind = Kind::kIdle;
  } else if (kind_name == "uniform") {
    out.kind = Kind::kUniform;
  } else if (kind_name == "hotset") {
    out.kind = Kind::kHotset;
  } else if (kind_name == "sequential") {
    out.kind = Kind::kSequential;
  } else if (kind_name == "zipf") {
    out.kind = Kind::kZipf;
  } else {
    return BadSpec(spec, absl::StrCat("unknown kind \"", Sv(kind_name),
                                      "\" (expected idle, uniform, hotset, "
                                      "sequential or zipf)"));
  }

  bool has_rate = false, has_size = false, has_s = false, has_threads = false,
       has_seed = false;
  if (colon != std::string_view::npos) {
    for (absl::string_view piece :
         absl::StrSplit(Sv(spec.substr(colon + 1)), ',')) {
      const std::string_view item(piece.data(), piece.size());
      const size_t eq = item.find('=');
      if (eq == std::string_view::npos) {
        return BadSpec(
            spec, absl::StrCat("expected KEY=VALUE, got \"", Sv(item), "\""));
      }
      const std::string_view key = item.substr(0, eq);
      const std::string_view value = item.substr(eq + 1);
      bool* seen = nullptr;
      if (key == "rate") {
        seen = &has_rate;
      } else if (key == "size") {
        seen = &has_size;
      } else if (key == "s") {
        seen = &has_s;
      } else if (key == "threads") {
        seen = &has_threads;
      } else if (key == "seed") {
        seen = &has_seed;
      } else {
        return BadSpec(spec, absl::StrCat("unknown key \"", Sv(key),
                                          "\" (expected rate, size, s, "
                                          "threads or seed)"));
      }
      const bool applies = out.kind != Kind::kIdle &&
                           (key == "rate" || key == "threads" || key == "seed" ||
                            (key == "size" && out.kind == Kind::kHotset) ||
                            (key == "s" && out.kind == Kind::kZipf));
      if (!applies) {
        return BadSpec(spec,
                       absl::StrCat("key \"", Sv(key), "\" does not apply to ",
                                    Sv(KindName(out.kind))));
      }
      if (*seen) {
        return BadSpec(spec, absl::StrCat("key \"", Sv(key), "\" given twice"));
      }
      *seen = true;
      if (key == "rate") {
        absl::StatusOr<double> rate = ParseRate(value);
        if (!rate.ok()) {
          return BadSpec(
              spec, absl::StrCat("key \"rate\": ", rate.status().message()));
        }
        if (*rate <= 0) {
          return BadSpec(spec, "key \"rate\" must be more than 0");
        }
        out.rate = *rate;
      } else if (key == "size") {
        absl::StatusOr<uint64_t> size = ParseSize(value);
        if (!size.ok()) {
          return BadSpec(
              spec, absl::StrCat("key \"size\": ", size.status().message()));
        }
        if (*size == 0) {
          return BadSpec(spec, "key \"size\" must be more than 0");
        }
        out.hot_bytes = *size;
      } else if (key == "s") {
        double s = 0;
        if (value.empty() || !(absl::SimpleAtod(Sv(value), &s)) ||
            !std::isfinite(s) || s <= 0 || s > 100) {
          return BadSpec(spec, absl::StrCat("key \"s\": expected a number in "
                                            "(0, 100], got \"",
                                            Sv(value), "\""));
        }
        out.zipf_s = s;
      } else if (key == "seed") {
        uint64_t seed = 0;
        if (!absl::SimpleAtoi(Sv(value), &seed)) {
          return BadSpec(spec, absl::StrCat("key \"seed\": expected an "
                                            "unsigned integer, got \"",
                                            Sv(value), "\""));
        }
        out.seed = seed;
      } else {  // threads
        int threads = 0;
        if (!absl::SimpleAtoi(Sv(value), &threads) || threads < 1 ||
            threads > kMaxThreads) {
          return BadSpec(
              spec, absl::StrCat("key \"threads\": expected an "
                                 "integer in [1, ",
                                 kMaxThreads, "], got \"", Sv(value), "\""));
        }
        out.threads = threads;
      }
    }
  }
  if (out.kind != Kind::kIdle && !has_rate) {
    return BadSpec(spec, absl::StrCat("missing key \"rate\" (", Sv(kind_name),
                                      " needs e.g. rate=200MB/s)"));
  }
  if (out.kind == Kind::kHotset && !has_size) {
    return BadSpec(spec, "missing key \"size\" (hotset needs e.g. size=64MiB)");
  }
  return out;
}

std::string WorkloadToString(const WorkloadSpec& spec) {
  using Kind = WorkloadSpec::Kind;
  std::string out(KindName(spec.kind));
  if (spec.kind == Kind::kIdle) return out;
  out += ':';
  if (spec.kind == Kind::kHotset) {
    absl::StrAppend(&out, "size=", SizeToSpec(spec.hot_bytes), ",");
  }
  if (spec.kind == Kind::kZipf) absl::StrAppend(&out, "s=", spec.zipf_s, ",");
  absl::StrAppend(&out, "rate=", RateToSpec(spec.rate));
  if (spec.threads != 1) absl::StrAppend(&out, ",threads=", spec.threads);
  if (spec.seed != 0) absl::StrAppend(&out, ",seed=", spec.seed);
  return out;
}

Workload::Workload(const GuestMemory<AtomicBitmap>& memory, WorkloadSpec spec)
    : memory_(memory), spec_(Clamped(spec)) {
  region_first_page_.reserve(memory.num_regions() + 1);
  uint64_t hot_left = spec_.hot_bytes;
  for (const auto& region : memory.regions()) {
    region_first_page_.push_back(total_pages_);
    total_pages_ += (region.len() + kPageSize - 1) / kPageSize;
    const uint64_t hot_here = std::min<uint64_t>(hot_left, region.len());
    hot_pages_ += (hot_here + kPageSize - 1) / kPageSize;
    hot_left -= hot_here;
  }
  region_first_page_.push_back(total_pages_);
  if (spec_.kind != WorkloadSpec::Kind::kHotset || hot_pages_ == 0) {
    hot_pages_ = total_pages_;
  }
}

Workload::~Workload() { Stop(); }

void Workload::Start() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  paused_.store(false, std::memory_order_relaxed);
  if (!writers_.empty()) return;
  if (spec_.kind == WorkloadSpec::Kind::kIdle || spec_.rate <= 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(false, std::memory_order_relaxed);
  }
  ++generation_;
  for (int i = 0; i < spec_.threads; ++i) {
    const uint64_t seed =
        (spec_.seed ^ (generation_ * 0x9E3779B97F4A7C15ull)) + i;
    writers_.emplace_back([this, seed] { RunWriter(seed); });
  }
}

void Workload::Stop() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  if (writers_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_relaxed);
  }
  cv_.notify_all();
  for (std::thread& t : writers_) t.join();
  writers_.clear();
}

absl::Status Workload::Pause() {
  Stop();
  paused_.store(true, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Workload::Resume() {
  Start();
  return absl::OkStatus();
}

void Workload::SetThrottle(int percent) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    throttle_.store(std::clamp(percent, 0, 100), std::memory_order_relaxed);
  }
  cv_.notify_all();
}

absl::StatusOr<std::string> Workload::DeviceState() {
  return absl::StrCat("livemig-workload-v1 spec=", WorkloadToString(spec_),
                      " pages_written=", pages_written(),
                      " throttle=", throttle(), " paused=", paused() ? 1 : 0);
}

void Workload::WritePage(uint64_t page, uint64_t value, uint64_t random) const {
  assert(page < total_pages_);
  const size_t index =
      static_cast<size_t>(std::upper_bound(region_first_page_.begin(),
                                           region_first_page_.end(), page) -
                          region_first_page_.begin() - 1);
  const auto& region = memory_.region(index);
  const uint64_t page_offset = (page - region_first_page_[index]) * kPageSize;
  const uint64_t page_len = std::min(kPageSize, region.len() - page_offset);
  absl::Status status;
  if (page_len >= sizeof(uint64_t)) {
    const uint64_t offset =
        page_offset +
        (random % (page_len / sizeof(uint64_t))) * sizeof(uint64_t);
    status = region.region().WriteObj<uint64_t>(value, offset);
  } else {  // A tail page shorter than one word.
    status = region.region().WriteObj<uint8_t>(static_cast<uint8_t>(value),
                                               page_offset);
  }
  assert(status.ok());
  (void)status;
}

void Workload::RunWriter(uint64_t seed) {
  using Clock = std::chrono::steady_clock;
  using Kind = WorkloadSpec::Kind;
  std::mt19937_64 rng(seed);
  // Uniform is a hot set of all pages (the constructor sets hot_pages_).
  std::uniform_int_distribution<uint64_t> hot_page(0, hot_pages_ - 1);
  const ZipfSampler zipf(total_pages_, spec_.zipf_s);
  const RankScatter scatter(total_pages_);
  const double pages_per_second =
      spec_.rate / static_cast<double>(kPageSize) / spec_.threads;

  // `due` is this writer's schedule: the deadline of the last page written
  // (or the start). The next page is due one period later, with the period
  // recomputed from the throttle every time.
  Clock::time_point due = Clock::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    const int throttle = throttle_.load(std::memory_order_relaxed);
    const double rate = pages_per_second * (100 - throttle) / 100.0;
    if (rate <= 0) {  // Throttled to a standstill: wait for a change.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_.load(std::memory_order_relaxed) ||
               throttle_.load(std::memory_order_relaxed) != throttle;
      });
      due = Clock::now();
      continue;
    }
    const auto period = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(1.0 / rate));
    const Clock::time_point now = Clock::now();
    if (now - due > kMaxBacklog) due = now - kMaxBacklog;
    const Clock::time_point next = due + period;
    if (next > now) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_until(lock, next, [&] {
        return stop_.load(std::memory_order_relaxed) ||
               throttle_.load(std::memory_order_relaxed) != throttle;
      });
      continue;  // Re-check stop and the throttle, then write if due.
    }

    uint64_t page = 0;
    switch (spec_.kind) {
      case Kind::kUniform:
      case Kind::kHotset:
        page = hot_page(rng);
        break;
      case Kind::kSequential:
        page = sequential_next_.fetch_add(1, std::memory_order_relaxed) %
               total_pages_;
        break;
      case Kind::kZipf:
        page = scatter(zipf.Sample(rng) - 1);
        break;
      case Kind::kIdle:
        return;
    }
    WritePage(page, rng(), rng());
    pages_written_.fetch_add(1, std::memory_order_relaxed);
    due = next;
  }
}

}  // namespace livemig::cli
