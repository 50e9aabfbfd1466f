#!/usr/bin/env python3
"""Convergence benchmark harness for livemig (issue 5).

Every scenario is one real migration: `livemig receive --once --json` and
`livemig send ... --json` as two processes over 127.0.0.1 TCP (or a Unix
socket). The link bandwidth is the engine's own cap (--max-bandwidth); the
harness does not shape the link with tc. Each row is set beside two models
(see docs/BENCHMARKS.md, "The models"):

  geometric   round i sends M*rho^i, rho = R/B; stop when pending <= B*D
  saturation  the same policy, but a writer at rate R over H pages dirties
              H*(1-exp(-R*t/H)) distinct bytes in a round of t seconds

Writes results.csv, results.json, results.md and bench/*.svg into --out.
Only the Python 3 standard library is used.
"""
import argparse
import csv
import datetime
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svg  # noqa: E402

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30
TOL = 0.10  # Flag rows whose measured bytes differ from the model by more.

# ------------------------------------------------------------------ units ---

_SIZE = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}


def parse_size(text):
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(num) * _SIZE[t[len(num):]])


def size_text(n):
    """livemig size syntax: binary units."""
    if n % GiB == 0:
        return f"{n // GiB}GiB"
    if n % MiB == 0:
        return f"{n // MiB}MiB"
    return str(n)


def rate_text(r):
    """livemig rate syntax: decimal bytes per second."""
    if r >= 1e9 and abs(r / 1e9 - round(r / 1e9, 3)) < 1e-9:
        return f"{r / 1e9:g}GB/s"
    return f"{int(round(r / 1e6))}MB/s"


def human_rate(r):
    if r is None:
        return "—"
    return f"{r / 1e9:.2f} GB/s" if r >= 1e9 else f"{r / 1e6:.0f} MB/s"


def human_size(n):
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


# -------------------------------------------------------------- scenarios ---


def make_scenarios(M, quick, downtime_ms, max_rounds, kvm=False):
    """The standard table (or, with kvm, the KVM-guest table). Link bandwidth B
    in bytes/s (None: unlimited)."""
    S = []

    def add(name, link, workload, rate=0.0, hot=None, channels=2, auto_converge=False,
            verify="sent", tracker=None):
        S.append(dict(name=name, link=link, workload=workload, rate=rate, hot=hot,
                      channels=channels, auto_converge=auto_converge, verify=verify,
                      downtime_ms=downtime_ms, max_rounds=max_rounds, tracker=tracker))

    slow, fast = 250e6, 1e9
    if kvm:
        # A real KVM guest (livemig send --vm=kvm): 2 vCPUs on M of RAM, its
        # writes seen by each dirty source. "idle": the guest runs, paced to
        # one page per second.
        for tracker in ("kvm-log", "kvm-ring", "uffd"):
            add(f"kvm idle ({tracker})", None, "uniform", 4096, tracker=tracker)
            add(f"kvm uniform rho=0.5 ({tracker})", slow, "uniform", 0.5 * slow,
                tracker=tracker)
        return S
    hot_sizes = [h for h in (64 * MiB, 512 * MiB) if h < M] or [M // 4]
    if quick:
        hot_sizes = [h for h in hot_sizes if h <= M // 4] or [M // 4]
        add("idle", None, "idle")
        add("idle", None, "idle", verify="full")
        add("idle", slow, "idle")
        for rho in (0.1, 0.5, 0.9):
            add(f"uniform rho={rho}", slow, "uniform", rho * slow)
        add(f"hotset {human_size(hot_sizes[0])} rho=0.5", slow, "hotset", 0.5 * slow,
            hot=hot_sizes[0])
        add("diabolical rho=1.5", slow, "uniform", 1.5 * slow)
        add("diabolical rho=1.5 +AC", slow, "uniform", 1.5 * slow, auto_converge=True)
        return S
    add("idle", None, "idle", channels=1)
    add("idle", None, "idle", channels=2)
    add("idle", None, "idle", channels=2, verify="full")
    add("idle", None, "idle", channels=2, verify="off")
    add("idle", fast, "idle")
    add("idle", slow, "idle")
    for rho in (0.1, 0.5, 0.9):
        add(f"uniform rho={rho}", fast, "uniform", rho * fast)
    add("uniform rho=0.5", fast, "uniform", 0.5 * fast, verify="full")
    for rho in (0.1, 0.5, 0.9):
        for ch in (1, 2):
            add(f"uniform rho={rho}", slow, "uniform", rho * slow, channels=ch)
    for h in hot_sizes:
        add(f"hotset {human_size(h)} rho=0.5", slow, "hotset", 0.5 * slow, hot=h)
    add("diabolical rho=1.5", slow, "uniform", 1.5 * slow)
    add("diabolical rho=1.5 +AC", slow, "uniform", 1.5 * slow, auto_converge=True)
    return S


def workload_spec(sc):
    if sc["workload"] == "idle":
        return "idle"
    if sc["workload"] == "hotset":
        return f"hotset:size={size_text(sc['hot'])},rate={rate_text(sc['rate'])}"
    return f"uniform:rate={rate_text(sc['rate'])}"


# ----------------------------------------------------------------- models ---


def geometric_model(M, B, R, D, max_rounds):
    """Classic pre-copy model. Round 0 sends M; round i sends V_i = M*rho^i.

    After live round n the pending volume is V_{n+1}; the engine stops when
    V_{n+1} <= B*D and sends it in the stop-and-copy round n+1. So n is the
    smallest integer >= 0 with M*rho^(n+1) <= B*D, there are n+2 rounds, and
    the bytes are sum_{i=0}^{n+1} M*rho^i = M*(1-rho^(n+2))/(1-rho).
    rho >= 1 never converges (None). With max_rounds K the run is forced after
    live round K-1: n is capped at K-1.
    """
    rho = R / B
    if rho >= 1:
        return None
    sent = [float(M)]
    while True:
        nxt = sent[-1] * rho
        live_rounds = len(sent)
        sent.append(nxt)
        if nxt <= B * D:
            converged = True
            break
        if live_rounds >= max_rounds:
            converged = False
            break
    total = sum(sent)
    return dict(rounds=len(sent), bytes=total, sent=sent, converged=converged,
                downtime_mem_ms=1000 * sent[-1] / B, total_ms=1000 * total / B)


# The escalation policy every scenario runs with, passed to `livemig send`
# (--stall-rounds, --throttle-steps) and to the model, so the two never drift.
STALL_ROUNDS = 5
THROTTLE_STEPS = (20, 10, 99)  # initial, increment, max (percent)


def saturation_model(M, H, B, R, D, max_rounds, auto_converge,
                     stall_rounds=STALL_ROUNDS, throttle_initial=THROTTLE_STEPS[0],
                     throttle_increment=THROTTLE_STEPS[1],
                     throttle_max=THROTTLE_STEPS[2]):
    """The engine's policy (sender.cc) applied to distinct-page dirtying.

    A round that sends V bytes lasts t = V/B; during it a writer at rate R
    (times 1 - throttle) over a working set of H bytes dirties
    P = H*(1-exp(-R*t/H)) distinct bytes, which the next round sends.
    Convergence: P <= B*D. Stall: P not below the smallest earlier P for
    `stall_rounds` rounds (force, or a throttle step with auto-converge).
    Auto-converge: P > V/2 twice in a row -> throttle 20%, then +10% a round.
    """
    V, throttle, fast, stalled, prev = float(M), 0, 0, 0, math.inf
    sent, throttles = [], []
    converged = False
    rnd = 0
    while True:
        sent.append(V)
        throttles.append(throttle)
        t = V / B
        r_eff = R * (100 - throttle) / 100
        P = H * (1 - math.exp(-r_eff * t / H)) if (R > 0 and H > 0) else 0.0
        if P <= B * D:
            converged = True
            break
        stalled = stalled + 1 if P >= prev else 0
        prev = min(prev, P)
        fast = fast + 1 if P > 0.5 * V else 0
        stall = stalled >= stall_rounds
        if auto_converge and (fast >= 2 or stall) and throttle < throttle_max:
            throttle = throttle_initial if throttle == 0 else min(
                throttle_max, throttle + throttle_increment)
            fast, stalled = 0, 0
        elif stall and not auto_converge:
            break
        if rnd + 1 >= max_rounds:
            break
        V = P
        rnd += 1
    sent.append(P)
    throttles.append(throttle)
    total = sum(sent)
    return dict(rounds=len(sent), bytes=total, sent=sent, converged=converged,
                throttle=throttle, downtime_mem_ms=1000 * P / B, total_ms=1000 * total / B)


def invert_saturation(P, H, t):
    """The write rate that dirties P distinct bytes of H in t seconds."""
    if t <= 0 or P <= 0:
        return 0.0
    if P >= H:
        return math.inf
    return -H / t * math.log(1 - P / H)


# ----------------------------------------------------------------- runner ---


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def loadavg():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return None


def run_scenario(binary, sc, M, transport, recv_root, log_dir, idx):
    work = tempfile.mkdtemp(prefix="livemig-bench-", dir=recv_root)
    tag = f"{idx:02d}"
    try:
        if transport == "unix":
            sock = os.path.join(work, "sock")
            recv_ep, send_ep = [f"--unix={sock}"], [f"--unix={sock}"]
        else:
            port = free_port()
            recv_ep, send_ep = [f"--listen=127.0.0.1:{port}"], [f"--connect=127.0.0.1:{port}"]
        recv_err_path = os.path.join(log_dir, f"{tag}-receive.log")
        recv_err = open(recv_err_path, "w")
        recv = subprocess.Popen([binary, "receive", *recv_ep, f"--dir={work}/dst", "--once",
                                 "--json"], stdout=subprocess.PIPE, stderr=recv_err, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if "listening on" in open(recv_err_path).read():
                break
            if recv.poll() is not None:
                break
            time.sleep(0.02)
        if sc.get("tracker"):
            guest = [f"--vm=kvm:vcpus=2,pattern={sc['workload']},rate={int(sc['rate'])},"
                     f"size={M}", f"--tracker={sc['tracker']}"]
        else:
            guest = [f"--memory={size_text(M)}", "--fill=random",
                     f"--workload={workload_spec(sc)}"]
        cmd = [binary, "send", *send_ep, *guest, f"--channels={sc['channels']}",
               f"--downtime-ms={sc['downtime_ms']}", f"--max-rounds={sc['max_rounds']}",
               "--on-timeout=force", f"--stall-rounds={STALL_ROUNDS}",
               f"--verify={sc['verify']}",
               "--throttle-steps=" + ",".join(str(t) for t in THROTTLE_STEPS),
               "--json"]
        if sc["link"]:
            cmd.append(f"--max-bandwidth={rate_text(sc['link'])}")
        if sc["auto_converge"]:
            cmd.append("--auto-converge")
        load_before = loadavg()
        t0 = time.time()
        send = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        wall = time.time() - t0
        try:
            recv_out, _ = recv.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            recv.kill()
            recv_out, _ = recv.communicate()
        recv_err.close()
        with open(os.path.join(log_dir, f"{tag}-send.log"), "w") as f:
            f.write(" ".join(cmd) + "\n" + send.stderr + send.stdout)
        return dict(cmd=" ".join(cmd), send_rc=send.returncode, recv_rc=recv.returncode,
                    send=last_json(send.stdout), recv=last_json(recv_out), wall_s=wall,
                    load1=load_before)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- analysis ---


def analyse(sc, res, M, D):
    s = res["send"] or {}
    rs = s.get("round-stats", [])
    live = rs[:-1] if len(rs) > 1 else rs
    R = sc["rate"]
    H = sc["hot"] if sc["workload"] == "hotset" else M
    b0 = rs[0]["bandwidth-bytes-per-s"] if rs else None
    live_bytes = sum(r["bytes"] for r in live)
    live_ms = sum(r["duration-ms"] for r in live)
    b_live = live_bytes / (live_ms / 1000) if live_ms > 0 else None
    # The model's B: the cap, or on an unlimited link what round 0 carried.
    B = sc["link"] or b0 or 1.0
    rho = R / B
    bd = B * D
    geo = geometric_model(M, B, R, D, sc["max_rounds"]) if R > 0 else \
        dict(rounds=2, bytes=float(M), sent=[float(M), 0.0], converged=True,
             downtime_mem_ms=0.0, total_ms=1000 * M / B)
    sat = saturation_model(M, H, B, R, D, sc["max_rounds"], sc["auto_converge"])
    row = dict(name=sc["name"], workload=workload_spec(sc), link=rate_text(sc["link"]) if
               sc["link"] else "unlimited", channels=sc["channels"], verify=sc["verify"],
               auto_converge=sc["auto_converge"], memory_bytes=M, rate_bytes_per_s=R,
               hot_bytes=H, model_bandwidth=B, rho=rho, downtime_limit_ms=D * 1000,
               max_rounds=sc["max_rounds"], status=s.get("status", "no-json"),
               send_rc=res["send_rc"], recv_rc=res["recv_rc"],
               verified=bool((res["recv"] or {}).get("verified")),
               load1=res["load1"], wall_s=round(res["wall_s"], 2))
    if not rs:
        row.update(flag="FAILED", reason="sender printed no stats")
        return row, None
    ram = s["ram"]
    bd_ = s["downtime-breakdown"]
    measured_sent = [r["dirty-pages"] * PAGE for r in rs]
    row.update(
        converged=s["converged"], rounds=s["rounds"], bytes=ram["transferred"],
        bytes_over_m=ram["transferred"] / M, total_time_ms=s["total-time"],
        setup_ms=s["setup-time"], downtime_ms=s["downtime"],
        downtime_mem_ms=bd_["final-round-ms"], downtime_completion_ms=bd_["completion-ms"],
        downtime_verify_ms=bd_.get("verify-ms", 0.0),
        untracked_pages=s.get("audit", {}).get("untracked-pages", 0),
        final_throttle=s["cpu-throttle-percentage"], bandwidth_round0=b0,
        bandwidth_live=b_live,
        geo_rounds=geo["rounds"] if geo else None,
        geo_bytes_over_m=geo["bytes"] / M if geo else None,
        geo_total_ms=geo["total_ms"] if geo else None,
        geo_downtime_mem_ms=geo["downtime_mem_ms"] if geo else None,
        geo_converged=geo["converged"] if geo else False,
        sat_rounds=sat["rounds"], sat_bytes_over_m=sat["bytes"] / M,
        sat_total_ms=sat["total_ms"], sat_downtime_mem_ms=sat["downtime_mem_ms"],
        sat_converged=sat["converged"], sat_throttle=sat["throttle"])
    # Page bytes only (the wire adds ~0.004% of frame headers).
    page_bytes = sum(measured_sent)
    row["geo_err"] = (page_bytes / geo["bytes"] - 1) if geo else None
    row["sat_err"] = page_bytes / sat["bytes"] - 1
    # Dirty-rate estimates.
    first = next((r for r in live if r["duration-ms"] > 0), None)
    row["dirty_rate_engine"] = ram["dirty-pages-rate"] * PAGE
    row["dirty_rate_round0"] = (first["dirtied-during-round"] * PAGE /
                                (first["duration-ms"] / 1000)) if first else None
    # Invert the saturation on round 0 (no throttle there): the writer's rate.
    if R > 0 and live:
        r0 = live[0]
        row["dirty_rate_corrected"] = invert_saturation(
            r0["dirtied-during-round"] * PAGE, H, r0["duration-ms"] / 1000)
    else:
        row["dirty_rate_corrected"] = 0.0 if live else None
    # Disagreements and their reasons.
    reasons = []
    err = row["geo_err"]
    flagged = err is None or abs(err) > TOL
    if sc["link"] and b0 and b0 < 0.9 * sc["link"]:
        reasons.append(f"round 0 ran at {human_rate(b0)}, below the {human_rate(sc['link'])} "
                       f"cap (CPU-bound: receiver faults fresh memory)")
    if R > 0 and geo is None:
        reasons.append("geometric model diverges (rho >= 1)")
    if sc["workload"] == "hotset" and R * (M / B) > 0.2 * H:
        reasons.append(f"hot set caps pending at {human_size(H)}")
    elif sc["workload"] == "uniform" and rho > 0.15 and abs(row["sat_err"]) < abs(err or 9):
        reasons.append("distinct-page saturation: M(1-e^(-Rt/M)) pages, not R*t")
    if row["final_throttle"]:
        reasons.append(f"auto-converge throttled R by {row['final_throttle']}%")
    if not s["converged"] and row["rounds"] < sc["max_rounds"] + 1:
        reasons.append("stall detector forced switchover (pending stopped shrinking)")
    elif not s["converged"]:
        reasons.append(f"forced at --max-rounds={sc['max_rounds']}")
    if geo and row["rounds"] != geo["rounds"]:
        reasons.append(f"{row['rounds']} rounds vs {geo['rounds']} in the model")
    if R > 0 and row["dirty_rate_corrected"] and \
            row["dirty_rate_corrected"] < 0.85 * R and not sc["auto_converge"]:
        reasons.append(f"writer reached only {human_rate(row['dirty_rate_corrected'])}")
    row["flag"] = ("> 10%" if flagged else "")
    row["reason"] = "; ".join(reasons)
    series = dict(measured=measured_sent, geo=geo["sent"] if geo else None, sat=sat["sent"],
                  bd=bd)
    return row, series


# ----------------------------------------------------------------- output ---

CSV_FIELDS = [
    "name", "workload", "link", "channels", "verify", "auto_converge", "memory_bytes",
    "rate_bytes_per_s", "hot_bytes", "model_bandwidth", "rho", "downtime_limit_ms",
    "max_rounds", "status", "verified", "converged", "rounds", "bytes", "bytes_over_m",
    "total_time_ms", "setup_ms", "downtime_ms", "downtime_mem_ms", "downtime_completion_ms",
    "downtime_verify_ms", "untracked_pages",
    "final_throttle", "bandwidth_round0", "bandwidth_live", "geo_rounds", "geo_bytes_over_m",
    "geo_total_ms", "geo_downtime_mem_ms", "geo_converged", "geo_err", "sat_rounds",
    "sat_bytes_over_m", "sat_total_ms", "sat_downtime_mem_ms", "sat_converged",
    "sat_throttle", "sat_err", "dirty_rate_engine", "dirty_rate_round0",
    "dirty_rate_corrected", "flag", "reason", "load1", "wall_s", "send_rc", "recv_rc"]


def f1(v, fmt="{:.2f}", none="—"):
    return none if v is None else fmt.format(v)


def pct(v):
    if v is None:
        return "—"
    return "0%" if abs(v) < 0.005 else f"{100 * v:+.0f}%"


def yn(v):
    return "yes" if v else "no"


def markdown_table(rows):
    out = ["| # | scenario | link | ch | verify | R (ρ) | rounds meas / geo / sat "
           "| bytes/M meas / geo / sat "
           "| Δ geo | Δ sat | total s meas / geo | downtime ms: total (memory) / memory geo / sat "
           "| throttle | converged | flag | why |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        if "rounds" not in r:
            out.append(f"| {i} | {r['name']} | {r['link']} | {r['channels']} | {r['verify']} "
                       f"| | FAILED | | | | | | | | FAILED | {r.get('reason', '')} |")
            continue
        R = r["rate_bytes_per_s"]
        rate = "0" if R == 0 else f"{human_rate(R)} ({r['rho']:.2f})"
        geo_r = r["geo_rounds"] if r["geo_rounds"] is not None else "∞"
        if r["geo_rounds"] is not None and not r["geo_converged"]:
            geo_r = f"{geo_r} (forced)"
        geo_b = f1(r["geo_bytes_over_m"]) if r["geo_bytes_over_m"] is not None else "∞"
        out.append(
            f"| {i} | {r['name']} | {r['link']} | {r['channels']} | {r['verify']} | {rate} "
            f"| {r['rounds']} / {geo_r} / {r['sat_rounds']} "
            f"| **{r['bytes_over_m']:.2f}** / {geo_b} / {r['sat_bytes_over_m']:.2f} "
            f"| {pct(r['geo_err'])} | {pct(r['sat_err'])} "
            f"| {r['total_time_ms'] / 1000:.1f} / {f1(r['geo_total_ms'] and r['geo_total_ms'] / 1000, '{:.1f}', '∞')} "
            f"| {r['downtime_ms']:.0f} ({r['downtime_mem_ms']:.0f}) / "
            f"{f1(r['geo_downtime_mem_ms'], '{:.0f}', '∞')} / {r['sat_downtime_mem_ms']:.0f} "
            f"| {r['final_throttle']}% | {yn(r['converged'])} | {r['flag']} | {r['reason']} |")
    return "\n".join(out)


def dirty_rate_table(rows):
    out = ["| # | scenario | link | configured R | engine `dirty-pages-rate`×4096 (last round) "
           "| round 0: dirtied / duration | round 0 inverted saturation −(H/t)·ln(1−P/H) "
           "| final throttle |",
           "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        if "rounds" not in r or r["rate_bytes_per_s"] == 0:
            continue
        c = r["dirty_rate_corrected"]
        out.append(f"| {i} | {r['name']} | {r['link']} | {human_rate(r['rate_bytes_per_s'])} "
                   f"| {human_rate(r['dirty_rate_engine'])} | {human_rate(r['dirty_rate_round0'])} "
                   f"| {'saturated' if c == math.inf else human_rate(c)} "
                   f"| {r['final_throttle']}% |")
    return "\n".join(out)


def slug(text):
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def write_plots(rows, series, out_dir, M):
    bench_dir = os.path.join(out_dir, "bench")
    os.makedirs(bench_dir, exist_ok=True)
    files = []
    # Pending dirty bytes per round, one chart per link, one colour per workload.
    by_link = {}
    for r, s in zip(rows, series):
        if s is None or r["rate_bytes_per_s"] == 0 or r["channels"] != 2 or \
                r["verify"] != "sent":
            continue
        by_link.setdefault(r["link"], []).append((r, s))
    for link, items in by_link.items():
        for kind in ("uniform", "other"):
            chosen = [(r, s) for r, s in items
                      if (r["name"].startswith("uniform")) == (kind == "uniform")]
            if not chosen:
                continue
            p = svg.Plot(f"Bytes sent per round (= pending dirty bytes), M = {human_size(M)}, "
                         f"link {link}, D = {rows[0]['downtime_limit_ms']:.0f} ms",
                         "round", "MiB (log scale)", width=760, height=440, logy=True)
            for j, (r, s) in enumerate(chosen):
                color = svg.PALETTE[j % len(svg.PALETTE)]
                label = r["name"]
                p.add(f"{label}: measured", [(i, v / MiB) for i, v in enumerate(s["measured"])],
                      color=color)
                if s["geo"]:
                    p.add(f"{label}: geometric", [(i, v / MiB) for i, v in enumerate(s["geo"])],
                          color=color, dash="6,4", marker="cross")
                p.add(f"{label}: saturation", [(i, v / MiB) for i, v in enumerate(s["sat"])],
                      color=color, dash="2,3", marker="square", hollow=True)
            p.hline(chosen[0][1]["bd"] / MiB, "B·D")
            name = f"pending-{kind}-{slug(link)}.svg"
            with open(os.path.join(bench_dir, name), "w") as f:
                f.write(p.render())
            files.append((f"{'Uniform' if kind == 'uniform' else 'Hot-set and diabolical'} "
                          f"workloads, link {link}", name))
    # Downtime vs configured dirty rate, per link.
    p = svg.Plot(f"Downtime vs configured dirty rate (M = {human_size(M)}, 2 channels)",
                 "configured dirty rate R, MB/s", "downtime, ms", width=760, height=440)
    j = 0
    for link in sorted({r["link"] for r in rows if "rounds" in r}):
        # Rows at one rate (the KVM table: one per dirty source) sort by
        # rate only; dicts do not compare.
        pts = sorted(((r["rate_bytes_per_s"] / 1e6, r) for r in rows
                      if "rounds" in r and r["link"] == link and r["channels"] == 2
                      and r["verify"] == "sent"
                      and r["workload"].split(":")[0] in ("idle", "uniform")
                      and not r["auto_converge"]), key=lambda p: p[0])
        if len(pts) < 2:
            continue
        color = svg.PALETTE[j % len(svg.PALETTE)]
        j += 1
        p.add(f"{link}: total (measured)", [(x, r["downtime_ms"]) for x, r in pts], color=color)
        p.add(f"{link}: memory part (measured)", [(x, r["downtime_mem_ms"]) for x, r in pts],
              color=color, hollow=True, dash="4,3")
        p.add(f"{link}: memory part (geometric)",
              [(x, r["geo_downtime_mem_ms"]) for x, r in pts if r["geo_downtime_mem_ms"]],
              color=color, line=False, marker="cross")
    p.hline(rows[0]["downtime_limit_ms"], "D")
    with open(os.path.join(bench_dir, "downtime-vs-rate.svg"), "w") as f:
        f.write(p.render())
    files.append(("Downtime vs dirty rate (uniform and idle workloads; the diabolical "
                  "rows are forced switchovers)", "downtime-vs-rate.svg"))
    return files


def machine_description():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.0f} GiB RAM"
    except OSError:
        pass
    os_name = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return (f"{os.cpu_count()} vCPUs ({cpu}), {mem}, {os_name}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def throughput_section(path):
    if not path or not os.path.exists(path):
        return None, "_not run (pass --throughput=FILE from `bazel run -c opt //migration:bench`)_"
    lines = [l.rstrip() for l in open(path) if l.strip() and not l.startswith(("INFO", "Loading",
                                                                             "Analyzing", "Target",
                                                                             "  bazel-bin"))]
    parsed = {}
    for l in lines:
        parts = l.split()
        if len(parts) >= 3:
            try:
                parsed[parts[0]] = (float(parts[1]), " ".join(parts[2:]))
            except ValueError:
                pass
    return parsed, "```\n" + "\n".join(lines) + "\n```"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path to the livemig binary")
    ap.add_argument("--out", default=None, help="output folder "
                    "(default /tmp/livemig-bench-<timestamp>)")
    ap.add_argument("--memory", default=None, help="guest memory M (default 1GiB; 256MiB "
                    "with --quick)")
    ap.add_argument("--quick", action="store_true", help="M = 256 MiB, fewer scenarios")
    ap.add_argument("--downtime-ms", type=int, default=300)
    ap.add_argument("--max-rounds", type=int, default=15)
    ap.add_argument("--transport", choices=("tcp", "unix"), default="tcp")
    ap.add_argument("--recv-root", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where receivers rebuild memory (default /dev/shm: no disk noise)")
    ap.add_argument("--kvm", action="store_true",
                    help="the KVM-guest table instead (--vm=kvm, each dirty source)")
    ap.add_argument("--only", default=None, help="run the scenarios whose name contains this")
    ap.add_argument("--throughput", default=None,
                    help="output of `//migration:bench` to include in results.md")
    ap.add_argument("--template", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "BENCHMARKS.template.md"))
    ap.add_argument("--rerun-command", default="tools/bench.sh")
    args = ap.parse_args()

    M = parse_size(args.memory) if args.memory else (256 * MiB if args.quick else GiB)
    if M % PAGE:
        sys.exit("--memory must be a multiple of 4096")
    D = args.downtime_ms / 1000
    out = args.out or f"/tmp/livemig-bench-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    scenarios = make_scenarios(M, args.quick, args.downtime_ms, args.max_rounds, args.kvm)
    if args.only:
        scenarios = [s for s in scenarios if args.only in s["name"]]
    started = datetime.datetime.now()
    print(f"bench: {len(scenarios)} scenarios, M = {human_size(M)}, D = {args.downtime_ms} ms, "
          f"output in {out}", flush=True)
    rows, series = [], []
    for i, sc in enumerate(scenarios, 1):
        res = run_scenario(args.bin, sc, M, args.transport, args.recv_root,
                           os.path.join(out, "logs"), i)
        row, ser = analyse(sc, res, M, D)
        row["command"] = res["cmd"]
        rows.append(row)
        series.append(ser)
        if "rounds" in row:
            print(f"[{i:2d}/{len(scenarios)}] {sc['name']:<26} link {row['link']:<9} ch "
                  f"{sc['channels']} verify {sc['verify']}: {row['rounds']:2d} rounds, {row['bytes_over_m']:.2f} M "
                  f"(geo {f1(row['geo_bytes_over_m'], '{:.2f}', 'inf')}, sat "
                  f"{row['sat_bytes_over_m']:.2f}), {row['total_time_ms'] / 1000:.1f} s, "
                  f"downtime {row['downtime_ms']:.0f} ms (memory {row['downtime_mem_ms']:.0f}), "
                  f"throttle {row['final_throttle']}%, converged {yn(row['converged'])}, "
                  f"verified {yn(row['verified'])}  [{row['wall_s']:.1f} s wall]", flush=True)
        else:
            print(f"[{i:2d}/{len(scenarios)}] {sc['name']}: FAILED (rc {res['send_rc']}), see "
                  f"{out}/logs/{i:02d}-send.log", flush=True)
    finished = datetime.datetime.now()

    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    plots = write_plots(rows, series, out, M)
    tp_parsed, tp_text = throughput_section(args.throughput)
    machine = machine_description()
    meta = dict(started=started.isoformat(timespec="seconds"),
                finished=finished.isoformat(timespec="seconds"), memory_bytes=M,
                downtime_limit_ms=args.downtime_ms, max_rounds=args.max_rounds,
                transport=args.transport, quick=args.quick, machine=machine,
                bandwidth_shaping="engine cap (--max-bandwidth); no tc/netns")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows, rounds=series, throughput=tp_parsed), f, indent=1,
                  default=lambda o: None)
    loads = [r["load1"] for r in rows if r.get("load1") is not None]
    subst = {
        "MACHINE": machine,
        "DATE": f"{started:%Y-%m-%d %H:%M}–{finished:%H:%M} "
                f"({(finished - started).total_seconds() / 60:.1f} min)",
        "PARAMS": (f"M = {human_size(M)}, D = {args.downtime_ms} ms, --max-rounds="
                   f"{args.max_rounds} --on-timeout=force, transport {args.transport} "
                   f"127.0.0.1, {len(rows)} scenarios"
                   + (" (quick mode)" if args.quick else "")),
        "LOAD": (f"1-minute load average before each scenario: {min(loads):.2f}–{max(loads):.2f}"
                 if loads else ""),
        "TABLE": markdown_table(rows),
        "DIRTYRATE": dirty_rate_table(rows),
        "PLOTS": "\n\n".join(f"![{t}](bench/{n})" for t, n in plots),
        "THROUGHPUT": tp_text,
        "RERUN": args.rerun_command,
        "GIB": (f"{tp_parsed['memory_bytes'][0] / GiB:g}" if tp_parsed and
                "memory_bytes" in tp_parsed else "?"),
        "FLAGGED": str(sum(1 for r in rows if r.get("flag"))),
    }
    text = open(args.template).read()
    for k, v in subst.items():
        text = text.replace("{{" + k + "}}", v)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(f"bench: wrote {out}/results.csv, results.json, results.md, "
          f"{len(plots)} plots in {out}/bench/", flush=True)
    failed = [r for r in rows
              if "rounds" not in r or r["verified"] != (r["verify"] != "off")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
