// File: migration/capi/testing/json_reader.h
//
// A small strict JSON reader for tests of what the C ABI writes
// (livemig_sender_stats_json): objects, arrays, strings (JSON's escapes;
// \uXXXX below 0x80 as that byte, any other as '?'), numbers (doubles, as
// strtod reads them from a '-' or a digit), true, false, null, with nothing
// but white space around the value. Not
// protobuf's JsonStringToMessage: the system libprotobuf's inline Map code
// crashes when compiled with -fsanitize=thread. Test-only: recursive, for
// small trusted documents.
//
// Thread safety: plain values and free functions.
#ifndef LIVEMIG_MIGRATION_CAPI_TESTING_JSON_READER_H_
#define LIVEMIG_MIGRATION_CAPI_TESTING_JSON_READER_H_

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace livemig::capi_testing {

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // In document order.

  // An object's member `key`; a null value and a test failure when absent.
  const Json& operator[](const std::string& key) const {
    for (const auto& [name, value] : object) {
      if (name == key) return value;
    }
    ADD_FAILURE() << "no member \"" << key << "\"";
    static const Json kMissing;
    return kMissing;
  }
};

namespace json_internal {

class Reader {
 public:
  explicit Reader(std::string_view text) : text_(text) {}

  std::optional<Json> Document(std::string* error) {
    std::optional<Json> value = Value();
    Space();
    if (value.has_value() && at_ != text_.size()) value = Fail("text after the value");
    if (!value.has_value() && error != nullptr) *error = error_;
    return value;
  }

 private:
  std::optional<Json> Value() {
    Space();
    if (at_ == text_.size()) return Fail("end of text where a value belongs");
    Json v;
    const char c = text_[at_];
    if (c == '{') return Object();
    if (c == '[') return Array();
    if (c == '"') {
      v.kind = Json::Kind::kString;
      if (!String(&v.string)) return std::nullopt;
      return v;
    }
    using Word = std::tuple<std::string_view, Json::Kind, bool>;
    for (const auto& [word, kind, truth] : {Word{"true", Json::Kind::kBool, true},
                                            Word{"false", Json::Kind::kBool, false},
                                            Word{"null", Json::Kind::kNull, false}}) {
      if (text_.substr(at_).starts_with(word)) {
        at_ += word.size();
        v.kind = kind;
        v.boolean = truth;
        return v;
      }
    }
    const std::string rest(text_.substr(at_, 64));
    char* end = nullptr;
    v.number = std::strtod(rest.c_str(), &end);
    if (end == rest.c_str() || !(c == '-' || (c >= '0' && c <= '9'))) return Fail("no value");
    at_ += static_cast<size_t>(end - rest.c_str());
    v.kind = Json::Kind::kNumber;
    return v;
  }

  std::optional<Json> Object() {
    Json v;
    v.kind = Json::Kind::kObject;
    ++at_;  // '{'
    Space();
    if (Take('}')) return v;
    do {
      Space();
      std::string key;
      if (!String(&key)) return std::nullopt;
      Space();
      if (!Take(':')) return Fail("no ':' after a key");
      std::optional<Json> member = Value();
      if (!member.has_value()) return std::nullopt;
      v.object.emplace_back(std::move(key), std::move(*member));
      Space();
    } while (Take(','));
    if (!Take('}')) return Fail("no ',' or '}' in an object");
    return v;
  }

  std::optional<Json> Array() {
    Json v;
    v.kind = Json::Kind::kArray;
    ++at_;  // '['
    Space();
    if (Take(']')) return v;
    do {
      std::optional<Json> element = Value();
      if (!element.has_value()) return std::nullopt;
      v.array.push_back(std::move(*element));
      Space();
    } while (Take(','));
    if (!Take(']')) return Fail("no ',' or ']' in an array");
    return v;
  }

  bool String(std::string* out) {
    if (!Take('"')) return Bad("no string where one belongs");
    while (at_ < text_.size() && text_[at_] != '"') {
      char c = text_[at_++];
      if (static_cast<unsigned char>(c) < 0x20) return Bad("control byte in a string");
      if (c == '\\') {
        if (at_ == text_.size()) break;
        const char e = text_[at_++];
        const std::string_view simple = "\"\\/bfnrt";
        const std::string_view meant = "\"\\/\b\f\n\r\t";
        if (const size_t i = simple.find(e); i != npos) {
          c = meant[i];
        } else if (e == 'u' && at_ + 4 <= text_.size()) {
          const long code = std::strtol(std::string(text_.substr(at_, 4)).c_str(), nullptr, 16);
          at_ += 4;
          c = code < 0x80 ? static_cast<char>(code) : '?';
        } else {
          return Bad("bad escape in a string");
        }
      }
      out->push_back(c);
    }
    if (!Take('"')) return Bad("unterminated string");
    return true;
  }

  void Space() {
    while (at_ < text_.size() && std::string_view(" \t\r\n").find(text_[at_]) != npos) ++at_;
  }
  bool Take(char c) {
    if (at_ >= text_.size() || text_[at_] != c) return false;
    ++at_;
    return true;
  }
  // Records the first error; for the returns of Value() and String().
  std::nullopt_t Fail(const char* what) {
    if (error_.empty()) error_ = std::string(what) + " at byte " + std::to_string(at_);
    return std::nullopt;
  }
  bool Bad(const char* what) {
    Fail(what);
    return false;
  }

  static constexpr size_t npos = std::string_view::npos;

  const std::string_view text_;
  size_t at_ = 0;
  std::string error_;
};

}  // namespace json_internal

// Parses all of `text`; std::nullopt, and why in *error (may be null), for
// anything that is not one JSON value.
inline std::optional<Json> ParseJson(std::string_view text, std::string* error) {
  return json_internal::Reader(text).Document(error);
}

}  // namespace livemig::capi_testing

#endif  // LIVEMIG_MIGRATION_CAPI_TESTING_JSON_READER_H_
