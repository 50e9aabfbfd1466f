// File: tools/cli/units.h
//
// Sizes and rates as people type them on the `livemig` command line, and as
// the CLI prints them back.
//
//   ParseSize("2G")        -> 2147483648       (sizes are always binary)
//   ParseSize("0x40000000")-> 1073741824
//   ParseRate("200MB/s")   -> 2e8              (MB/s is decimal, MiB/s binary)
//   FormatBytes(1 << 30)   -> "1.00 GiB"
//   FormatRate(1.23e9)     -> "1.23 GB/s"
//
// Size grammar: a decimal number (a fraction is allowed if the result is a
// whole number of bytes: "1.5G", "0.5K"), optionally followed by B, or by
// K, M, G or T (either case) and then nothing, "B" or "iB"; every one of these
// is binary (K = 1024), because memory sizes are. Or 0x-prefixed hex, with no
// suffix. No sign, no whitespace, no exponent.
//
// Rate grammar: a non-negative decimal number (fraction and exponent allowed:
// "1.5", "2e9") followed by nothing (bytes per second) or by a per-second unit:
// B/s; KB/s, MB/s, GB/s, TB/s (decimal, K may be lower-case); KiB/s, MiB/s,
// GiB/s, TiB/s (binary). "B" must be upper-case (lower-case b means bits).
// A unit without "/s" ("200MB") is refused rather than guessed.
//
// Errors: InvalidArgument whose message quotes the input and says what was
// expected (or why a well-formed input does not fit: overflow, not a whole
// number of bytes).
//
// Thread safety: pure functions.
#ifndef LIVEMIG_TOOLS_CLI_UNITS_H_
#define LIVEMIG_TOOLS_CLI_UNITS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace livemig::cli {

// A size in bytes, as described above. Overflowing 2^64 - 1 is
// InvalidArgument.
[[nodiscard]] absl::StatusOr<uint64_t> ParseSize(std::string_view text);

// A rate in bytes per second, as described above. The result is finite and
// >= 0.
[[nodiscard]] absl::StatusOr<double> ParseRate(std::string_view text);

// Binary units, three significant figures or so: "12 B", "4.0 KiB",
// "512.0 MiB", "1.00 GiB" (B: no decimals; KiB, MiB: one; GiB and up: two).
std::string FormatBytes(double bytes);

// Decimal units, same precision rule: "100 B/s", "500.0 KB/s", "200.0 MB/s",
// "1.23 GB/s".
std::string FormatRate(double bytes_per_second);

}  // namespace livemig::cli

#endif  // LIVEMIG_TOOLS_CLI_UNITS_H_
