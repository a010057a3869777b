#!/usr/bin/env bash
# bench/compare.sh — tower-websockets against the floor and every Rust peer.
#
# Builds the suite (its servers and loadgen) in release, then for each
# server in turn and each scenario: starts a fresh server pinned to CPU 0
# (`taskset -c 0 ... --threads 1`), runs loadgen pinned to CPU 1, and
# records loadgen's JSON. loadgen itself reads the server's utime+stime
# from /proc/PID/stat at the exact start and end of the counted window
# (and VmRSS around opening the idle sockets), so CPU per echoed message
# and KiB per idle socket come from the same moments as the message count.
# At the end bench/report.py writes bench/results/results.{json,md} and
# chart.svg.
#
#   bash bench/compare.sh                     # everything, 3 rounds of 5 s runs
#   ROUNDS=1 DURATION=2 WARMUP=0.5 bash bench/compare.sh
#   SERVERS="floor tower-websockets" SCENARIOS="b c" bash bench/compare.sh
#   bash bench/compare.sh --strace            # also syscalls/msg for (c)
#
# Environment: ROUNDS (default 3: every server runs every scenario once per
# round, taking turns; the report shows each one's median round),
# DURATION (s, default 5), WARMUP (s, default 1), IDLE_COUNT
# (default 10000), IDLE_HOLD (s, default 3), SERVERS, SCENARIOS (letters
# a-g), RESULTS (output directory, default bench/results), STRACE=1 (same
# as --strace), NOISE_LIMIT (default 10: % of one CPU that other processes
# may use during a run before it is tried again), TRIES (default 3),
# QUIET_WAIT (s to wait for a quiet machine before each run, default 30),
# BASELINE (a tower-websockets binary from another commit, or an
# examples/echo from before the bench had one: adds the server
# tower-websockets-baseline, for a before/after in one run).
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
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
IDLE_COUNT="${IDLE_COUNT:-10000}"
IDLE_HOLD="${IDLE_HOLD:-3}"
RESULTS="${RESULTS:-bench/results}"
# shellcheck source=bench/servers.sh
source bench/servers.sh
SERVERS=(${SERVERS:-${ALL_SERVERS[*]}})
SCENARIOS=(${SCENARIOS:-a b c d e f g})
NOISE_LIMIT="${NOISE_LIMIT:-10}"
TRIES="${TRIES:-3}"
ROUNDS="${ROUNDS:-3}"
QUIET_WAIT="${QUIET_WAIT:-30}"
SERVER_CPU=0
CLIENT_CPU=1

declare -A SCENARIO_ARGS=(
    [a]="--connections 1 --size 16"
    [b]="--connections 64 --size 16"
    [c]="--connections 64 --size 16 --pipeline 16"
    [d]="--connections 64 --size 1024 --text"
    [e]="--connections 64 --size 16384"
    [f]="--connections 4 --size 1048576"
    [g]="--mode idle --idle-count $IDLE_COUNT --idle-hold $IDLE_HOLD"
)

if [[ $(nproc) -lt 2 ]]; then
    echo "compare.sh needs two CPUs (server on one, loadgen on the other)" >&2
    exit 1
fi
if [[ "$STRACE" == 1 ]] && ! command -v strace >/dev/null; then
    echo "--strace needs strace (apt-get install -y strace)" >&2
    exit 1
fi
# 10,000 idle sockets need 10,000 descriptors on each side.
ulimit -n "$(ulimit -Hn)"

# The CPU figures only mean something on an otherwise idle machine.
LOADAVG_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
export LOADAVG_AT_START

echo "==> building the suite (release)"
cargo build --release -p tower-websockets-bench --bins

mkdir -p "$RESULTS"
RAW="$RESULTS/raw.jsonl"
LOG_DIR="$CARGO_TARGET_DIR/bench-compare"
mkdir -p "$LOG_DIR"
: >"$RAW"
# What was measured, fixed now: the tree may change while this runs.
python3 - "$RESULTS/run.json" <<PY
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
    "rounds": "$ROUNDS",
    "warmup_s": "$WARMUP",
}, open(sys.argv[1], "w"), indent=1)
PY

server_pid=""
strace_pid=""
# stop_server, as servers.sh has it, and the strace attached to it.
stop_server() {
    if [[ -n "$strace_pid" ]]; then
        kill -INT "$strace_pid" 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
        strace_pid=""
    fi
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

busy=$(machine_busy_pct)
if [[ $busy -gt $NOISE_LIMIT ]]; then
    echo "warning: other processes use $busy% of a CPU (load average $LOADAVG_AT_START);" \
        "runs will wait for quiet moments and be tried again when disturbed" >&2
fi

# Keep a run from hanging the whole comparison.
limit=$(python3 -c "print(int($DURATION + $WARMUP + $IDLE_HOLD + 90))")

# Rounds: every server runs every scenario once per round, servers taking
# turns within a scenario, so a slow spell of this machine hits them alike;
# report.py shows the median round of each (server, scenario).
for round in $(seq "$ROUNDS"); do
    for scenario in "${SCENARIOS[@]}"; do
        echo "==> round $round of $ROUNDS, scenario $scenario"
        for name in "${SERVERS[@]}"; do
            # Other processes on this machine skew CPU figures: wait for a
            # quiet moment before each run, and run again (at most TRIES
            # times) when loadgen saw other load above NOISE_LIMIT during the
            # counted window. report.py keeps the least disturbed try.
            for try in $(seq "$TRIES"); do
                wait_for_quiet
                port=$(free_port)
                if ! start_server "$name" "$port"; then
                    echo "   $name: server did not start (see $LOG_DIR/$name.log)" >&2
                    record "$name" "$scenario" "" "{\"try\": $try, \"round\": $round}"
                    stop_server
                    break
                fi
                # shellcheck disable=SC2086 # scenario arguments are meant to split
                json=$(timeout "$limit" taskset -c "$CLIENT_CPU" "$BIN/loadgen" \
                    --addr "127.0.0.1:$port" --label "$name/$scenario" --server-pid "$server_pid" \
                    ${SCENARIO_ARGS[$scenario]} --duration "$DURATION" --warmup "$WARMUP" \
                    2>"$LOG_DIR/loadgen.err") || true
                sed 's/^/   /' "$LOG_DIR/loadgen.err" >&2
                record "$name" "$scenario" "$json" "{\"try\": $try, \"round\": $round}"
                stop_server
                if ! python3 -c 'import json,sys; o=json.loads(sys.argv[1] or "{}").get("other_cpu_pct"); sys.exit(0 if o is not None and o > float(sys.argv[2]) else 1)' \
                    "$json" "$NOISE_LIMIT"; then
                    break
                fi
                [[ $try -lt $TRIES ]] && echo "   (other load above $NOISE_LIMIT% of a CPU: again)" >&2
            done

            if [[ "$STRACE" == 1 && "$scenario" == c && "$round" == 1 ]]; then
                # Syscalls per message under a fixed load: strace slows the
                # server, so this is a separate run whose other figures are
                # thrown away.
                port=$(free_port)
                rm -f "$LOG_DIR/strace-$name.txt"
                start_server "$name" "$port" || { stop_server; continue; }
                strace -c -f -p "$server_pid" -o "$LOG_DIR/strace-$name.txt" 2>/dev/null &
                strace_pid=$!
                sleep 0.5
                # shellcheck disable=SC2086
                json=$(timeout "$limit" taskset -c "$CLIENT_CPU" "$BIN/loadgen" \
                    --addr "127.0.0.1:$port" --label "$name/c-strace" \
                    ${SCENARIO_ARGS[c]} --duration "$DURATION" --warmup 0 \
                    2>/dev/null) || true
                kill -INT "$strace_pid" 2>/dev/null || true
                wait "$strace_pid" 2>/dev/null || true
                strace_pid=""
                if [[ -n "$json" && -s "$LOG_DIR/strace-$name.txt" ]]; then
                    cp "$LOG_DIR/strace-$name.txt" "$RESULTS/strace-$name.txt"
                    record "$name" "c-strace" "$json" "{\"strace_file\": \"strace-$name.txt\"}"
                else
                    echo "   c (strace): no strace summary for $name" >&2
                fi
                stop_server
            fi
        done
    done
done

python3 bench/report.py --raw "$RAW" --out "$RESULTS"
echo "==> wrote $RESULTS/results.json, $RESULTS/results.md, $RESULTS/chart.svg"
