#!/usr/bin/env bash
# The one-command demo: builds livemig, starts a receiver and a sender on
# 127.0.0.1, and migrates 1 GiB of guest memory (768 MiB anonymous + a
# 256 MiB file-backed region at a non-zero file offset) while a workload
# dirties it, then checks the rebuilt file with cmp; then, where /dev/kvm
# works, a KVM guest that moves while it runs and keeps running.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
echo "== building (bazel build -c opt //tools:livemig)"
bazel build -c opt //tools:livemig 2>&1 | grep -E "^(ERROR|Target|INFO: Build)" || true
BIN="$(bazel info -c opt bazel-bin 2>/dev/null)/tools/livemig"
[[ -x "$BIN" ]] || { echo "build failed"; exit 1; }

work="$(mktemp -d /tmp/livemig-demo.XXXXXX)"
trap 'kill $recv_pid 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/dst"
# A "disk" file; the region maps 256 MiB of it starting at 1 MiB.
head -c $((260 << 20)) /dev/urandom > "$work/src/disk.img"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

echo "== receiver: livemig receive --listen=127.0.0.1:$port --dir=$work/dst --once"
"$BIN" receive --listen="127.0.0.1:$port" --dir="$work/dst" --once --json \
  > "$work/receive.json" 2> "$work/receive.log" &
recv_pid=$!
sleep 0.5

echo "== sender: 1 GiB, workload uniform:rate=200MB/s, 2 channels"
"$BIN" send --connect="127.0.0.1:$port" \
  --memory=768MiB \
  --region="gpa=0x40000000,size=256MiB,file=$work/src/disk.img,offset=1MiB" \
  --fill=random --workload=uniform:rate=200MB/s,threads=1 --channels=2 \
  --downtime-ms=300 --json > "$work/send.json"
wait "$recv_pid"
recv_pid=""
cat "$work/receive.log"

echo "== summary"
python3 - "$work/send.json" "$work/receive.json" <<'PY'
import json, sys
send = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
recv = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
ram = send["ram"]
print(f"rounds:        {send['rounds']}")
print(f"total time:    {send['total-time']:.0f} ms")
b = send["downtime-breakdown"]
print(f"downtime:      {send['downtime']:.1f} ms (limit 300 ms for the estimate; last estimate "
      f"{send['expected-downtime']:.1f} ms)")
print(f"  final round {b['final-round-ms']:.1f} ms, device state {b['device-state-ms']:.1f} ms, "
      f"verify {b['verify-ms']:.1f} ms, completion (digests, handover) {b['completion-ms']:.1f} ms; "
      f"expected {b['expected-ms']:.1f} ms")
print(f"bytes sent:    {ram['transferred'] / 2**20:.0f} MiB for {ram['total'] / 2**20:.0f} MiB of memory")
print(f"zero pages:    {ram['duplicate']}")
print(f"verified:      {'yes' if recv.get('verified') else 'no'} (--verify={send['verify']}; "
      f"source audit {send['audit']['ms']:.0f} ms after the commit, "
      f"{send['audit']['untracked-pages']} untracked pages)")
r0 = send["round-stats"][0]
print(f"round 0:       {r0['bytes'] / r0['duration-ms'] / 1e6:.2f} GB/s")
PY
echo "== cmp of the file-backed region (256 MiB at offset 1 MiB)"
cmp --ignore-initial=$((1 << 20)):$((1 << 20)) --bytes=$((256 << 20)) \
  "$work/src/disk.img" "$work/dst/disk.img" && echo "cmp: identical"

# Part 2, where /dev/kvm works: a real KVM guest (tools/vmm) migrated while it
# runs, tracked by KVM's dirty log, and resumed on the destination, which
# checks the guest's own invariant (its page counters continue from where
# they were paused).
if [[ -r /dev/kvm && -w /dev/kvm ]]; then
  echo
  echo "== part 2: a KVM guest, 2 vCPUs, counter pattern at 200 MB/s, 256 MiB, tracker kvm-log"
  rm -rf "$work/dst" && mkdir -p "$work/dst"
  "$BIN" receive --listen="127.0.0.1:$port" --dir="$work/dst" --once --json --resume-vm=1s \
    > "$work/receive-vm.json" 2> "$work/receive-vm.log" &
  recv_pid=$!
  sleep 0.5
  "$BIN" send --connect="127.0.0.1:$port" \
    --vm=kvm:vcpus=2,pattern=counter,rate=200m,size=256m --tracker=kvm-log \
    --channels=2 --downtime-ms=300 --json > "$work/send-vm.json"
  status=0
  wait "$recv_pid" || status=$?
  recv_pid=""
  cat "$work/receive-vm.log"
  python3 - "$work/send-vm.json" "$work/receive-vm.json" <<'PY'
import json, sys
send = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
recv = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
r = recv["resume"]
print(f"rounds:        {send['rounds']}, downtime {send['downtime']:.1f} ms "
      f"(vCPUs stopped in {send['vm']['pause-latency-us']} us)")
print(f"audit:         {send['audit']['untracked-pages']} untracked pages")
print(f"resumed guest: ran {r['ran-ms']} ms on the destination, counter "
      f"{r['counter-at-pause']} -> {r['counter-after']}, invariant "
      f"{'held' if r['invariant'] else 'BROKEN'}")
PY
  [[ $status -eq 0 ]] || { echo "the resumed guest's invariant did not hold"; exit 1; }
else
  echo
  echo "== part 2 skipped: no usable /dev/kvm on this machine"
fi
