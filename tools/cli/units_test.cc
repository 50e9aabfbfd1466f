#include "tools/cli/units.h"

#include <cstdint>

#include "core/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace livemig::cli {
namespace {

using ::livemig::testing::StatusIs;
using ::livemig::testing::StatusIsWithMessage;

constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kTiB = uint64_t{1} << 40;

TEST(ParseSize, AcceptsPlainDecimalBytes) {
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("0").value(), 0u);
  EXPECT_EQ(ParseSize("4096B").value(), 4096u);
  EXPECT_EQ(ParseSize("18446744073709551615").value(), UINT64_MAX);
}

TEST(ParseSize, AcceptsHex) {
  EXPECT_EQ(ParseSize("0x40000000").value(), kGiB);
  EXPECT_EQ(ParseSize("0XfF").value(), 255u);
  EXPECT_EQ(ParseSize("0xffffffffffffffff").value(), UINT64_MAX);
}

TEST(ParseSize, SuffixesAreBinaryInEveryForm) {
  EXPECT_EQ(ParseSize("512K").value(), 512 * kKiB);
  EXPECT_EQ(ParseSize("512KB").value(), 512 * kKiB);
  EXPECT_EQ(ParseSize("512k").value(), 512 * kKiB);
  EXPECT_EQ(ParseSize("1M").value(), kMiB);
  EXPECT_EQ(ParseSize("2G").value(), 2 * kGiB);
  EXPECT_EQ(ParseSize("1T").value(), kTiB);
  EXPECT_EQ(ParseSize("1KiB").value(), kKiB);
  EXPECT_EQ(ParseSize("1MiB").value(), kMiB);
  EXPECT_EQ(ParseSize("1GiB").value(), kGiB);
  EXPECT_EQ(ParseSize("1TiB").value(), kTiB);
  EXPECT_EQ(ParseSize("64MB").value(), 64 * kMiB);
}

TEST(ParseSize, AcceptsFractionsThatComeOutWhole) {
  EXPECT_EQ(ParseSize("1.5G").value(), 3 * kGiB / 2);
  EXPECT_EQ(ParseSize("0.5K").value(), 512u);
  EXPECT_EQ(ParseSize(".25M").value(), kMiB / 4);
  EXPECT_EQ(ParseSize("2.000").value(), 2u);
}

TEST(ParseSize, RefusesFractionsOfAByte) {
  EXPECT_THAT(ParseSize("1.3K"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "not a whole number of bytes"));
  EXPECT_THAT(ParseSize("1.5"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseSize, UnknownSuffixSaysWhatWasExpectedAndQuotesTheInput) {
  EXPECT_THAT(
      ParseSize("12XB"),
      StatusIsWithMessage(
          absl::StatusCode::kInvalidArgument,
          "invalid size \"12XB\": expected a number with an optional suffix "
          "K, M, G, T, KiB, MiB, GiB, TiB (binary), or 0x-prefixed hex"));
}

TEST(ParseSize, RefusesEmptyNegativeAndGarbage) {
  for (const char* bad :
       {"", "-1", "+1", "G", "1 G", " 1", "1G ", "1GiBs", "1Gi", "0x", "0x1G",
        "0xZZ", "1e3", "abc", ".", "1.2.3", "1KIB", "1Kb"}) {
    EXPECT_THAT(ParseSize(bad), StatusIs(absl::StatusCode::kInvalidArgument))
        << "input \"" << bad << "\"";
  }
}

TEST(ParseSize, OverflowIsInvalidArgument) {
  EXPECT_THAT(ParseSize("99999999999T"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "more than 2^64 - 1 bytes"));
  EXPECT_THAT(ParseSize("18446744073709551616"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSize("0x10000000000000000"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseSize("16777216T"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ParseSize("16777215T").value(), 16777215 * kTiB);
}

TEST(ParseRate, DecimalUnitsArePowersOfTen) {
  EXPECT_DOUBLE_EQ(ParseRate("200MB/s").value(), 200e6);
  EXPECT_DOUBLE_EQ(ParseRate("1GB/s").value(), 1e9);
  EXPECT_DOUBLE_EQ(ParseRate("500KB/s").value(), 500e3);
  EXPECT_DOUBLE_EQ(ParseRate("500kB/s").value(), 500e3);
  EXPECT_DOUBLE_EQ(ParseRate("2TB/s").value(), 2e12);
  EXPECT_DOUBLE_EQ(ParseRate("100B/s").value(), 100);
  EXPECT_DOUBLE_EQ(ParseRate("1.5GB/s").value(), 1.5e9);
}

TEST(ParseRate, BinaryUnitsArePowersOfTwo) {
  EXPECT_DOUBLE_EQ(ParseRate("64MiB/s").value(), 64.0 * kMiB);
  EXPECT_DOUBLE_EQ(ParseRate("1GiB/s").value(), static_cast<double>(kGiB));
  EXPECT_DOUBLE_EQ(ParseRate("10KiB/s").value(), 10.0 * kKiB);
  EXPECT_DOUBLE_EQ(ParseRate("1TiB/s").value(), static_cast<double>(kTiB));
}

TEST(ParseRate, BareNumberIsBytesPerSecond) {
  EXPECT_DOUBLE_EQ(ParseRate("1000").value(), 1000);
  EXPECT_DOUBLE_EQ(ParseRate("1000/s").value(), 1000);
  EXPECT_DOUBLE_EQ(ParseRate("2.5e6").value(), 2.5e6);
  EXPECT_DOUBLE_EQ(ParseRate("0").value(), 0);
}

TEST(ParseRate, UnitWithoutPerSecondIsRefused) {
  EXPECT_THAT(ParseRate("200MB"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "expected a unit per second, such as "
                                  "\"200MB/s\""));
  EXPECT_THAT(ParseRate("1GiB"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseRate("100B"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ParseRate, RefusesGarbageAndQuotesTheInput) {
  EXPECT_THAT(ParseRate("fast"),
              StatusIsWithMessage(absl::StatusCode::kInvalidArgument,
                                  "invalid rate \"fast\": expected a number"));
  for (const char* bad :
       {"", "-1MB/s", "MB/s", "1Mb/s", "1mB/s", "1XB/s", "inf", "nan", "1e",
        "0x10", "1 MB/s", "1MB/s ", "1MB/sec", "1M/s", "1e999"}) {
    EXPECT_THAT(ParseRate(bad), StatusIs(absl::StatusCode::kInvalidArgument))
        << "input \"" << bad << "\"";
  }
}

TEST(FormatBytes, PicksTheLargestBinaryUnit) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(12), "12 B");
  EXPECT_EQ(FormatBytes(4096), "4.0 KiB");
  EXPECT_EQ(FormatBytes(512.0 * kMiB), "512.0 MiB");
  EXPECT_EQ(FormatBytes(static_cast<double>(kGiB)), "1.00 GiB");
  EXPECT_EQ(FormatBytes(1.5 * kTiB), "1.50 TiB");
  EXPECT_EQ(FormatBytes(-2048), "-2.0 KiB");
}

TEST(FormatBytes, RoundingUpMovesToTheNextUnit) {
  EXPECT_EQ(FormatBytes(1023.7), "1.0 KiB");
  EXPECT_EQ(FormatBytes(kMiB - 1), "1.0 MiB");
  EXPECT_EQ(FormatBytes(1023.99 * kMiB), "1.00 GiB");
}

TEST(FormatRate, PicksTheLargestDecimalUnit) {
  EXPECT_EQ(FormatRate(100), "100 B/s");
  EXPECT_EQ(FormatRate(500e3), "500.0 KB/s");
  EXPECT_EQ(FormatRate(200e6), "200.0 MB/s");
  EXPECT_EQ(FormatRate(1.23e9), "1.23 GB/s");
  EXPECT_EQ(FormatRate(999.96e6), "1.00 GB/s");
  EXPECT_EQ(FormatRate(3e12), "3.00 TB/s");
}

}  // namespace
}  // namespace livemig::cli
