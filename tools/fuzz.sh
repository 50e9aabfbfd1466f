#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of migration/fuzz/ with clang-14.
#
#   tools/fuzz.sh build               build every *_fuzzer with libFuzzer
#   tools/fuzz.sh smoke               a short, fixed-work run of each target
#                                     (-runs, -seed=1): what tools/test.sh runs;
#                                     prints "fuzz <target>: ok|FAILED ..." per
#                                     target and exits non-zero on any crash
#   tools/fuzz.sh run TARGET [-flags] a long run of one target (libFuzzer flags
#                                     pass through, e.g. -runs=5000000); new
#                                     inputs go to $FUZZ_OUT/TARGET/corpus, a
#                                     crash to $FUZZ_OUT/TARGET/crash-*
#                                     (FUZZ_OUT: /tmp/livemig-fuzz-out)
#   tools/fuzz.sh record              re-record the seed corpora from real
#                                     migrations (record_seeds.cc; g++ build)
#   tools/fuzz.sh bin TARGET          print the path of TARGET's fuzz binary
#
# The clang build lives in its own output base (<default output base>-fuzz):
# Bazel re-runs its C++ toolchain autoconfiguration when CC changes, so
# building --config=fuzz in the g++ output base would throw the g++ cache
# away, and the other way round. --symlink_prefix=/ (in .bazelrc) keeps the
# fuzz build from re-pointing bazel-bin. Nothing is written to the source tree
# except by `record`; smoke runs keep new inputs in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(frame_decoder handshake receiver_stream)
# Work, not time, so a run is reproducible and CI's cost does not depend on
# the machine's speed: executions per target in `smoke`.
declare -A SMOKE_RUNS=([frame_decoder]=100000 [handshake]=30000 [receiver_stream]=1500)

fuzz_bazel() {
  local base
  base="$(bazel info output_base 2>/dev/null)-fuzz"
  bazel --output_base="$base" "$@"
}

build() {
  local labels=() target
  for target in "${TARGETS[@]}"; do labels+=("//migration/fuzz:${target}_fuzzer"); done
  # pipefail: the status is Bazel's; the filter only drops noise.
  fuzz_bazel build --config=fuzz "${labels[@]}" 2>&1 |
    { grep -v -E "linux-sandbox|Cannot export local symbol|^INFO: From |^\s*$" || true; } >&2
}

bin() {
  echo "$(fuzz_bazel info --config=fuzz bazel-bin 2>/dev/null)/migration/fuzz/$1_fuzzer"
}

case "${1:-}" in
  build) tools/install_deps.sh && build ;;
  bin) bin "$2" ;;
  smoke)
    tools/install_deps.sh
    build
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    rc=0
    for t in "${TARGETS[@]}"; do
      mkdir -p "$tmp/$t"
      exe="$(bin "$t")"
      seeds="$PWD/migration/fuzz/corpus/$t"
      start=$(date +%s%N)
      # First directory: where new inputs go (temporary); second: the seeds.
      if (cd "$tmp" && "$exe" -runs="${SMOKE_RUNS[$t]}" -seed=1 -timeout=25 \
            -artifact_prefix="$tmp/$t-" -print_final_stats=1 \
            "$tmp/$t" "$seeds") >"$tmp/$t.log" 2>&1; then
        ms=$(( ($(date +%s%N) - start) / 1000000 ))
        rate=$(( SMOKE_RUNS[$t] * 1000 / (ms > 0 ? ms : 1) ))
        cov=$(grep -E "^#[0-9]+.*(DONE|INITED)" "$tmp/$t.log" | tail -1 | grep -oE "cov: [0-9]+ ft: [0-9]+")
        printf 'fuzz %s: ok (%s runs in %d.%03d s, %s exec/s; %s)\n' "$t" \
          "${SMOKE_RUNS[$t]}" $((ms / 1000)) $((ms % 1000)) "$rate" "$cov"
      else
        echo "fuzz $t: FAILED (log below)"
        tail -60 "$tmp/$t.log"
        rc=1
      fi
    done
    exit $rc
    ;;
  run)
    t="$2"; shift 2
    build
    out="${FUZZ_OUT:-/tmp/livemig-fuzz-out}/$t"
    mkdir -p "$out/corpus"
    exec "$(bin "$t")" -artifact_prefix="$out/" -timeout=25 -print_final_stats=1 \
      "$@" "$out/corpus" "$PWD/migration/fuzz/corpus/$t"
    ;;
  record)
    bazel build //migration/fuzz:record_seeds
    rm -rf migration/fuzz/corpus/{frame_decoder,handshake,receiver_stream}/*
    "$(bazel info bazel-bin)/migration/fuzz/record_seeds" "$PWD/migration/fuzz/corpus"
    ;;
  *)
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
