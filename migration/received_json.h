// File: migration/received_json.h
//
// A received migration as one line of JSON, no spaces: what `livemig
// receive` writes as manifest.json and prints with --json, and what the C
// ABI's livemig_received_stats_json() returns. The receiving side's
// counterpart of MigrationStats::ToJson() (stats.h). Fields are only ever
// added:
//
//   {"status":"completed","verified":true,
//    "regions":[{"index":0,"guest_addr":0,"size":1073741824,
//                "file":"/var/lib/vm/guest.mem","file_offset":0,
//                "page_hash_root":"0123456789abcdef"},...],
//    "stats":{"raw_pages":N,"zero_pages":N,"torn_pages":N,"bytes_received":N,
//             "rounds":N,"channels":N,"device_state_bytes":N,
//             "compression":"none","compressed_batches":N,"decompress_ms":X}}
//
// Regions are in region-table order; "file" is the rebuilt file's path,
// JSON-escaped ("" for memory that is not a file the receiver made);
// "page_hash_root" is the root of the page hashes that landed, 16 lower-case
// hex digits; "verified" false means the source sent no digests. The fields
// of "stats" are ReceivedMigration's (receiver.h), milliseconds with three
// decimals; how the receiver's own memory was made (prealloc_ms, its bytes,
// pages_written_to_files) is not a property of what was received and is not
// here (the C ABI's livemig_received_get_stats and `receive --json`'s
// "prealloc" object have it).
//
// Thread safety: a pure function.
#ifndef LIVEMIG_MIGRATION_RECEIVED_JSON_H_
#define LIVEMIG_MIGRATION_RECEIVED_JSON_H_

#include <string>

#include "migration/receiver.h"

namespace livemig {

std::string ReceivedJson(const ReceivedMigration& got);

}  // namespace livemig

#endif  // LIVEMIG_MIGRATION_RECEIVED_JSON_H_
