#!/usr/bin/env bash
# Runs every test: installs the Debian packages the build needs if they are
# missing, runs `bazel test //...`, and prints, alone on its last line,
# "N passed, N failed" counting individual GoogleTest cases.
# Usage: tools/test.sh [extra bazel flags, e.g. --config=asan]
#        tools/test.sh --all   what CI runs (.ci/run): the suite with g++,
#                              then under --config=asan and --config=tsan,
#                              then a short fixed-work run of every fuzz
#                              target (tools/fuzz.sh smoke, one case each),
#                              then a VMM workspace of its own that embeds
#                              livemig (tools/embedding_test.sh);
#                              the last line sums every part.
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh || { echo "apt-get failed"; echo "0 passed, 1 failed"; exit 1; }

if [[ "${1:-}" == "--all" ]]; then
  shift
  total_passed=0 total_failed=0 summary=()
  part() {  # part NAME COMMAND...: runs it, keeps its "N passed, N failed".
    local name=$1 log start line p f
    shift
    log="$(mktemp)"
    start=$SECONDS
    echo "==== ${name}: $*"
    "$@" 2>&1 | tee "$log"
    line="$(tail -n 1 "$log")"
    rm -f "$log"
    if [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
      p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
    else
      p=0 f=1  # It did not even report: count it as a failure.
    fi
    total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
    summary+=("$(printf '%-8s %4d passed, %d failed, %4d s' "$name" "$p" "$f" $((SECONDS - start)))")
  }
  fuzz_smoke() {  # One case per target: its fixed-work run did not crash.
    local out rc
    out="$(tools/fuzz.sh smoke 2>&1)"
    rc=$?
    echo "$out"
    local ok failed
    ok=$(grep -c -E "^fuzz [a-z_]+: ok" <<<"$out")
    failed=$(grep -c -E "^fuzz [a-z_]+: FAILED" <<<"$out")
    [[ $rc -ne 0 && $failed -eq 0 ]] && failed=1  # The build itself failed.
    echo "${ok} passed, ${failed} failed"
  }
  # Under the sanitizers only the tests and what they need are built: the
  # g++ part has already built every binary (benchmarks, tools) once.
  part g++ "$0" "$@"
  part asan "$0" --config=asan --build_tests_only "$@"
  part tsan "$0" --config=tsan --build_tests_only "$@"
  part fuzz fuzz_smoke
  part embed tools/embedding_test.sh
  echo "==== summary"
  printf '%s\n' "${summary[@]}"
  echo "${total_passed} passed, ${total_failed} failed"
  [[ $total_failed -eq 0 ]]
  exit
fi

# Count only this run: stale logs (e.g. from --runs_per_test) must not mix in.
testlogs="$(bazel info bazel-testlogs "$@" 2>/dev/null)"
[[ -n "$testlogs" && -d "$testlogs" ]] && rm -rf "${testlogs:?}"/*

bazel test //... "$@" 2>&1 | grep -v -E "linux-sandbox|^INFO: From |^\s*$"
bazel_rc=${PIPESTATUS[0]}

# Count individual test cases from the JUnit XML every GoogleTest writes.
read -r passed failed < <(python3 - "$testlogs" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
passed = failed = 0
for path in pathlib.Path(sys.argv[1]).rglob("test.xml"):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        failed += 1
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None \
                or case.get("status") == "notrun":
            continue
        else:
            passed += 1
print(passed, failed)
PY
)
if [[ $bazel_rc -ne 0 && $failed -eq 0 ]]; then
  failed=1  # A build failure or crash that left no test.xml still fails.
fi
echo "${passed} passed, ${failed} failed"
[[ $bazel_rc -eq 0 && $failed -eq 0 ]]
