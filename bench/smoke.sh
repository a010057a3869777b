#!/usr/bin/env bash
# bench/smoke.sh — the benchmark suite's CI smoke pass: correctness, no timings.
#
# Builds the suite (loadgen, the floor, the tower-websockets server and the
# four peer servers) in release, then for every server: start it on a
# free 127.0.0.1 port, run loadgen for about a second in echo mode with a
# couple of connections — binary, --text (multi-byte UTF-8), pipeline 4,
# and 1 MiB messages — plus a few idle sockets, and fail if any echo
# mismatches or any connection errors. Every server with a broadcast role
# (BROADCAST_SERVERS in servers.sh) also runs loadgen --mode broadcast with
# 50 subscribers, one publisher and then three with 4 in flight, and fails
# on any lost, repeated, reordered or corrupt delivery. No figure is
# asserted.
#
#   bash bench/smoke.sh            # from the repository root or anywhere
#   SMOKE_SECS=0.5 bash bench/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
SECS="${SMOKE_SECS:-1}"
LOG_DIR="$CARGO_TARGET_DIR/bench-smoke"
mkdir -p "$LOG_DIR"

echo "==> building the suite (release)"
cargo build --release -p tower-websockets-bench --bins

echo "==> loadgen self-tests (frame parsing, mismatch detection)"
cargo test --release -p tower-websockets-bench --bin loadgen --quiet

# shellcheck source=bench/servers.sh
source bench/servers.sh
SERVERS=("${ALL_SERVERS[@]}")

# loadgen runs: each a line of arguments.
RUNS=(
    "--connections 2 --size 16"
    "--connections 2 --size 1000 --text"
    "--connections 2 --size 16 --pipeline 4"
    "--connections 2 --size 20000 --text --pipeline 2"
    "--connections 1 --size 1048576"
    "--mode idle --idle-count 50 --idle-hold 0.2"
)

trap stop_server EXIT

failures=0
passed=0

# smoke_runs NAME LOADGEN-MODE-ARGS RUN...: a fresh server NAME (two
# worker threads, not pinned), then loadgen once per RUN against it.
smoke_runs() {
    local name=$1 mode=$2 port log run
    shift 2
    port=$(free_port)
    log="$LOG_DIR/$name.log"
    # shellcheck disable=SC2086 # server arguments are meant to split
    "${SERVER_BIN[$name]}" --addr "127.0.0.1:$port" --threads 2 ${SERVER_ARGS[$name]:-} >"$log" 2>&1 &
    server_pid=$!
    if ! wait_for_port "$port"; then
        echo "FAIL $name: server did not start; its log:" >&2
        cat "$log" >&2
        stop_server
        failures=$((failures + 1))
        return
    fi
    for run in "$@"; do
        # shellcheck disable=SC2086 # the mode's and run's arguments are meant to split
        if timeout 60 "$BIN/loadgen" $mode --addr "127.0.0.1:$port" --label "$name" \
            $run --duration "$SECS" --warmup 0.1 >/dev/null 2>"$LOG_DIR/loadgen.err"; then
            echo "ok   $name: ${mode:+$mode }$run"
            passed=$((passed + 1))
        else
            echo "FAIL $name: ${mode:+$mode }$run" >&2
            cat "$LOG_DIR/loadgen.err" >&2
            failures=$((failures + 1))
        fi
    done
    stop_server
}

for name in "${SERVERS[@]}"; do
    smoke_runs "$name" "" "${RUNS[@]}"
done

# The broadcast scenario: every delivery is checked by every subscriber.
BROADCAST_RUNS=(
    "--subscribers 50 --size 64 --text"
    "--subscribers 50 --publishers 3 --in-flight 4 --size 1000"
)
for name in "${BROADCAST_SERVERS[@]}"; do
    smoke_runs "$name" "--mode broadcast" "${BROADCAST_RUNS[@]}"
done

# permessage-deflate: bench/deflate's Node client and deflate-load against
# tower-websockets and Node's ws server, every mode, a fraction of a second
# each (the echoes are checked; no timing is asserted). Needs Node's ws from tests/peers.
deflate_runs=(
    "tower-websockets --deflate|"
    "tower-websockets --deflate-no-takeover|--no-takeover"
    "node-ws|"
    "node-ws --no-takeover|--no-takeover"
)
for entry in "${deflate_runs[@]}"; do
    server_spec=${entry%%|*}
    client_flags=${entry#*|}
    port=$(free_port)
    log="$LOG_DIR/deflate.log"
    read -r -a server_words <<< "$server_spec"
    case "${server_words[0]}" in
        tower-websockets)
            "$BIN/tower-websockets" --addr "127.0.0.1:$port" --threads 2 "${server_words[@]:1}" >"$log" 2>&1 &
            ;;
        node-ws)
            node bench/deflate/server.mjs --port "$port" "${server_words[@]:1}" >"$log" 2>&1 &
            ;;
    esac
    server_pid=$!
    if ! wait_for_port "$port"; then
        echo "FAIL deflate $server_spec: server did not start" >&2
        cat "$log" >&2
        stop_server
        failures=$((failures + 1))
        continue
    fi
    for size in 1024 65536; do
        # shellcheck disable=SC2086 # the client flags are meant to split
        if out=$(timeout 60 node bench/deflate/load.mjs --url "ws://127.0.0.1:$port/ws" \
            --server-pid "$server_pid" --size "$size" --connections 2 --duration 0.3 --warmup 0.1 \
            $client_flags) && [[ "$out" == *'"errors":0'* && "$out" == *'"extensions":"permessage-deflate'* ]]; then
            echo "ok   deflate $server_spec: $size bytes $client_flags"
            passed=$((passed + 1))
        else
            echo "FAIL deflate $server_spec: $size bytes $client_flags: $out" >&2
            failures=$((failures + 1))
        fi
        # The Rust client that keeps a server busy (deflate-load).
        # shellcheck disable=SC2086
        if out=$(timeout 60 "$BIN/deflate-load" --addr "127.0.0.1:$port" --server-pid "$server_pid" \
            --payload <(node bench/deflate/load.mjs --dump /dev/stdout --size "$size") \
            --connections 2 --duration 0.3 --warmup 0.1 $client_flags) \
            && [[ "$out" == *'"extensions":"permessage-deflate'* ]]; then
            echo "ok   deflate-load $server_spec: $size bytes $client_flags"
            passed=$((passed + 1))
        else
            echo "FAIL deflate-load $server_spec: $size bytes $client_flags: ${out:-}" >&2
            failures=$((failures + 1))
        fi
    done
    stop_server
done
port=$(free_port)
"$BIN/tower-websockets" --addr "127.0.0.1:$port" --threads 2 --deflate >"$LOG_DIR/deflate.log" 2>&1 &
server_pid=$!
if wait_for_port "$port" && out=$(timeout 60 node bench/deflate/idle.mjs --url "ws://127.0.0.1:$port/ws" \
    --server-pid "$server_pid" --count 5) && [[ "$out" == *kib_per_socket* ]]; then
    echo "ok   deflate idle sockets"
    passed=$((passed + 1))
else
    echo "FAIL deflate idle sockets: ${out:-}" >&2
    failures=$((failures + 1))
fi
stop_server
if out=$("$BIN/deflate-limit" /dev/stdin --count 10 < <(node bench/deflate/load.mjs --dump /dev/stdout --size 1024)) \
    && [[ "$out" == *codec_us_per_msg* ]]; then
    echo "ok   deflate-limit"
    passed=$((passed + 1))
else
    echo "FAIL deflate-limit: $out" >&2
    failures=$((failures + 1))
fi

echo "$passed passed, $failures failed"
[[ $failures -eq 0 && $passed -gt 0 ]]
