#!/usr/bin/env python3
"""Server memory under two attacks, measured from outside (loopback only).

    python3 bench/hostile_rss.py ping-flood SERVER_BINARY [--pings N]
    python3 bench/hostile_rss.py stalled-handshakes SERVER_BINARY
        [--count N] [--header-kib K] [--hold S]

SERVER_BINARY is an echo server taking `--addr 127.0.0.1:PORT` (such as
target/release/examples/echo, or one built at another commit for a
before/after). The script starts it on a free port with `--threads 1`,
reads its VmRSS from /proc before and after the attack, prints one JSON
line and stops it.

ping-flood: one WebSocket client sends N pings of 125 bytes as fast as
it can and never reads (issue 13's case 1), then the script waits until
the server's CPU time stops moving (it has read everything).

stalled-handshakes: N connections each send K KiB of request headers
and never finish them (issue 13's case 2); the script holds them S
seconds and reports the RSS at the end and how many connections the
server had closed by then.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def start(binary, port):
    server = subprocess.Popen(
        [binary, "--addr", f"127.0.0.1:{port}", "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.2)
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    sys.exit("the server did not start")


def handshake(port):
    tcp = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    tcp.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = tcp.recv(4096)
        if not chunk:
            sys.exit("the server closed the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        sys.exit(f"handshake refused: {response[:40]!r}")
    return tcp


def ping_flood(binary, pings):
    port = free_port()
    server = start(binary, port)
    try:
        tcp = handshake(port)
        before = rss_kib(server.pid)
        # Masked pings (zero mask), 1,000 to a write.
        ping = bytes([0x89, 0x80 | 125, 0, 0, 0, 0]) + b"\x5a" * 125
        chunk = ping * 1000
        start_time = time.time()
        for _ in range(pings // 1000):
            tcp.sendall(chunk)
        sent_in = time.time() - start_time
        # The server has read everything once its CPU time stops moving.
        last = cpu_ticks(server.pid)
        while True:
            time.sleep(0.5)
            now = cpu_ticks(server.pid)
            if now == last:
                break
            last = now
        after = rss_kib(server.pid)
        tcp.close()
        return {
            "attack": "ping-flood",
            "server": binary,
            "pings": pings,
            "sent_in_s": round(sent_in, 2),
            "rss_before_mib": round(before / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "rss_growth_mib": round((after - before) / 1024, 1),
        }
    finally:
        server.kill()
        server.wait()


def stalled_handshakes(binary, count, header_kib, hold):
    port = free_port()
    server = start(binary, port)
    try:
        before = rss_kib(server.pid)
        header = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
        body = header + line * (header_kib * 1024 // len(line))
        clients = []
        for _ in range(count):
            tcp = socket.create_connection(("127.0.0.1", port))
            tcp.setblocking(False)
            clients.append([tcp, 0])
        # Send each client's headers (never the blank line that ends them),
        # as far as the server takes them, until the hold is over.
        start_time = time.time()
        peak = before
        while time.time() - start_time < hold:
            progressed = False
            for client in clients:
                tcp, sent = client
                if sent < len(body) and tcp.fileno() != -1:
                    try:
                        n = tcp.send(body[sent : sent + 65536])
                        client[1] += n
                        progressed = progressed or n > 0
                    except BlockingIOError:
                        pass
                    except OSError:
                        tcp.close()
            peak = max(peak, rss_kib(server.pid))
            if not progressed:
                time.sleep(0.1)
        after = rss_kib(server.pid)
        closed = 0
        for tcp, _ in clients:
            if tcp.fileno() == -1:
                closed += 1
                continue
            # Closed: the server's answer (431, 408), if any, then EOF.
            try:
                while True:
                    if tcp.recv(65536) == b"":
                        closed += 1
                        break
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            tcp.close()
        return {
            "attack": "stalled-handshakes",
            "server": binary,
            "connections": count,
            "header_kib": header_kib,
            "hold_s": hold,
            "rss_before_mib": round(before / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_end_mib": round(after / 1024, 1),
            "closed_by_server": closed,
        }
    finally:
        server.kill()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="attack", required=True)
    flood = sub.add_parser("ping-flood")
    flood.add_argument("binary")
    flood.add_argument("--pings", type=int, default=10_000_000)
    stalled = sub.add_parser("stalled-handshakes")
    stalled.add_argument("binary")
    stalled.add_argument("--count", type=int, default=1000)
    stalled.add_argument("--header-kib", type=int, default=375)
    stalled.add_argument("--hold", type=float, default=15)
    args = parser.parse_args()
    if args.attack == "ping-flood":
        result = ping_flood(args.binary, args.pings)
    else:
        result = stalled_handshakes(args.binary, args.count, args.header_kib, args.hold)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
