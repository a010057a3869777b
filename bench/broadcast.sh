#!/usr/bin/env bash
# bench/broadcast.sh — server CPU per delivered message when one message
# goes to many sockets: tower-websockets and every Rust peer against the
# floor.
#
# Builds the suite in release, then for each cell and each server in turn:
# starts a fresh server pinned to CPU 0 (`taskset -c 0 ... --threads 1`)
# and runs loadgen --mode broadcast pinned to CPU 1: SUBSCRIBERS sockets on
# /sub, then the publishers on /pub, each keeping W messages in flight
# (message k + W goes out once message k reached every subscriber). loadgen
# reads the server's utime+stime at the exact start and end of the counted
# window, so CPU per delivery (one message received by one subscriber)
# comes from the same moments as the delivery count. The cells:
#
#   one-64   1 publisher, 1 in flight, 64 B text
#   one-1k   1 publisher, 1 in flight, 1 KiB text
#   ten-64   10 publishers, 16 in flight each, 64 B text
#   ten-1k   10 publishers, 16 in flight each, 1 KiB text
#
# At the end bench/report.py writes bench/results/broadcast.{json,md}: CPU
# µs per delivery of each server's median round and its ratio to the floor
# in the same run. With --strace, also one extra run per server and cell
# (round 1) in which loadgen attaches `strace -f -c -e
# trace=write,writev,sendto,sendmsg` to the server for the counted window
# only: sends per delivery.
#
#   bash bench/broadcast.sh                   # 3 rounds of 5 s runs
#   SERVERS="floor peer-tungstenite" ROUNDS=1 DURATION=2 bash bench/broadcast.sh
#   CELLS="ten-64" bash bench/broadcast.sh --strace
#
# Environment: ROUNDS (default 3), DURATION (s, default 5), WARMUP (s,
# default 1), SUBSCRIBERS (default 1000), SERVERS (default: every server
# with a broadcast role, BROADCAST_SERVERS in servers.sh), CELLS (default all four),
# STRACE=1 (same as --strace), STRACE_DURATION (s, default 2), RESULTS
# (output directory, default bench/results), NOISE_LIMIT (default 10: % of
# one CPU that other processes may use during a run before it is tried
# again), TRIES (default 3), QUIET_WAIT (s to wait for a quiet machine
# before each run, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."

STRACE="${STRACE:-0}"
for arg in "$@"; do
    case "$arg" in
        --strace) STRACE=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
# shellcheck source=bench/servers.sh
source bench/servers.sh

SERVERS=(${SERVERS:-${BROADCAST_SERVERS[*]}})
CELLS=(${CELLS:-one-64 one-1k ten-64 ten-1k})
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
SUBSCRIBERS="${SUBSCRIBERS:-1000}"
STRACE_DURATION="${STRACE_DURATION:-2}"
RESULTS="${RESULTS:-bench/results}"
NOISE_LIMIT="${NOISE_LIMIT:-10}"
TRIES="${TRIES:-3}"
ROUNDS="${ROUNDS:-3}"
QUIET_WAIT="${QUIET_WAIT:-30}"
SERVER_CPU=0
CLIENT_CPU=1

declare -A CELL_ARGS=(
    [one-64]="--publishers 1 --in-flight 1 --size 64 --text"
    [one-1k]="--publishers 1 --in-flight 1 --size 1024 --text"
    [ten-64]="--publishers 10 --in-flight 16 --size 64 --text"
    [ten-1k]="--publishers 10 --in-flight 16 --size 1024 --text"
)
for cell in "${CELLS[@]}"; do
    if [[ -z "${CELL_ARGS[$cell]:-}" ]]; then
        echo "unknown cell $cell (one of: ${!CELL_ARGS[*]})" >&2
        exit 2
    fi
done

if [[ $(nproc) -lt 2 ]]; then
    echo "broadcast.sh needs two CPUs (server on one, loadgen on the other)" >&2
    exit 1
fi
if [[ "$STRACE" == 1 ]] && ! command -v strace >/dev/null; then
    echo "--strace needs strace (apt-get install -y strace)" >&2
    exit 1
fi
# 1,000 subscribers need 1,000 descriptors on each side.
ulimit -n "$(ulimit -Hn)"

LOADAVG_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

echo "==> building the suite (release)"
cargo build --release -p tower-websockets-bench --bins

mkdir -p "$RESULTS"
LOG_DIR="$CARGO_TARGET_DIR/bench-broadcast"
mkdir -p "$LOG_DIR"
RAW="$LOG_DIR/raw.jsonl"
RUN_JSON="$LOG_DIR/run.json"
: >"$RAW"
# What was measured, fixed now: the tree may change while this runs.
python3 - "$RUN_JSON" <<PY
import json, subprocess, sys, datetime
def sh(*c):
    return subprocess.run(c, capture_output=True, text=True).stdout.strip()
json.dump({
    "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": sh("git", "rev-parse", "--short", "HEAD"),
    # The results directory itself does not count: this run rewrites it.
    "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no",
                     "--", ".", ":(exclude)$RESULTS")),
    "loadavg_at_start": "$LOADAVG_AT_START".split(),
    "duration_s": "$DURATION",
    "warmup_s": "$WARMUP",
    "rounds": "$ROUNDS",
    "subscribers": "$SUBSCRIBERS",
    "strace_duration_s": "$STRACE_DURATION" if "$STRACE" == "1" else None,
}, open(sys.argv[1], "w"), indent=1)
PY

trap stop_server EXIT
trap 'exit 130' INT TERM

# measure NAME CELL LABEL DURATION [LOADGEN ARGS...]: one run against a
# fresh server; sets json to loadgen's JSON (empty if it printed none).
measure() {
    local name=$1 cell=$2 label=$3 duration=$4 port
    shift 4
    json=""
    port=$(free_port)
    if ! start_server "$name" "$port"; then
        echo "   $name: server did not start (see $LOG_DIR/$name.log)" >&2
        stop_server
        return 0
    fi
    # shellcheck disable=SC2086 # cell arguments are meant to split
    json=$(timeout "$limit" taskset -c "$CLIENT_CPU" "$BIN/loadgen" --mode broadcast \
        --addr "127.0.0.1:$port" --label "$label" --server-pid "$server_pid" \
        --subscribers "$SUBSCRIBERS" ${CELL_ARGS[$cell]} --duration "$duration" \
        --warmup "$WARMUP" "$@" 2>"$LOG_DIR/loadgen.err") || true
    sed 's/^/   /' "$LOG_DIR/loadgen.err" >&2
    stop_server
}

busy=$(machine_busy_pct)
if [[ $busy -gt $NOISE_LIMIT ]]; then
    echo "warning: other processes use $busy% of a CPU (load average $LOADAVG_AT_START);" \
        "runs will wait for quiet moments and be tried again when disturbed" >&2
fi

# Keep a run from hanging the whole comparison.
limit=$(python3 -c "print(int($DURATION + $WARMUP + 90))")

# Rounds: every server runs every cell once per round, servers taking turns
# within a cell, so a slow spell of this machine hits them alike.
for round in $(seq "$ROUNDS"); do
    for cell in "${CELLS[@]}"; do
        echo "==> round $round of $ROUNDS, cell $cell"
        for name in "${SERVERS[@]}"; do
            # Wait for a quiet moment, and run again (at most TRIES times)
            # when loadgen saw other load above NOISE_LIMIT in the window.
            for try in $(seq "$TRIES"); do
                wait_for_quiet
                measure "$name" "$cell" "$name/$cell" "$DURATION"
                record "$name" "$cell" "$json" "{\"try\": $try, \"round\": $round}"
                if ! python3 -c 'import json,sys; o=json.loads(sys.argv[1] or "{}").get("other_cpu_pct"); sys.exit(0 if o is not None and o > float(sys.argv[2]) else 1)' \
                    "$json" "$NOISE_LIMIT"; then
                    break
                fi
                [[ $try -lt $TRIES ]] && echo "   (other load above $NOISE_LIMIT% of a CPU: again)" >&2
            done

            if [[ "$STRACE" == 1 && "$round" == 1 ]]; then
                # Sends per delivery: strace slows the server, so this is a
                # separate run whose other figures are thrown away.
                trace="$LOG_DIR/strace-$name-$cell.txt"
                rm -f "$trace"
                measure "$name" "$cell" "$name/$cell-strace" "$STRACE_DURATION" --strace "$trace"
                if [[ -n "$json" && -s "$trace" ]]; then
                    record "$name" "$cell-strace" "$json"
                else
                    echo "   $cell (strace): no strace summary for $name" >&2
                fi
            fi
        done
    done
done

python3 bench/report.py --broadcast "$RAW" --run "$RUN_JSON" --out "$RESULTS"
echo "==> wrote $RESULTS/broadcast.json, $RESULTS/broadcast.md"
