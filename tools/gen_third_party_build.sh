#!/usr/bin/env bash
# Prints the Abseil part of third_party/BUILD.bazel from pkg-config, for when
# Debian's Abseil changes its library list. Compare with the checked-in file.
set -euo pipefail
for p in absl_status absl_statusor absl_strings absl_str_format \
         absl_synchronization absl_time absl_flags absl_flags_parse \
         absl_random_random absl_hash absl_flat_hash_map absl_cleanup; do
  echo "cc_library("
  echo "    name = \"$p\","
  echo "    linkopts = ["
  for lib in $(pkg-config --libs "$p"); do echo "        \"$lib\","; done
  echo "    ],"
  echo ")"
  echo
done
