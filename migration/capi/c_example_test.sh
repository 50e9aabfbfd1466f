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
# Every function livemig.h, livemig_abi4.h and livemig_abi5.h declare is
# exported (at its version: livemig_abi5.h's at LIVEMIG_5, livemig_abi4.h's
# at LIVEMIG_4; of livemig.h's, the ones listed here under LIVEMIG_2 and
# LIVEMIG_3, the others at LIVEMIG_1), and nothing else is.
dynsyms="$(readelf --dyn-syms -W "$capi/liblivemig.so" | awk '$7 != "UND" && $8 ~ /^livemig_/ {print $8}' | sort)"
declared_in() {
  grep -o '^LIVEMIG_EXPORT [^(]*(' "$capi/include/$1" | sed -e 's/($//' -e 's/.*[ *]//' | sort
}
abi4="$(declared_in livemig_abi4.h)"
abi5="$(declared_in livemig_abi5.h)"
declared="$( (declared_in livemig.h; echo "$abi4"; echo "$abi5") | sort)"
abi2="livemig_options_set_fds livemig_options_set_region_memory livemig_memory_add_file_region
livemig_received_num_device_sections livemig_received_device_section_at
livemig_received_find_device_section"
abi3="livemig_options_set_compression livemig_options_set_accept_compression
livemig_options_set_prealloc livemig_options_set_progress livemig_options_set_round_callback
livemig_sender_compression_stats livemig_received_get_stats"
expected="$(for f in $declared; do
  if grep -qw "$f" <<<"$abi2"; then echo "$f@@LIVEMIG_2"
  elif grep -qw "$f" <<<"$abi3"; then echo "$f@@LIVEMIG_3"
  elif grep -qw "$f" <<<"$abi4"; then echo "$f@@LIVEMIG_4"
  elif grep -qw "$f" <<<"$abi5"; then echo "$f@@LIVEMIG_5"
  else echo "$f@@LIVEMIG_1"; fi
done | sort)"
if [[ "$dynsyms" != "$expected" ]]; then
  echo "liblivemig.so's livemig_* symbols differ from livemig.h's functions:"
  diff <(echo "$expected") <(echo "$dynsyms") || true
  exit 1
fi
echo "liblivemig.so exports the $(wc -l <<<"$declared") functions livemig.h, livemig_abi4.h and livemig_abi5.h declare"
[[ "$(wc -l <<<"$declared")" -ge 47 ]]  # The grep found them.
[[ "$(wc -l <<<"$abi4")" -ge 7 ]]
[[ "$(wc -l <<<"$abi5")" -ge 1 ]]

# The headers are C99 and C++ both, livemig_abi4.h and livemig_abi5.h also
# included alone.
for h in livemig.h livemig_abi4.h livemig_abi5.h; do
  gcc -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c "$capi/include/$h"
  g++ -std=c++17 -Wall -Wextra -Werror -fsyntax-only -x c++ "$capi/include/$h"
done

# shellcheck disable=SC2086  # $flags is a list of words.
gcc -std=c99 -Wall -Wextra -Werror -pedantic "${sanitize[@]}" \
  "$capi/example.c" $flags -lpthread -o "$work/example"

"$work/example" "$livemig" "$work"
