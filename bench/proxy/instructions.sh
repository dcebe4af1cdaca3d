#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable on a loaded machine, where
# req/s and even CPU time move with other processes' load. Loopback only; not run by CI.
#
#   bench/proxy/instructions.sh [PROXY_BENCH_BINARY...]
#   REQUESTS=20000 CONNECTIONS=16 bench/proxy/instructions.sh /tmp/before/proxy_bench target/dist/examples/proxy_bench
#
# For each binary (default: this tree's proxy_bench, built with PROFILE): runs it per-core under
# `valgrind --tool=callgrind`, drives exactly REQUESTS keep-alive requests through it with curl
# (URL globbing, `--parallel` over CONNECTIONS connections; `cli/examples/bench_upstream.rs`
# answers them), stops it, and reports
# (instructions of a run with REQUESTS - instructions of a run with no request) / REQUESTS, so
# start-up and shutdown cancel out. Then the same for nginx (one worker, no master process,
# configured as in run.sh), the baseline. Prints one markdown table row per binary on stdout.
set -euo pipefail

REQUESTS=${REQUESTS:-20000}
CONNECTIONS=${CONNECTIONS:-16}
HOST_HEADER="bench.localhost"
# `dist` (fat LTO, what `cargo install --profile dist` builds); PROFILE=release for quicker builds.
PROFILE=${PROFILE:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

command -v valgrind >/dev/null || { echo "Error! valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/proxy/common.sh
source "$(dirname "$0")/common.sh"

build_examples
[ $# -gt 0 ] || set -- "$EXAMPLES/proxy_bench"
start_upstream

# instructions BINARY N_REQUESTS: total Ir of one callgrind run serving N_REQUESTS.
instructions() {
    local binary=$1 n=$2 port out
    port=$(free_port)
    out="$WORK/callgrind.$port"
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" "127.0.0.1:$port" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/proxy.$port.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    sleep 2 # under valgrind the SIGINT handler is installed well after the socket is bound
    if [ "$n" -gt 0 ]; then
        curl -sf --no-progress-meter --parallel --parallel-max "$CONNECTIONS" -H "Host: $HOST_HEADER" \
            "http://127.0.0.1:$port/?n=[1-$n]" >/dev/null || { echo "Error! a request through $binary failed" >&2; exit 1; }
    fi
    kill -INT "$pid"
    wait "$pid" || true
    awk '/^summary:/ { print $2 }' "$out"
}

# nginx_instructions N_REQUESTS: total Ir of one nginx (one worker, no master) serving
# N_REQUESTS, configured as in run.sh (keepalive upstream pool, the same forwarding headers).
nginx_instructions() {
    local n=$1 port out dir
    port=$(free_port)
    dir="$WORK/nginx.$port"
    out="$WORK/callgrind.nginx.$port"
    nginx_conf "$dir" "$port" "$UPSTREAM_PORT" "worker_processes 1;
master_process off;"
    valgrind --tool=callgrind --callgrind-out-file="$out" nginx -p "$dir" -c "$dir/nginx.conf" >"$dir/valgrind.log" 2>&1 &
    local pid=$!
    wait_port "$port"
    sleep 2
    if [ "$n" -gt 0 ]; then
        curl -sf --no-progress-meter --parallel --parallel-max "$CONNECTIONS" -H "Host: $HOST_HEADER" \
            "http://127.0.0.1:$port/?n=[1-$n]" >/dev/null || { echo "Error! a request through nginx failed" >&2; exit 1; }
    fi
    kill -QUIT "$pid" # nginx's graceful stop; callgrind writes its counts on exit
    wait "$pid" || true
    awk '/^summary:/ { print $2 }' "$out"
}

for binary in "$@"; do
    echo "callgrind: $binary (0 and $REQUESTS requests)..." >&2
    idle=$(instructions "$binary" 0)
    loaded=$(instructions "$binary" "$REQUESTS")
    per_request=$(( (loaded - idle) / REQUESTS ))
    echo "  $per_request instructions/request" >&2
    echo "| \`$binary\` | $REQUESTS | $CONNECTIONS | $per_request |"
done

# The baseline in the same run: nginx configured the same way (skipped when not installed).
if command -v nginx >/dev/null; then
    echo "callgrind: nginx (0 and $REQUESTS requests)..." >&2
    idle=$(nginx_instructions 0)
    loaded=$(nginx_instructions "$REQUESTS")
    per_request=$(( (loaded - idle) / REQUESTS ))
    echo "  $per_request instructions/request" >&2
    echo "| nginx (one worker, \`master_process off\`) | $REQUESTS | $CONNECTIONS | $per_request |"
else
    echo "nginx is not installed: no baseline row (apt-get install nginx-light)" >&2
fi
