#include "tools/cli/units.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace livemig::cli {
namespace {

constexpr std::string_view kSizeExpected =
    "expected a number with an optional suffix K, M, G, T, KiB, MiB, GiB, TiB "
    "(binary), or 0x-prefixed hex";
constexpr std::string_view kRateExpected =
    "expected a number of bytes per second with an optional unit B/s, KB/s, "
    "MB/s, GB/s, TB/s (decimal) or KiB/s, MiB/s, GiB/s, TiB/s (binary)";

// More fractional digits than this cannot be held exactly in a uint64_t
// (and no sane size needs them).
constexpr size_t kMaxFractionDigits = 18;

// Debian's Abseil is built with its own string_view (not std's alias).
absl::string_view Sv(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

absl::Status BadSize(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid size \"", Sv(text), "\": ", Sv(why)));
}

absl::Status BadRate(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid rate \"", Sv(text), "\": ", Sv(why)));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The power of 1024 a size suffix letter stands for, or -1.
int BinaryExponent(char c) {
  switch (c) {
    case 'k':
    case 'K':
      return 1;
    case 'm':
    case 'M':
      return 2;
    case 'g':
    case 'G':
      return 3;
    case 't':
    case 'T':
      return 4;
    default:
      return -1;
  }
}

absl::StatusOr<uint64_t> ParseHexSize(std::string_view text) {
  const std::string_view digits = text.substr(2);
  if (digits.empty()) return BadSize(text, kSizeExpected);
  uint64_t value = 0;
  for (char c : digits) {
    const int d = HexValue(c);
    if (d < 0) return BadSize(text, kSizeExpected);
    if (value > (std::numeric_limits<uint64_t>::max() >> 4)) {
      return BadSize(text, "more than 2^64 - 1 bytes");
    }
    value = (value << 4) | static_cast<uint64_t>(d);
  }
  return value;
}

// Formats `value` in the largest of `units` (each `base` times the one
// before) that keeps it >= 1, with 0 decimals for the first unit, 1 for the
// next two and 2 for the rest. A value that would round up to `base` moves to
// the next unit ("1.0 MiB", not "1024.0 KiB").
std::string FormatScaled(double value, double base,
                         const std::string_view* units, int num_units) {
  if (std::isnan(value)) return absl::StrCat("nan ", Sv(units[0]));
  const bool negative = value < 0;
  double a = std::fabs(value);
  int u = 0;
  while (u + 1 < num_units && a >= base) {
    a /= base;
    ++u;
  }
  int decimals = u == 0 ? 0 : (u <= 2 ? 1 : 2);
  while (u + 1 < num_units && std::isfinite(a)) {
    const double scale = std::pow(10.0, decimals);
    if (std::round(a * scale) / scale < base) break;
    a /= base;
    ++u;
    decimals = u <= 2 ? 1 : 2;
  }
  return absl::StrFormat("%s%.*f %s", negative ? "-" : "", decimals, a,
                         Sv(units[u]));
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(std::string_view text) {
  if (text.size() >= 2 && text[0] == '0' &&
      (text[1] == 'x' || text[1] == 'X')) {
    return ParseHexSize(text);
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  size_t i = 0;
  uint64_t whole = 0;
  bool overflow = false;
  const size_t whole_begin = i;
  for (; i < text.size() && IsDigit(text[i]); ++i) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (whole > (kMax - d) / 10) overflow = true;
    whole = whole * 10 + d;
  }
  const size_t whole_digits = i - whole_begin;
  std::string_view fraction;
  if (i < text.size() && text[i] == '.') {
    const size_t begin = ++i;
    while (i < text.size() && IsDigit(text[i])) ++i;
    fraction = text.substr(begin, i - begin);
  }
  if (whole_digits == 0 && fraction.empty())
    return BadSize(text, kSizeExpected);

  // The suffix: "", "B", or a K/M/G/T letter followed by "", "B" or "iB".
  const std::string_view suffix = text.substr(i);
  int exponent = 0;
  if (!suffix.empty() && suffix != "B") {
    exponent = BinaryExponent(suffix[0]);
    const std::string_view rest = suffix.substr(1);
    if (exponent < 0 || !(rest.empty() || rest == "B" || rest == "iB")) {
      return BadSize(text, kSizeExpected);
    }
  }
  if (overflow) return BadSize(text, "more than 2^64 - 1 bytes");

  // Exact arithmetic: bytes = whole * mult + fraction * mult / 10^n, which
  // must come out whole.
  const unsigned __int128 mult = static_cast<unsigned __int128>(1)
                                 << (10 * exponent);
  while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
  if (fraction.size() > kMaxFractionDigits) {
    return BadSize(text, "not a whole number of bytes");
  }
  uint64_t frac = 0;
  uint64_t pow10 = 1;
  for (char c : fraction) {
    frac = frac * 10 + static_cast<uint64_t>(c - '0');
    pow10 *= 10;
  }
  const unsigned __int128 frac_bytes = frac * mult;
  if (frac_bytes % pow10 != 0) {
    return BadSize(text, "not a whole number of bytes");
  }
  const unsigned __int128 total = whole * mult + frac_bytes / pow10;
  if (total > kMax) return BadSize(text, "more than 2^64 - 1 bytes");
  return static_cast<uint64_t>(total);
}

absl::StatusOr<double> ParseRate(std::string_view text) {
  // The number: digits [. digits] [e [+-] digits], at least one mantissa
  // digit. Validated here because SimpleAtod also takes "inf", "nan", hex.
  size_t i = 0;
  size_t mantissa_digits = 0;
  for (; i < text.size() && IsDigit(text[i]); ++i) ++mantissa_digits;
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && IsDigit(text[i]); ++i) ++mantissa_digits;
  }
  if (mantissa_digits == 0) return BadRate(text, kRateExpected);
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    size_t j = i + 1;
    if (j < text.size() && (text[j] == '+' || text[j] == '-')) ++j;
    const size_t digits_begin = j;
    while (j < text.size() && IsDigit(text[j])) ++j;
    if (j == digits_begin) return BadRate(text, kRateExpected);
    i = j;
  }
  double number = 0;
  if (!absl::SimpleAtod(Sv(text.substr(0, i)), &number)) {
    return BadRate(text, kRateExpected);
  }

  // The unit: "", "/s", "B/s", or a prefix [kKMGT] with an optional "i"
  // (binary) and then "B/s".
  std::string_view unit = text.substr(i);
  double mult = 1;
  if (!unit.empty() && unit != "/s") {
    const int exponent = unit[0] == 'k' ? 1 : BinaryExponent(unit[0]);
    if (exponent > 0 &&
        (unit[0] == 'k' || (unit[0] >= 'A' && unit[0] <= 'Z'))) {
      unit.remove_prefix(1);
      if (!unit.empty() && unit[0] == 'i') {
        unit.remove_prefix(1);
        mult = std::ldexp(1.0, 10 * exponent);
      } else {
        mult = std::pow(1000.0, exponent);
      }
    }
    if (unit == "B") {
      return BadRate(
          text, absl::StrCat("expected a unit per second, such as \"", Sv(text),
                             "/s\""));
    }
    if (unit != "B/s") return BadRate(text, kRateExpected);
  }
  const double rate = number * mult;
  if (!std::isfinite(rate)) return BadRate(text, "too large");
  return rate;
}

std::string FormatBytes(double bytes) {
  static constexpr std::string_view kUnits[] = {"B",   "KiB", "MiB", "GiB",
                                                "TiB", "PiB", "EiB"};
  return FormatScaled(bytes, 1024.0, kUnits, std::size(kUnits));
}

std::string FormatRate(double bytes_per_second) {
  static constexpr std::string_view kUnits[] = {"B/s",  "KB/s", "MB/s", "GB/s",
                                                "TB/s", "PB/s", "EB/s"};
  return FormatScaled(bytes_per_second, 1000.0, kUnits, std::size(kUnits));
}

}  // namespace livemig::cli
