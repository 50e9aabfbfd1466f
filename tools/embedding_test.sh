#!/usr/bin/env bash
# The embedding check: builds tests/embedding, a VMM's own Bazel workspace
# that uses this repository as the external repository @livemig (through its
# public targets only), runs its tiny_vmm, which migrates a running guest
# in-process and checks every byte, and checks that a dependency on an internal
# livemig target is refused. Works from a fresh clone, offline; the
# workspace gets its own Bazel output base (Bazel derives it from the
# workspace's path), so the first run builds livemig once more, cold.
# Prints, alone on its last line, "1 passed, 0 failed" or "0 passed, 1 failed".
# Usage: tools/embedding_test.sh [extra bazel build flags]
set -uo pipefail
cd "$(dirname "$0")/.."

result() {
  if [[ $1 -eq 0 ]]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
  exit "$1"
}

tools/install_deps.sh || { echo "apt-get failed"; result 1; }

cd tests/embedding || result 1
# No bazel-* links: they would point back into the tree that holds this
# workspace (the execroot links @livemig, which is "../..").
bazel build --symlink_prefix=/ "$@" //:tiny_vmm 2>&1 \
  | grep -v -E "linux-sandbox|^INFO: From |^\s*$"
build_rc=${PIPESTATUS[0]}
rc=$build_rc
if [[ $build_rc -eq 0 ]]; then
  bin="$(bazel info --symlink_prefix=/ "$@" bazel-bin 2>/dev/null)/tiny_vmm"
  timeout 300 "$bin"
  rc=$?
  [[ $rc -ne 0 ]] && echo "tiny_vmm exited with $rc"
else
  echo "building the embedding workspace failed ($build_rc)"
fi
if [[ $rc -eq 0 ]]; then
  # The other half of the public surface: an internal target must be refused.
  # (Captured first: under pipefail, bazel's expected failure would fail the
  # pipeline even when grep finds the refusal.)
  probe="$(bazel build --symlink_prefix=/ --nobuild "$@" //:internal_dep_probe 2>&1)"
  if grep -q "is not visible from target '//:internal_dep_probe'" <<<"$probe"; then
    echo "internal_dep_probe: refused, as an internal target must be"
  else
    echo "internal_dep_probe: not refused for visibility; bazel said:"
    tail -5 <<<"$probe"
    rc=1
  fi
fi
# This workspace's server is of no use once the check is done.
bazel shutdown 2>/dev/null
result "$rc"
