#!/usr/bin/env bash
# Convergence benchmark (issue 5): builds livemig (-c opt), runs the engine's
# throughput benchmark (//migration:bench --gib=1), then tools/bench/harness.py
# (real two-process migrations, each set beside the pre-copy models), and for a
# standard run copies results.md and the plots to docs/BENCHMARKS.md, docs/bench/.
#
#   tools/bench.sh [--quick] [--memory=SIZE] [--out=DIR] [--only=TEXT]
#                  [--no-throughput] [--no-docs] [other harness flags]
#   tools/bench.sh --kvm    # a KVM guest per dirty source -> docs/BENCHMARKS-kvm.md
set -euo pipefail
cd "$(dirname "$0")/.."

out="/tmp/livemig-bench-$(date +%Y%m%d-%H%M%S)"
docs=1 throughput=1 quick=0 gib=1 kvm=0
harness_args=()
for arg in "$@"; do
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
    --no-docs) docs=0 ;;
    --no-throughput) throughput=0 ;;
    --quick) quick=1; docs=0; gib=0.25; harness_args+=("$arg") ;;
    --kvm) kvm=1; throughput=0; harness_args+=("$arg") ;;
    --only=*|--memory=*) docs=0; harness_args+=("$arg") ;;
    -h|--help) sed -n 2,9p "$0"; python3 tools/bench/harness.py --help; exit 0 ;;
    *) harness_args+=("$arg") ;;
  esac
done
mkdir -p "$out"

if ! command -v bazel >/dev/null || ! command -v python3 >/dev/null; then
  tools/install_deps.sh
fi
echo "== building (bazel build -c opt //tools:livemig //migration:bench)"
bazel build -c opt //tools:livemig //migration:bench 2>&1 | grep -E "^(ERROR|INFO: Build)" || true
BIN="$(bazel info -c opt bazel-bin 2>/dev/null)/tools/livemig"
[[ -x "$BIN" ]] || { echo "build failed"; exit 1; }

tp_args=()
if (( throughput )); then
  echo "== throughput: bazel run -c opt //migration:bench -- --gib=$gib"
  bazel run -c opt //migration:bench -- --gib="$gib" 2>/dev/null | tee "$out/throughput.txt"
  tp_args=(--throughput="$out/throughput.txt")
fi

echo "== convergence table"
status=0
python3 tools/bench/harness.py --bin="$BIN" --out="$out" "${tp_args[@]}" \
  "${harness_args[@]}" || status=$?

if (( docs && kvm )); then
  # Its own plots folder: the standard table's plots keep their names.
  rm -rf docs/bench-kvm && mkdir -p docs/bench-kvm
  cp "$out"/bench/*.svg docs/bench-kvm/
  sed 's#](bench/#](bench-kvm/#g' "$out/results.md" > docs/BENCHMARKS-kvm.md
  echo "== updated docs/BENCHMARKS-kvm.md and docs/bench-kvm/"
elif (( docs )); then
  mkdir -p docs/bench
  rm -f docs/bench/*.svg
  cp "$out"/bench/*.svg docs/bench/
  cp "$out/results.md" docs/BENCHMARKS.md
  echo "== updated docs/BENCHMARKS.md and docs/bench/"
fi
echo "== results in $out (results.csv, results.json, results.md, bench/*.svg, logs/)"
exit $status
