#!/usr/bin/env bash
# Runs every test: installs the Debian packages the build needs if they are
# missing, runs `bazel test //...`, and prints, alone on its last line,
# "N passed, N failed" counting individual GoogleTest cases.
# Usage: tools/test.sh [extra bazel flags, e.g. --config=asan]
set -uo pipefail
cd "$(dirname "$0")/.."

tools/install_deps.sh || { echo "apt-get failed"; echo "0 passed, 1 failed"; exit 1; }

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
