#!/usr/bin/env bash
# bench/callgrind.sh — user-space instructions per echoed message of one
# echo server build, counted by callgrind (repeatable whatever else the
# machine is doing, unlike timings).
#
#   bash bench/callgrind.sh NAME SERVER_BINARY [LOADGEN ARGS...]
#
# Starts SERVER_BINARY (`--addr 127.0.0.1:PORT --threads 1 --mode message`,
# as examples/echo and bench's tower-websockets take) under
# `valgrind --tool=callgrind`, drives it with target/release/loadgen (build
# it first: `cargo build --release -p tower-websockets-bench --bin
# loadgen`), stops it with SIGTERM (a background job of a script ignores
# SIGINT) and prints the program's instructions ÷
# the messages echoed (warm-up included; start-up and handshakes are a
# fraction of a percent of a 3 s run). Outputs go to target/callgrind/.
# Before/after: run it on two builds, e.g. examples/echo built at another
# commit in a `git worktree` with its own CARGO_TARGET_DIR.
#
# Example: bash bench/callgrind.sh after target/release/examples/echo \
#              --connections 64 --size 16 --duration 3 --warmup 1
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
bin=$2
shift 2
[[ $# -gt 0 ]] || set -- --connections 64 --size 16 --duration 3 --warmup 1
out=target/callgrind
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" \
    "$bin" --addr "127.0.0.1:$port" --threads 1 --mode message > "$out/$name.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done
target/release/loadgen --addr "127.0.0.1:$port" "$@" 2>/dev/null | head -1 > "$out/$name.json"
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
total=$(grep -m1 '^summary:' "$out/$name.out" | awk '{print $2}')
msgs=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['msgs_total'])" "$out/$name.json")
echo "$name: $total instructions / $msgs messages = $((total / msgs)) per message"
