#!/usr/bin/env bash
# bench/soak_smoke.sh — CI's short pass of the soak: examples/production in
# release, a few seconds of `soak waves` (sockets opened, echoed, closed or
# dropped, in waves) and `soak idle` with keep-alive pings answered; both
# fail if the server is not back to no live sockets and its baseline tasks
# afterwards. Then SIGTERM: the server must drain and exit cleanly. No
# figure is asserted; the long runs are in BENCHMARKS.md ("Soak and
# scale").
#
#   bash bench/soak_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
LOG_DIR="$CARGO_TARGET_DIR/soak-smoke"
mkdir -p "$LOG_DIR"

cargo build --release --example production
cargo build --release -p tower-websockets-bench --bin soak

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
RUST_LOG=info "$BIN/examples/production" --addr "127.0.0.1:$port" --threads 2 \
    --keep-alive 1 --drain-seconds 5 > "$LOG_DIR/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

"$BIN/soak" waves --addr "127.0.0.1:$port" --sockets 300 --duration 3 \
    --sources 127.0.0.1,127.0.0.2 > "$LOG_DIR/waves.json"
"$BIN/soak" idle --addr "127.0.0.1:$port" --sockets 500 --hold 2.5 \
    --sources 127.0.0.2,127.0.0.3 > "$LOG_DIR/idle.json"

kill -TERM "$pid"
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "production example did not stop on SIGTERM" >&2
    exit 1
fi
wait "$pid" || { echo "production example failed on SIGTERM" >&2; cat "$LOG_DIR/server.log" >&2; exit 1; }
trap - EXIT
grep -q "drained" "$LOG_DIR/server.log" || { echo "no drain report" >&2; cat "$LOG_DIR/server.log" >&2; exit 1; }
echo "soak smoke: ok"
