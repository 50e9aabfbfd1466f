#!/usr/bin/env bash
# Builds example.c with the system's plain gcc against the built liblivemig.so
# (through livemig.pc, as a C user would), checks what the library exports,
# and runs the example against //tools:livemig.
#
# Under --config=asan/tsan the library carries a sanitizer runtime (it is
# NEEDED by liblivemig.so); a plain executable must then load that runtime
# first, so the example is compiled with the same -fsanitize flags.
set -euo pipefail

runfiles="${TEST_SRCDIR:?}/${TEST_WORKSPACE:?}"
capi="$runfiles/migration/capi"
livemig="$runfiles/tools/livemig"
# Unix socket paths are short (107 bytes): not under the long TEST_TMPDIR.
work="$(mktemp -d /tmp/livemig-capi.XXXXXX)"
trap 'rm -rf "$work"' EXIT

export PKG_CONFIG_PATH="$capi"
flags="$(pkg-config --cflags --libs livemig)"
echo "pkg-config --cflags --libs livemig: $flags"

needed="$(readelf -d "$capi/liblivemig.so" | grep NEEDED || true)"
sanitize=()
if grep -q libasan <<<"$needed"; then sanitize=(-fsanitize=address,undefined); fi
if grep -q libtsan <<<"$needed"; then sanitize=(-fsanitize=thread); fi
echo "sanitizer flags for the C program: ${sanitize[*]:-none}"

# Only the C ABI is exported: every defined global dynamic symbol is livemig_*
# (weak template instantiations the linker keeps beside libstdc++'s are not
# part of the ABI and are listed, not counted).
strays="$(readelf --dyn-syms -W "$capi/liblivemig.so" |
  awk '$7 != "UND" && $5 == "GLOBAL" && $8 !~ /^livemig_/ && $8 !~ /^LIVEMIG_/ {print $8}')"
if [[ -n "$strays" ]]; then
  echo "liblivemig.so exports non-livemig symbols:"; echo "$strays"; exit 1
fi
exported="$(readelf --dyn-syms -W "$capi/liblivemig.so" | awk '$7 != "UND" && $8 ~ /^livemig_/' | wc -l)"
echo "liblivemig.so exports $exported livemig_* functions"
[[ "$exported" -ge 30 ]]

# The header is C99 and C++ both.
gcc -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c "$capi/include/livemig.h"
g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ "$capi/include/livemig.h"

# shellcheck disable=SC2086  # $flags is a list of words.
gcc -std=c99 -Wall -Wextra -Werror -pedantic "${sanitize[@]}" \
  "$capi/example.c" $flags -lpthread -o "$work/example"

"$work/example" "$livemig" "$work"
