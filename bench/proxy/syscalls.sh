#!/usr/bin/env bash
# System calls per proxied request, counted by `strace -c`: like instructions.sh, a count that
# other load on the machine does not move (the time each call takes is not reported; strace
# slows every call down). Loopback only; not run by CI.
#
#   bench/proxy/syscalls.sh
#   REQUESTS=4000 CONNECTIONS=16 bench/proxy/syscalls.sh
#
# Runs this tree's proxy_bench per-core (what `stack up` runs) and nginx configured as in run.sh
# (`worker_processes auto`), attaches `strace -f -c` to each, drives exactly REQUESTS keep-alive
# requests through it with curl over CONNECTIONS connections after a warm-up (so connection
# set-up is not counted), and prints one markdown table row per target on stdout: calls per
# request, in total and for the calls made at least 0.01 times per request.
set -euo pipefail

REQUESTS=${REQUESTS:-4000}
CONNECTIONS=${CONNECTIONS:-16}
HOST_HEADER="bench.localhost"
PROFILE=${PROFILE:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

command -v strace >/dev/null || { echo "Error! strace is not installed (apt-get install strace)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "Error! nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/proxy/common.sh
source "$(dirname "$0")/common.sh"

build_examples
start_upstream
STACK_PORT=$(free_port)
NGINX_PORT=$(free_port)
"$EXAMPLES/proxy_bench" "127.0.0.1:$STACK_PORT" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
PIDS+=($STACK_PID)
wait_port "$STACK_PORT"
nginx_conf "$WORK/nginx" "$NGINX_PORT" "$UPSTREAM_PORT" "worker_processes auto;"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"

requests() {
    curl -sf --no-progress-meter --parallel --parallel-max "$CONNECTIONS" -H "Host: $HOST_HEADER" \
        "http://127.0.0.1:$1/?n=[1-$2]" >/dev/null || { echo "Error! a request to port $1 failed" >&2; exit 1; }
}

# count NAME PORT PID..: strace -c on the processes while REQUESTS requests go through PORT.
count() {
    local name=$1 port=$2; shift 2
    requests "$port" 200 # warm-up: upstream connections open, pages touched
    local attach=()
    for pid in "$@"; do attach+=(-p "$pid"); done
    strace -f -c -o "$WORK/$name.strace" "${attach[@]}" 2>"$WORK/$name.strace.log" &
    local tracer=$!
    sleep 1 # strace attaches to every thread
    requests "$port" "$REQUESTS"
    sleep 0.5
    kill -INT "$tracer"
    wait "$tracer" || true
    # strace -c: "% time seconds usecs/call calls [errors] syscall"; the total line has no name.
    awk -v n="$REQUESTS" -v name="$name" '
        $NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" { calls[$NF] = $4; sum += $4 }
        END {
            line = ""
            for (call in calls) if (calls[call] / n >= 0.01) line = line sprintf("%s %.2f, ", call, calls[call] / n)
            sub(/, $/, "", line)
            printf "| %s | %d | %d | %.2f | %s |\n", name, n, ENVIRON["CONNECTIONS"], sum / n, line
        }' "$WORK/$name.strace"
}

export CONNECTIONS
echo "strace: stack per-core..." >&2
count "stack proxy (per-core)" "$STACK_PORT" "$STACK_PID"
echo "strace: nginx..." >&2
# shellcheck disable=SC2046 # a list of pids
count "nginx (\`worker_processes auto\`)" "$NGINX_PORT" $(pgrep -P "$NGINX_PID")
