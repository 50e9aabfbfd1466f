// File: migration/json_escape.h
//
// The inside of a JSON string literal, for the one-line JSON objects
// livemig writes: the received migration (received_json.h), and what the
// `livemig` CLI prints with --json:
//
//   JsonEscape("a\"b\\c\n") -> a\"b\\c\u000a
//
// '"' and '\' get a backslash, bytes below 0x20 become \u00XX, every other
// byte (0x7f and above too) is copied as is: the input is not checked to be
// UTF-8.
//
// Thread safety: a pure function.
#ifndef LIVEMIG_MIGRATION_JSON_ESCAPE_H_
#define LIVEMIG_MIGRATION_JSON_ESCAPE_H_

#include <string>

namespace livemig {

std::string JsonEscape(const std::string& s);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_JSON_ESCAPE_H_
