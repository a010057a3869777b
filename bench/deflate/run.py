#!/usr/bin/env python3
"""permessage-deflate: tower-websockets against Node's ws, and against the
limit, in one run (issue 14's performance goal).

    python3 bench/deflate/run.py [--rounds 3] [--duration 3] [--connections 16]

Build first: cargo build --release -p tower-websockets-bench --bin
tower-websockets --bin deflate-limit. Node's ws comes from tests/peers.

For each payload (repetitive JSON of ~1 KiB and ~64 KiB, changing every
message) and each mode (context takeover, none), in every round:

- tower-websockets `--deflate` / `--deflate-no-takeover` and Node's ws
  echo server with perMessageDeflate, each pinned to CPU 0 with one
  thread, under bench/deflate/load.mjs pinned to CPU 1 (Node's ws client,
  compressing everything): the server's CPU µs per echoed message and the
  bytes on the wire per message, both ways;
- the limit: tower-websockets' uncompressed echo of the same payload (same
  client, compression off, at the pace tower-websockets kept compressing)
  plus deflate-limit's cost of inflating the
  message and compressing the reply alone (with context takeover, each of
  the connections' codecs in turn, as a server holds them), at the same
  duty cycle as tower-websockets' compressing run: the time its core idled
  per message is slept between the codec's messages.

Writes bench/results/deflate/results.{json,md}: each figure is the median
round, with the lowest and highest. Loopback only; every run is bounded.
"""

import argparse
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
LOAD = os.path.join(ROOT, "bench", "deflate", "load.mjs")
NODE_SERVER = os.path.join(ROOT, "bench", "deflate", "server.mjs")
SIZES = [1024, 65536]
MODES = ["takeover", "no-takeover"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, port):
    server = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    sys.exit(f"{command[0]} did not start")


def node_client(port, size, rate=None):
    """bench/deflate/load.mjs: Node's ws, compressing; `rate` paces it."""
    command = [
        "taskset", "-c", "1", "node", LOAD,
        "--url", f"ws://127.0.0.1:{port}/ws",
        "--size", str(size),
    ]
    if rate:
        command += ["--rate", str(int(rate))]
    return command


def rust_client(port, size):
    """deflate-load (Rust, compressing with flate2), which keeps a one-core
    server busy: no pacing of a slower client in the figure."""
    return [
        "taskset", "-c", "1", os.path.join(BIN, "deflate-load"),
        "--addr", f"127.0.0.1:{port}",
        "--payload", payload_file(size),
    ]


def server_command(server, mode, port):
    """The command line of `server` and whether it compresses."""
    if server == "tower-websockets":
        flag = "--deflate" if mode == "takeover" else "--deflate-no-takeover"
        command = [os.path.join(BIN, "tower-websockets"), "--addr", f"127.0.0.1:{port}", "--threads", "1", flag]
        deflate = True
    elif server == "node-ws":
        command = ["node", NODE_SERVER, "--port", str(port)]
        if mode == "no-takeover":
            command.append("--no-takeover")
        deflate = True
    else:  # tower-websockets without compression, for the limit
        command = [os.path.join(BIN, "tower-websockets"), "--addr", f"127.0.0.1:{port}", "--threads", "1"]
        deflate = False
    return command, deflate


def measure(server, size, mode, args, client=node_client, **client_args):
    """`server` under `client` (with the flags both clients take): its
    JSON result."""
    port = free_port()
    command, deflate = server_command(server, mode, port)
    process = start(command, port)
    try:
        load = client(port, size, **client_args) + [
            "--server-pid", str(process.pid),
            "--connections", str(args.connections),
            "--duration", str(args.duration),
            "--warmup", str(args.warmup),
        ]
        if mode == "no-takeover":
            load.append("--no-takeover")
        if not deflate:
            load.append("--no-deflate")
        out = subprocess.run(load, capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
        if out.returncode != 0:
            sys.exit(f"{client.__name__} failed: {out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        # deflate-load fails on a mismatch; load.mjs counts them.
        if result.get("errors"):
            sys.exit(f"echo mismatches: {result}")
        return result
    finally:
        process.kill()
        process.wait()


@functools.cache
def payload_file(size):
    """The load's JSON payload of about `size` bytes, written once."""
    path = f"/tmp/tower-websockets-deflate-{size}.json"
    subprocess.run(["node", LOAD, "--dump", path, "--size", str(size)], check=True)
    return path


def codec(size, mode, sockets, gap_us):
    command = [
        os.path.join(BIN, "deflate-limit"), payload_file(size),
        "--count", "20000" if size < 10000 else "2000",
        "--sockets", str(sockets),
        "--gap-us", str(int(gap_us)),
    ]
    if mode == "no-takeover":
        command.append("--no-takeover")
    out = subprocess.run(["taskset", "-c", "0", *command], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


SERVERS = ["tower-websockets", "node-ws", "uncompressed"]


def row(runs, size, mode, prefix):
    """One table row from the rounds of `prefix`-named runs."""
    cpu = {
        server: summary([r["server_cpu_us_per_msg"] for r in runs[(size, mode, prefix + server)]])
        for server in SERVERS
    }
    wire = {
        server: statistics.median([r["wire_bytes_per_msg"] for r in runs[(size, mode, prefix + server)]])
        for server in SERVERS
    }
    codec_us = statistics.median([r["codec_us_per_msg"] for r in runs[(size, mode, prefix + "codec")]])
    limit = cpu["uncompressed"]["median"] + codec_us
    return {
        "size": size,
        "payload_bytes": runs[(size, mode, prefix + "codec")][0]["payload_bytes"],
        "mode": mode,
        "cpu": cpu,
        "wire": wire,
        "codec_us": codec_us,
        "limit_us": limit,
        "vs_limit": cpu["tower-websockets"]["median"] / limit,
        "vs_node": cpu["tower-websockets"]["median"] / cpu["node-ws"]["median"],
        "extensions": runs[(size, mode, prefix + "tower-websockets")][0]["extensions"],
    }


def table(rows):
    lines = [
        "| payload | mode | tower-websockets µs | Node ws µs | uncompressed echo µs | codec alone µs | limit µs | ÷ limit | ÷ Node ws | wire B/msg: ours / Node ws / uncompressed |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        c = row["cpu"]
        lines.append(
            f"| {row['payload_bytes']:,} B JSON | {row['mode']} | "
            f"{c['tower-websockets']['median']:.2f} ({c['tower-websockets']['low']:.2f}–{c['tower-websockets']['high']:.2f}) | "
            f"{c['node-ws']['median']:.2f} ({c['node-ws']['low']:.2f}–{c['node-ws']['high']:.2f}) | "
            f"{c['uncompressed']['median']:.2f} | {row['codec_us']:.2f} | {row['limit_us']:.2f} | "
            f"{row['vs_limit']:.2f}× | {row['vs_node']:.2f}× | "
            f"{row['wire']['tower-websockets']:,.0f} / {row['wire']['node-ws']:,.0f} / {row['wire']['uncompressed']:,.0f} |"
        )
    return lines


def summary(values):
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--results", default=os.path.join(ROOT, "bench", "results", "deflate"))
    args = parser.parse_args()
    runs = {}
    for round in range(args.rounds):
        for size in SIZES:
            for mode in MODES:
                for server in SERVERS:
                    # The uncompressed echo runs at the pace tower-websockets
                    # kept compressing (a server's CPU per message depends on
                    # its pace: at a slower one it wakes up more per message).
                    rate = None
                    if server == "uncompressed":
                        rate = runs[(size, mode, "tower-websockets")][-1]["msgs_per_s"]
                    result = measure(server, size, mode, args, rate=rate)
                    runs.setdefault((size, mode, server), []).append(result)
                    print(f"round {round + 1} {size} {mode} {server}: {result}", flush=True)
                # The codec alone at tower-websockets' duty cycle: the time
                # its core idled per message (waiting for the client) is
                # slept between the codec's messages, untimed. A core that
                # idles between messages runs them slower (deflate-limit
                # --gap-us: 64 KiB with takeover, 64.6 µs with no gap, 90.4
                # with 600 µs).
                ours = runs[(size, mode, "tower-websockets")][-1]
                gap = max(0.0, 1e6 / ours["msgs_per_s"] - ours["server_cpu_us_per_msg"])
                result = codec(size, mode, args.connections, gap)
                runs.setdefault((size, mode, "codec"), []).append(result)
                print(f"round {round + 1} {size} {mode} codec: {result}", flush=True)
                # The same servers kept busy by the Rust client, and the
                # codec alone without a gap.
                for server in SERVERS:
                    result = measure(server, size, mode, args, client=rust_client)
                    runs.setdefault((size, mode, "busy " + server), []).append(result)
                    print(f"round {round + 1} {size} {mode} busy {server}: {result}", flush=True)
                result = codec(size, mode, args.connections, 0)
                runs.setdefault((size, mode, "busy codec"), []).append(result)
                print(f"round {round + 1} {size} {mode} busy codec: {result}", flush=True)
    rows = [row(runs, size, mode, "") for size in SIZES for mode in MODES]
    busy_rows = [row(runs, size, mode, "busy ") for size in SIZES for mode in MODES]
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "results.json"), "w") as f:
        json.dump(
            {"rounds": args.rounds, "duration": args.duration, "connections": args.connections,
             "rows": rows, "busy_rows": busy_rows},
            f, indent=1,
        )
    lines = [
        "# permessage-deflate: tower-websockets, Node's ws and the limit",
        "",
        f"`python3 bench/deflate/run.py --rounds {args.rounds} --duration {args.duration} --connections {args.connections}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Servers on CPU 0 with one thread, Node's ws client "
        "(bench/deflate/load.mjs, compressing everything) on CPU 1. CPU µs per echoed message: the server's "
        "utime+stime over the counted window ÷ messages; the median round, lowest–highest beside it. Wire: bytes "
        "on the wire per message, both ways. Limit: tower-websockets' uncompressed echo of the same payload "
        "(same client, compression off, at the pace tower-websockets kept compressing) plus the codec alone (deflate-limit: inflate the message, compress the reply; "
        "with context takeover, one codec pair per connection in turn; between messages it sleeps as long as "
        "tower-websockets' core idled per message, since an idling core runs the codec slower). The client (Node's ws, compressing) is the "
        "bottleneck: the servers wait for it between messages, so kernel time per message is high in every row.",
        "",
        *table(rows),
        "",
        "Kept busy: the same servers under bench/src/bin/deflate-load.rs (Rust, flate2 level 6, one message in "
        "flight per connection, checking every echo) on CPU 1, which keeps the server's core busy, so no pacing "
        "of the client is in the figures. Limit: tower-websockets' uncompressed echo under the same client plus "
        "the codec alone with no gap.",
        "",
        *table(busy_rows),
    ]
    with open(os.path.join(args.results, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
