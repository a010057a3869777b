# bench/servers.sh — the echo servers of the suite and the helpers that
# start them, sourced by compare.sh, broadcast.sh and smoke.sh (which set
# BIN first).

# Every server, in report order.
ALL_SERVERS=(floor tower-websockets tower-websockets-aspnet peer-fastwebsockets peer-tokio-websockets peer-tungstenite peer-axum)

# name → binary
declare -A SERVER_BIN=(
    [floor]="$BIN/floor"
    [tower-websockets]="$BIN/tower-websockets"
    [tower-websockets-aspnet]="$BIN/tower-websockets"
    [peer-fastwebsockets]="$BIN/peer-fastwebsockets"
    [peer-tokio-websockets]="$BIN/peer-tokio-websockets"
    [peer-tungstenite]="$BIN/peer-tungstenite"
    [peer-axum]="$BIN/peer-axum"
)
# Every server echoes whole messages, as the peers do; the -aspnet row is
# the same binary running the ASP.NET loop (4 KiB receives), for reference.
declare -A SERVER_ARGS=(
    [tower-websockets]="--mode message"
    [tower-websockets-aspnet]="--mode aspnet"
)

# The servers whose binary also has the broadcast scenario's roles (/sub,
# /pub), for broadcast.sh and smoke.sh. The second line adds
# tower-websockets (its bench server has had the roles since 951ac88);
# comment it out to leave it out.
BROADCAST_SERVERS=(floor peer-fastwebsockets peer-tokio-websockets peer-tungstenite peer-axum)
BROADCAST_SERVERS=(floor tower-websockets "${BROADCAST_SERVERS[@]:1}")

# BASELINE=/path/to/binary, a bench/src/bin/tower-websockets (or, from a
# commit before it existed, an examples/echo: same --addr --threads --mode
# flags) built from another commit, adds it as tower-websockets-baseline
# (whole messages, as tower-websockets), so one comparison measures a change
# before and after, the two taking turns.
if [[ -n "${BASELINE:-}" ]]; then
    ALL_SERVERS=(floor tower-websockets tower-websockets-baseline "${ALL_SERVERS[@]:2}")
    SERVER_BIN[tower-websockets-baseline]="$BASELINE"
    SERVER_ARGS[tower-websockets-baseline]="--mode message"
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits (at most 10 s) until something accepts on the port, while the
# server ($server_pid) is alive.
wait_for_port() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Percentage of one CPU that the machine (everything on it) used over a
# second; between runs none of it is ours.
machine_busy_pct() {
    python3 - <<'PY'
import time
def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6]
b = busy(); time.sleep(1); print(busy() - b)
PY
}

# Waits (at most QUIET_WAIT seconds) until the machine is quiet, that is
# until it uses at most NOISE_LIMIT % of one CPU.
wait_for_quiet() {
    local waited=0 busy
    while [[ $waited -lt $QUIET_WAIT ]]; do
        busy=$(machine_busy_pct)
        [[ $busy -le $NOISE_LIMIT ]] && return 0
        waited=$((waited + 1))
    done
    echo "   (machine still busy after ${QUIET_WAIT}s: running anyway)" >&2
}

# The server a script is measuring, if one is running.
server_pid=""

# stop_server: stops that server.
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}

# start_server NAME PORT: a fresh server pinned to $SERVER_CPU with one
# worker thread, its output in $LOG_DIR/NAME.log; fails if it does not
# accept in time.
start_server() {
    local name=$1 port=$2
    # shellcheck disable=SC2086 # server arguments are meant to split
    taskset -c "$SERVER_CPU" "${SERVER_BIN[$name]}" --addr "127.0.0.1:$port" --threads 1 \
        ${SERVER_ARGS[$name]:-} >"$LOG_DIR/$name.log" 2>&1 &
    server_pid=$!
    wait_for_port "$port"
}

# record SERVER SCENARIO JSON-OR-EMPTY [EXTRA-JSON]: one line of $RAW (a
# failed run when loadgen printed nothing).
record() {
    local server=$1 scenario=$2 json=$3 extra=${4:-}
    if [[ -z "$json" ]]; then
        json='{"errors":1,"failed":true}'
    fi
    python3 -c 'import json,sys; r=json.loads(sys.argv[3]); r.update(server=sys.argv[1], scenario=sys.argv[2]); r.update(json.loads(sys.argv[4] or "{}")); print(json.dumps(r))' \
        "$server" "$scenario" "$json" "$extra" >>"$RAW"
}
