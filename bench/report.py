#!/usr/bin/env python3
"""bench/report.py — turns compare.sh's raw.jsonl into results.json,
results.md (a table per scenario, ratios against the floor and against
tower-websockets, and the issue's targets) and chart.svg (grouped bars of
server CPU µs per echoed message, one panel per scenario, plus idle KiB per
socket). Python standard library only.

    python3 bench/report.py --raw bench/results/raw.jsonl --out bench/results

With --engine FILE instead of --raw it turns the output of
`cargo bench --bench engine` into results/engine.txt, a plain table; with
--broadcast FILE, broadcast.sh's runs into broadcast.json and broadcast.md
(server CPU µs per delivered message, ratios against the floor, sends per
delivery from the strace runs).
"""

import argparse
import datetime
import html
import json
import os
import platform
import re
import subprocess

ORDER = [
    "floor",
    "tower-websockets",
    "tower-websockets-baseline",
    "tower-websockets-aspnet",
    "peer-fastwebsockets",
    "peer-tokio-websockets",
    "peer-tungstenite",
    "peer-axum",
]
COLORS = {
    "floor": "#9e9e9e",
    "tower-websockets": "#d84315",
    "tower-websockets-baseline": "#8d6e63",
    "tower-websockets-aspnet": "#ffab91",
    "peer-fastwebsockets": "#1565c0",
    "peer-tokio-websockets": "#2e7d32",
    "peer-tungstenite": "#6a1b9a",
    "peer-axum": "#00838f",
}
SCENARIOS = {
    "a": "1 conn × 16 B binary (latency)",
    "b": "64 × 16 B binary",
    "c": "64 × 16 B binary, pipeline 16",
    "d": "64 × 1 KiB multi-byte text",
    "e": "64 × 16 KiB binary",
    "f": "4 × 1 MiB binary",
    "g": "10,000 idle sockets",
}
TW = "tower-websockets"


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse_strace(path):
    """(total calls, [(syscall, calls)] busiest first) from `strace -c`."""
    total, rows = None, []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, []
    for line in lines:
        tokens = line.split()
        if len(tokens) < 5 or not tokens[0].replace(".", "").isdigit():
            continue
        # % time, seconds, usecs/call, calls, [errors,] syscall
        calls = int(tokens[3])
        if tokens[-1] == "total":
            total = calls
        else:
            rows.append((tokens[-1], calls))
    rows.sort(key=lambda r: -r[1])
    return total, rows


def ordered(servers):
    known = [s for s in ORDER if s in servers]
    return known + sorted(s for s in servers if s not in ORDER)


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def noise(run):
    """Other processes' CPU during the window, in % of one CPU; flagged when
    it is enough to skew the figures."""
    other = run.get("other_cpu_pct")
    if other is None:
        return "–"
    text = f"**{other:.0f}%**" if other >= 10 else f"{other:.0f}%"
    if run.get("tries", 1) > 1:
        text += f" (try {run.get('try', '?')} of {run['tries']})"
    return text


def main_figure(scenario):
    """The figure a scenario's rounds are ranked by."""
    return "kib_per_socket" if scenario == "g" else "server_cpu_us_per_msg"


def spread(run):
    """The main figure's lowest and highest value over the rounds."""
    lo_hi = run.get("spread")
    if not lo_hi or run.get("rounds_ok", 0) < 2:
        return "–"
    return f"{fmt(lo_hi[0])}–{fmt(lo_hi[1])}"


def split(run):
    """CPU µs/msg split into user space and the kernel (utime, stime), from
    the same window; "–" for runs recorded before loadgen reported it."""
    user, sys = figure(run, "server_user_us_per_msg"), figure(run, "server_sys_us_per_msg")
    if user is None or sys is None:
        return "–"
    return f"{fmt(user, 2)} + {fmt(sys, 2)}"


def ok(run):
    return run is not None and not run.get("failed") and run.get("errors", 1) == 0


def figure(run, key):
    return run.get(key) if ok(run) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw")
    ap.add_argument("--engine", help="criterion output of benches/engine.rs")
    ap.add_argument("--broadcast", help="broadcast.sh's raw runs (JSON lines)")
    ap.add_argument("--run", help="broadcast.sh's run.json (what was measured)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", default="")
    ap.add_argument("--warmup", default="")
    args = ap.parse_args()
    if args.engine:
        write_engine(args.engine, args.out)
        return
    if args.broadcast:
        write_broadcast(args.broadcast, args.run, args.out)
        return
    if not args.raw:
        ap.error("--raw, --engine or --broadcast is required")

    tries = {}
    with open(args.raw) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                tries.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r)
    runs = choose_runs(tries, main_figure)

    # Syscalls per message from the strace runs.
    for server, r in runs.get("c-strace", {}).items():
        path = r.get("strace_file", "")
        candidates = [os.path.join(d, path) for d in (os.path.dirname(args.raw), args.out)]
        total, rows = parse_strace(next((c for c in candidates if os.path.exists(c)), ""))
        r["syscalls"] = total
        r["syscalls_top"] = rows[:5]
        msgs = r.get("msgs_total") or 0
        r["syscalls_per_msg"] = total / msgs if total and msgs else None

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "rustc": sh("rustc", "--version"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        # The output directory does not count: this report rewrites it.
        "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no",
                         "--", ".", f":(exclude){args.out}")),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "pinning": "server on CPU 0 with --threads 1, loadgen on CPU 1",
        "loadavg_at_start": None,
    }
    # What compare.sh fixed when the run started wins over the present.
    run_file = os.path.join(os.path.dirname(args.raw), "run.json")
    if os.path.exists(run_file):
        with open(run_file) as f:
            run = json.load(f)
        meta.update({k: v for k, v in run.items() if k != "started"})
        meta["date"] = run.get("started", meta["date"])
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {"meta": meta, "scenarios": SCENARIOS, "runs": runs, "all_tries": tries},
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")

    write_markdown(args.out, meta, runs)
    write_chart(args.out, meta, runs)


def choose_runs(tries, main_figure):
    """{scenario: {server: run}} from every try of every round.

    Of several tries in a round, keep a successful one that other processes
    disturbed least; of the rounds, the median one by the scenario's main
    figure (`main_figure(scenario)` names it), so every figure in a row
    comes from one real run. The spread of that figure over the rounds is
    kept beside it."""
    runs = {}
    for scenario, servers in tries.items():
        for server, attempts in servers.items():
            rounds = {}
            for r in attempts:
                rounds.setdefault(r.get("round", 1), []).append(r)
            per_round = []
            for attempts_in_round in rounds.values():
                best = min(
                    attempts_in_round,
                    key=lambda r: (not ok(r), r.get("other_cpu_pct") or 0.0),
                )
                best["tries"] = len(attempts_in_round)
                per_round.append(best)
            key = main_figure(scenario)
            good = [r for r in per_round if figure(r, key) is not None]
            if good:
                good.sort(key=lambda r: r[key])
                chosen = good[(len(good) - 1) // 2]
                chosen["spread"] = [good[0][key], good[-1][key]]
            else:
                chosen = per_round[0]
            chosen["rounds"] = len(per_round)
            chosen["rounds_ok"] = len(good)
            runs.setdefault(scenario, {})[server] = chosen
    return runs


def targets(runs):
    """The issue's targets for tower-websockets, as table rows."""
    rows = []

    def get(scenario, server, key):
        return figure(runs.get(scenario, {}).get(server), key)

    def peers(scenario, key):
        vals = [
            (s, figure(r, key))
            for s, r in runs.get(scenario, {}).items()
            if s.startswith("peer-") and figure(r, key) is not None
        ]
        return min(vals, key=lambda v: v[1]) if vals else (None, None)

    def row(scenario, key, label, floor_max, peer_max, digits=2):
        tw = get(scenario, TW, key)
        floor = get(scenario, "floor", key)
        best_name, best = peers(scenario, key)
        rf, rp = ratio(tw, floor), ratio(tw, best)
        checks = []
        if floor_max is not None:
            checks.append(rf is not None and rf <= floor_max)
        if peer_max is not None:
            checks.append(rp is not None and rp <= peer_max)
        want = " and ".join(
            t
            for t in [
                f"≤ {floor_max:.2f}× floor" if floor_max is not None else "",
                f"≤ {peer_max:.2f}× best peer" if peer_max is not None else "",
            ]
            if t
        )
        met = "–" if tw is None else ("yes" if all(checks) else "**no**")
        rows.append(
            f"| ({scenario}) {SCENARIOS[scenario]} | {label} | {fmt(tw, digits)} | "
            f"{fmt(floor, digits)} | "
            f"{fmt(best, digits)} ({(best_name or '–').removeprefix('peer-')}) | {fmt_ratio(rf)} | "
            f"{fmt_ratio(rp)} | {want} | {met} |"
        )

    row("b", "server_cpu_us_per_msg", "CPU µs/msg", 1.10, 1.00)
    row("b", "p99_us", "p99 µs", None, 1.00, digits=0)
    row("c", "server_cpu_us_per_msg", "CPU µs/msg", 2.00, None)
    row("d", "server_cpu_us_per_msg", "CPU µs/msg", 1.10, 1.00)
    row("e", "server_cpu_us_per_msg", "CPU µs/msg", None, 0.87)
    row("f", "server_cpu_us_per_msg", "CPU µs/msg", None, 0.87)
    row("g", "kib_per_socket", "KiB/socket", None, 0.80)
    return rows


def write_markdown(out, meta, runs):
    md = []
    md.append("# tower-websockets benchmark results\n")
    md.append(
        f"{meta['date']} · {meta['cpu']}, {meta['cpus']} CPUs · Linux {meta['kernel']} · "
        f"{meta['rustc']} · commit {meta['commit']}{' (dirty)' if meta['dirty'] else ''} · "
        f"load average before the run {' '.join(meta['loadavg_at_start'] or ['?'])}\n"
    )
    md.append(
        f"Each server alone, {meta['pinning']}; {meta['duration_s']} s counted after "
        f"{meta['warmup_s']} s warm-up per scenario; a fresh server process per scenario. "
        f"{meta.get('rounds') or 1} rounds: in each, every server runs every scenario, the "
        "servers taking turns, and each row is the server's median round by CPU µs/msg "
        "(KiB/socket for idle sockets), with the lowest and highest over the rounds beside it. "
        "CPU µs/msg is the server's utime+stime (/proc/PID/stat) over the counted window "
        "divided by the messages echoed in it; KiB/socket is the server's VmRSS growth "
        "from before opening the idle sockets to 1 s after all are open, divided by their "
        "number. Ratios: this server's figure over the floor's, and over tower-websockets'. "
        "Other load: CPU that other processes used during the counted window (from /proc/stat, "
        "minus the server's and loadgen's own), in % of one CPU; in bold from 10 %, where "
        "the run's figures are suspect. compare.sh runs a scenario again (up to 3 tries) when "
        "that happens and the table keeps the least disturbed try; `tries` in results.json "
        "says how many there were. "
        "Lower is better for every figure but msgs/s and MB/s. "
        "Every server echoes whole messages: tower-websockets is `bench/src/bin/tower-websockets.rs "
        "--mode message` (`receive_message` / `send_message`); tower-websockets-aspnet is the same "
        "binary's `--mode aspnet`, the ASP.NET loop (4 KiB receives, each sent back as it came), "
        "shown for reference"
        + (
            "; tower-websockets-baseline is the same server (or `examples/echo`, before the bench "
            "had its own) `--mode message` built from another commit (compare.sh's BASELINE), "
            "for a before/after in one run"
            if any("tower-websockets-baseline" in scenario for scenario in runs.values())
            else ""
        )
        + ".\n"
    )
    md.append("## tower-websockets against the targets of issue 4\n")
    md.append(
        "| scenario | figure | tower-websockets | floor | best peer | ÷ floor | ÷ best peer | target | met |"
    )
    md.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    md.extend(targets(runs))
    md.append("")

    for letter, title in SCENARIOS.items():
        scenario = runs.get(letter)
        if not scenario:
            continue
        if letter == "g":
            counts = [r.get("idle_count") for r in scenario.values() if r.get("idle_count")]
            if counts:
                title = f"{max(counts):,} idle sockets"
        md.append(f"## ({letter}) {title}\n")
        floor, tw = scenario.get("floor"), scenario.get(TW)
        if letter == "g":
            md.append(
                "| server | sockets open | RSS before (MiB) | RSS all open (MiB) | KiB/socket | rounds: low–high | × floor | × tower-websockets | errors |"
            )
            md.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
            for name in ordered(scenario):
                r = scenario[name]
                kib = figure(r, "kib_per_socket")
                mib = lambda v: None if v is None else v / 1024  # noqa: E731
                md.append(
                    f"| {name} | {fmt(r.get('opened'))} | {fmt(mib(r.get('rss_before_kib')), 1)} | "
                    f"{fmt(mib(r.get('rss_open_kib')), 1)} | {fmt(kib)} | {spread(r)} | "
                    f"{fmt_ratio(ratio(kib, figure(floor, 'kib_per_socket')))} | "
                    f"{fmt_ratio(ratio(kib, figure(tw, 'kib_per_socket')))} | {r.get('errors', '–')} |"
                )
        else:
            # The user/kernel split, for runs whose loadgen reported it.
            has_split = any(split(r) != "–" for r in scenario.values())
            split_head = " user + kernel |" if has_split else ""
            md.append(
                "| server | msgs/s | MB/s | p50 µs | p99 µs | p99.9 µs | CPU µs/msg |"
                f"{split_head} rounds: low–high | × floor | × tower-websockets | other load | errors |"
            )
            md.append("| --- |" + " ---: |" * (11 + has_split))
            for name in ordered(scenario):
                r = scenario[name]
                cpu = figure(r, "server_cpu_us_per_msg")
                md.append(
                    f"| {name} | {fmt(figure(r, 'msgs_per_s'))} | {fmt(figure(r, 'mb_per_s'))} | "
                    f"{fmt(figure(r, 'p50_us'), 1)} | {fmt(figure(r, 'p99_us'), 1)} | "
                    f"{fmt(figure(r, 'p999_us'), 1)} | {fmt(cpu, 3)} |"
                    f"{f' {split(r)} |' if has_split else ''} {spread(r)} | "
                    f"{fmt_ratio(ratio(cpu, figure(floor, 'server_cpu_us_per_msg')))} | "
                    f"{fmt_ratio(ratio(cpu, figure(tw, 'server_cpu_us_per_msg')))} | "
                    f"{noise(r)} | {'failed' if r.get('failed') else r.get('errors', '–')} |"
                )
        md.append("")

    strace = runs.get("c-strace")
    if strace:
        md.append("## Syscalls per message, scenario (c) under `strace -c -f`\n")
        md.append(
            "A separate run with strace attached to the server (which slows it, so only "
            "the counts are kept): all syscalls of all server threads over the run, divided "
            "by every message echoed in it.\n"
        )
        md.append("| server | messages | syscalls | syscalls/msg | × floor | busiest syscalls (calls) |")
        md.append("| --- | ---: | ---: | ---: | ---: | --- |")
        floor_per = (strace.get("floor") or {}).get("syscalls_per_msg")
        for name in ordered(strace):
            r = strace[name]
            top = ", ".join(f"{s} {c:,}" for s, c in r.get("syscalls_top", [])[:4])
            md.append(
                f"| {name} | {fmt(r.get('msgs_total'))} | {fmt(r.get('syscalls'))} | "
                f"{fmt(r.get('syscalls_per_msg'), 3)} | "
                f"{fmt_ratio(ratio(r.get('syscalls_per_msg'), floor_per))} | {top} |"
            )
        md.append("")

    md.append("![server CPU per echoed message](chart.svg)\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))


def compact(v):
    """A compact number for the chart: three significant digits, no exponent."""
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def nice_max(v):
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1.0
    import math

    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= v:
            return step * exp
    return 10 * exp


def write_chart(out, meta, runs):
    panels = []
    for letter, title in SCENARIOS.items():
        scenario = runs.get(letter)
        if not scenario:
            continue
        key, unit = (
            ("kib_per_socket", "KiB per idle socket")
            if letter == "g"
            else ("server_cpu_us_per_msg", "server CPU µs per message")
        )
        bars = [(name, figure(scenario[name], key)) for name in ordered(scenario)]
        if letter == "g":
            counts = [r.get("idle_count") for r in scenario.values() if r.get("idle_count")]
            if counts:
                title = f"{max(counts):,} idle sockets"
        panels.append((f"({letter}) {title}", unit, bars))
    servers = ordered({name for _, _, bars in panels for name, _ in bars})

    cols = 4
    pw, ph = 310, 250  # panel size
    left, top = 20, 90
    rows = (len(panels) + cols - 1) // cols
    width = left * 2 + cols * pw
    height = top + rows * ph + 40
    s = []
    s.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif">'
    )
    s.append(f'<rect width="{width}" height="{height}" fill="#fff"/>')
    s.append(
        f'<text x="{left}" y="28" font-size="18" font-weight="600">'
        "WebSocket echo servers: server CPU per echoed message (a–f), "
        "server memory per idle socket (g); lower is better</text>"
    )
    s.append(
        f'<text x="{left}" y="48" font-size="12" fill="#555">'
        f"{html.escape(meta['date'])} · {html.escape(meta['cpu'])} · server pinned to one core, "
        f"1 tokio worker · {html.escape(str(meta['duration_s']))} s per scenario · "
        "a missing bar is a failed run</text>"
    )
    # Legend.
    x = left
    for name in servers:
        s.append(f'<rect x="{x}" y="60" width="12" height="12" fill="{COLORS.get(name, "#777")}"/>')
        s.append(f'<text x="{x + 16}" y="70.5" font-size="12">{html.escape(name)}</text>')
        x += 22 + 7.2 * len(name)

    for i, (title, unit, bars) in enumerate(panels):
        px = left + (i % cols) * pw
        py = top + (i // cols) * ph
        # Plot area inside the panel.
        ax, ay, aw, ah = px + 44, py + 44, pw - 60, ph - 80
        s.append(f'<text x="{px + 4}" y="{py + 18}" font-size="13" font-weight="600">{html.escape(title)}</text>')
        s.append(f'<text x="{px + 4}" y="{py + 34}" font-size="11" fill="#555">{html.escape(unit)}</text>')
        vals = [v for _, v in bars if v is not None]
        vmax = nice_max(max(vals) * 1.12 if vals else 1)
        for t in range(5):
            v = vmax * t / 4
            y = ay + ah - ah * t / 4
            s.append(f'<line x1="{ax}" y1="{y:.1f}" x2="{ax + aw}" y2="{y:.1f}" stroke="#e0e0e0"/>')
            label = compact(v)
            s.append(
                f'<text x="{ax - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#555">{label}</text>'
            )
        n = max(len(bars), 1)
        slot = aw / n
        bw = slot * 0.72
        for j, (name, v) in enumerate(bars):
            bx = ax + j * slot + (slot - bw) / 2
            color = COLORS.get(name, "#777")
            if v is None:
                s.append(
                    f'<text x="{bx + bw / 2:.1f}" y="{ay + ah - 4}" font-size="10" '
                    f'text-anchor="middle" fill="#c62828">✗</text>'
                )
                continue
            h = ah * v / vmax
            s.append(
                f'<rect x="{bx:.1f}" y="{ay + ah - h:.1f}" width="{bw:.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{html.escape(name)}: {v:.4g}</title></rect>"
            )
            s.append(
                f'<text x="{bx + bw / 2:.1f}" y="{ay + ah - h - 3:.1f}" font-size="9.5" '
                f'text-anchor="middle">{compact(v)}</text>'
            )
            short = name.removeprefix("peer-").replace("tower-websockets", "tower-ws")
            short = short.replace("fastwebsockets", "fastws").replace("tokio-websockets", "tokio-ws")
            short = short.replace("tungstenite", "tungst.")
            s.append(
                f'<text x="{bx + bw / 2:.1f}" y="{ay + ah + 13}" font-size="9.5" '
                f'text-anchor="middle" fill="#333">{html.escape(short)}</text>'
            )
        s.append(f'<line x1="{ax}" y1="{ay + ah}" x2="{ax + aw}" y2="{ay + ah}" stroke="#333"/>')
    # How to read it, in the first free panel.
    if len(panels) < rows * cols:
        i = len(panels)
        px = left + (i % cols) * pw + 4
        py = top + (i // cols) * ph + 18
        notes = [
            ("How to read it", True),
            ("CPU µs/msg: the server's utime + stime", False),
            ("over the counted window ÷ messages", False),
            ("echoed in it (/proc/PID/stat).", False),
            ("KiB/socket: server VmRSS growth ÷ sockets.", False),
            ("Server on CPU 0 (1 tokio worker),", False),
            ("load generator on CPU 1.", False),
            ("floor: no WebSocket library, no UTF-8", False),
            ("check, no limits: the measuring stick.", False),
            ("Tables and ratios: results.md.", False),
        ]
        for k, (line, bold) in enumerate(notes):
            weight = ' font-weight="600"' if bold else ""
            s.append(
                f'<text x="{px}" y="{py + 17 * k}" font-size="12"{weight} fill="#333">'
                f"{html.escape(line)}</text>"
            )
    s.append("</svg>")
    with open(os.path.join(out, "chart.svg"), "w") as f:
        f.write("\n".join(s) + "\n")


# broadcast.sh's cells, in report order: (publishers, in flight, bytes).
BROADCAST_CELLS = {
    "one-64": "1 publisher, 1 in flight, 64 B",
    "one-1k": "1 publisher, 1 in flight, 1 KiB",
    "ten-64": "10 publishers × 16 in flight, 64 B",
    "ten-1k": "10 publishers × 16 in flight, 1 KiB",
}
BROADCAST_FIGURE = "server_cpu_us_per_delivery"


def sends(run):
    """Sends (write, writev, sendto, sendmsg) per delivery of a strace run:
    loadgen attached strace -c to the server for the counted window only."""
    total, rows = parse_strace(run.get("strace_file") or "")
    run["sends"] = total
    run["sends_top"] = rows[:4]
    deliveries = run.get("deliveries") or 0
    run["sends_per_delivery"] = total / deliveries if ok(run) and total and deliveries else None
    return run["sends_per_delivery"]


def write_broadcast(raw_path, run_path, out):
    """broadcast.sh's runs → broadcast.json (every try) and broadcast.md."""
    tries = {}
    with open(raw_path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                tries.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r)
    runs = choose_runs(tries, lambda cell: BROADCAST_FIGURE)
    for cell, servers in runs.items():
        if cell.endswith("-strace"):
            for r in servers.values():
                sends(r)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "rustc": sh("rustc", "--version"),
        "pinning": "server on CPU 0 with --threads 1, loadgen on CPU 1",
    }
    if run_path and os.path.exists(run_path):
        with open(run_path) as f:
            run = json.load(f)
        meta.update({k: v for k, v in run.items() if k != "started"})
        meta["date"] = run.get("started", meta["date"])
    with open(os.path.join(out, "broadcast.json"), "w") as f:
        json.dump(
            {"meta": meta, "cells": BROADCAST_CELLS, "runs": runs, "all_tries": tries},
            f,
            indent=1,
            sort_keys=True,
        )
        f.write("\n")

    cells = [c for c in BROADCAST_CELLS if c in runs]
    servers = ordered({s for c in cells for s in runs[c]})
    subscribers = sorted({r.get("subscribers") for c in cells for r in runs[c].values()} - {None})
    md = ["# Broadcast: server CPU per delivered message\n"]
    md.append(
        f"{meta['date']} · {meta['cpu']}, {meta['cpus']} CPUs · Linux {meta['kernel']} · "
        f"{meta['rustc']} · commit {meta.get('commit', '?')}"
        f"{' (dirty)' if meta.get('dirty') else ''} · load average before the run "
        f"{' '.join(meta.get('loadavg_at_start') or ['?'])}\n"
    )
    md.append(
        f"`bash bench/broadcast.sh`: {', '.join(f'{n:,}' for n in subscribers) or '?'} "
        "subscribers on `/sub`, then the publishers on `/pub`; every message goes to every "
        "subscriber, and a publisher sends message k + W only once message k has reached all of "
        f"them (loadgen `--mode broadcast`). Each server alone, {meta['pinning']}; a fresh server "
        f"per run; {meta.get('duration_s', '?')} s counted after {meta.get('warmup_s', '?')} s "
        f"warm-up; {meta.get('rounds', '?')} rounds, the servers taking turns, each figure from "
        "the server's median round by CPU µs/delivery. A delivery is one message received by one "
        "subscriber; CPU µs/delivery is the server's utime+stime over the counted window divided "
        "by the deliveries in it. The floor (`src/bin/floor.rs`, no WebSocket library) encodes "
        "each message once and writes everything queued for a socket with one writev; every peer "
        "does its library's ordinary send per delivery from a writer task per subscriber; "
        "tower-websockets queues one `PreparedMessage` per message on every subscriber's handle "
        "(`try_send_prepared`). "
        "Text messages, checked by every subscriber (exactly once, in order per publisher, byte "
        "for byte). Lower is better.\n"
    )
    md.append("## Server CPU µs per delivery (× floor)\n")
    md.append("| server | " + " | ".join(BROADCAST_CELLS[c] for c in cells) + " |")
    md.append("| --- |" + " ---: |" * len(cells))
    for name in servers:
        row = []
        for c in cells:
            r = runs[c].get(name)
            cpu = figure(r, BROADCAST_FIGURE) if r else None
            floor = figure(runs[c].get("floor") or {}, BROADCAST_FIGURE)
            row.append(
                "failed" if r is not None and cpu is None
                else f"{fmt(cpu, 3)} ({fmt_ratio(ratio(cpu, floor))})"
            )
        md.append(f"| {name} | " + " | ".join(row) + " |")
    md.append("")

    strace_cells = [c for c in cells if f"{c}-strace" in runs]
    if strace_cells:
        md.append("## Sends per delivery (× floor)\n")
        md.append(
            "A separate, shorter run per server and cell with `strace -f -c -e "
            "trace=write,writev,sendto,sendmsg` attached to the server by loadgen (`--strace`) "
            "for the counted window only, so the handshakes and closes are not in it; strace "
            "slows the server, so only the counts of that run are kept. Sends per delivery: the "
            "calls strace counted ÷ the deliveries counted in the same window.\n"
        )
        md.append("| server | " + " | ".join(BROADCAST_CELLS[c] for c in strace_cells) + " |")
        md.append("| --- |" + " ---: |" * len(strace_cells))
        for name in servers:
            row = []
            for c in strace_cells:
                r = runs[f"{c}-strace"].get(name)
                per = r.get("sends_per_delivery") if r else None
                floor = (runs[f"{c}-strace"].get("floor") or {}).get("sends_per_delivery")
                row.append(f"{fmt(per, 3)} ({fmt_ratio(ratio(per, floor))})")
            md.append(f"| {name} | " + " | ".join(row) + " |")
        md.append("")

    for c in cells:
        md.append(f"## {BROADCAST_CELLS[c]}\n")
        md.append(
            "| server | deliveries/s | messages/s | publish → last subscriber p50 µs | p99 µs | "
            "CPU µs/delivery | user + kernel | rounds: low–high | × floor | other load | errors |"
        )
        md.append("| --- |" + " ---: |" * 10)
        floor = figure(runs[c].get("floor") or {}, BROADCAST_FIGURE)
        for name in ordered(runs[c]):
            r = runs[c][name]
            cpu = figure(r, BROADCAST_FIGURE)
            user = figure(r, "server_user_us_per_delivery")
            kernel = figure(r, "server_sys_us_per_delivery")
            md.append(
                f"| {name} | {fmt(figure(r, 'deliveries_per_s'))} | "
                f"{fmt(figure(r, 'published_per_s'))} | {fmt(figure(r, 'p50_us'), 1)} | "
                f"{fmt(figure(r, 'p99_us'), 1)} | {fmt(cpu, 3)} | "
                f"{'–' if user is None or kernel is None else f'{user:.3f} + {kernel:.3f}'} | "
                f"{spread(r)} | {fmt_ratio(ratio(cpu, floor))} | {noise(r)} | "
                f"{'failed' if r.get('failed') else r.get('errors', '–')} |"
            )
        md.append("")
    with open(os.path.join(out, "broadcast.md"), "w") as f:
        f.write("\n".join(md))


def write_engine(raw_path, out):
    """Criterion's console output → a table of median time and throughput."""
    rows, pending, last = [], None, None
    with open(raw_path) as f:
        for line in f:
            m = re.match(r"Benchmarking (\S+?)(: .*)?$", line.strip())
            if m:
                pending = m.group(1)
                continue
            m = re.match(r"^(\S*)\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
            if m:
                last = [m.group(1) or pending, m.group(2), ""]
                rows.append(last)
                continue
            m = re.match(r"^\s+thrpt:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", line)
            if m and last is not None:
                last[2] = m.group(1)
    width = max((len(r[0]) for r in rows), default=10)
    lines = [
        "# cargo bench -p tower-websockets-bench --bench engine -- --quick",
        f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} · {cpu_model()} · "
        f"{sh('rustc', '--version')} · commit {sh('git', 'rev-parse', '--short', 'HEAD')}",
        "# median of criterion's estimate; throughput in bytes of input",
        "",
        f"{'benchmark':<{width}}  {'time':>12}  {'throughput':>14}",
    ]
    for name, time, thrpt in rows:
        lines.append(f"{name:<{width}}  {time:>12}  {thrpt:>14}")
    with open(os.path.join(out, "engine.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
