#!/usr/bin/env bash
# Installs the Debian 12 packages livemig builds with, if any are missing.
# Used by tools/test.sh and tools/demo.sh; safe to run again.
set -uo pipefail
PACKAGES=(bazel-bootstrap bazel-rules-java libabsl-dev libboost-dev
          libprotobuf-dev protobuf-compiler libgtest-dev libgmock-dev
          libbenchmark-dev libxxhash-dev pkg-config python3
          libzstd-dev liblz4-dev  # --compress=zstd|lz4 (migration/wire/compression.h)
          libssl-dev openssl      # TLS (Asio SSL) and the tests' certificates
          clang-14 libclang-rt-14-dev)  # libFuzzer and its sanitizers: tools/fuzz.sh
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "Installing missing packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" || exit 1
fi
exit 0
