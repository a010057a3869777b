#!/usr/bin/env python3
"""bench/copy_alignment.py: what the kernel's receive copy costs, by where
the destination sits in its page.

A sender on CPU 1 writes COUNT messages of 1 MiB over loopback TCP, each one
into a connection whose previous data was consumed, so the kernel often
(when the previous data's pages were freed in time) copies each from the
start of a page. A receiver on CPU 0 reads them into a buffer that
starts OFFSET bytes into a page, and reports its system CPU time per MiB
received (getrusage), the median of ROUNDS runs per offset.

The tower-websockets socket places large incoming messages half a page away
from the sender's offset (src/socket/spare.rs, `place`); this measures why:
a destination a few bytes after the source modulo 4 KiB makes the copy's
stores alias the loads that follow them.

    python3 bench/copy_alignment.py                  # offsets 0 2 6 16 64 2048 2054
    python3 bench/copy_alignment.py --count 500 --rounds 5 --offsets 0 6 2054

Linux only (CPU affinity); loopback only; bounded by COUNT.
"""

import argparse
import ctypes
import os
import resource
import socket
import statistics

MIB = 1 << 20
PAGE = 4096


def sender(port, count):
    os.sched_setaffinity(0, {1})
    conn = socket.create_connection(("127.0.0.1", port))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = memoryview(bytearray(b"\x5a" * MIB))
    for _ in range(count):
        conn.sendall(message)
        # Wait for the receiver's one-byte acknowledgement: the next message
        # goes into a drained connection, as in a closed-loop echo.
        if not conn.recv(1):
            break
    conn.close()


def receive(offset, count):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        try:
            sender(port, count)
        finally:
            os._exit(0)
    os.sched_setaffinity(0, {0})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    backing = bytearray(MIB + 2 * PAGE)
    # The address of the bytearray's storage, to place the buffer in a page.
    base = ctypes.addressof((ctypes.c_char * len(backing)).from_buffer(backing))
    start = (-base) % PAGE + offset
    view = memoryview(backing)[start : start + MIB]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for _ in range(count):
        got = 0
        while got < MIB:
            n = conn.recv_into(view[got:], MIB - got)
            if n == 0:
                raise SystemExit("sender closed early")
            got += n
        conn.sendall(b"k")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    del view
    conn.close()
    listener.close()
    os.waitpid(pid, 0)
    return (after - before) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="messages per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per offset")
    parser.add_argument(
        "--offsets", type=int, nargs="+", default=[0, 2, 6, 16, 64, 2048, 2054]
    )
    args = parser.parse_args()
    if os.cpu_count() < 2:
        raise SystemExit("needs two CPUs")
    results = {offset: [] for offset in args.offsets}
    # Offsets take turns within each round, so a slow spell hits them alike.
    for _ in range(args.rounds):
        for offset in args.offsets:
            results[offset].append(receive(offset, args.count))
    print("| destination offset in its page | system µs per MiB received (median) | runs |")
    print("| ---: | ---: | --- |")
    for offset, runs in results.items():
        shown = " ".join(f"{r:.0f}" for r in runs)
        print(f"| {offset} | {statistics.median(runs):.0f} | {shown} |")


if __name__ == "__main__":
    main()
