#!/usr/bin/env bash
# Issue 17 benchmark: what the request log costs the proxy. The same proxy_bench build runs
# twice side by side, with the log (what `stack up` runs) and with `STACK_REQUEST_LOG=off`;
# wrk measures each in interleaved rounds (median reported). Then 1,000,000 requests go
# through the one with the log, its resident memory read along the way (the ring is bounded:
# flat after the first 1,000); then the event stream's cost at 5,000 req/s
# (cli/examples/request_log_render.rs: the batches the dashboard reads, rendered and
# serialised as the stream does). One run, loopback only. Not run by CI.
#
#   bench/proxy/request_log.sh                  # 64 connections, 3 rounds of 5 s
#   PROFILE=dist ROUNDS=5 bench/proxy/request_log.sh
#
# Prints a markdown section for bench/RESULTS.md on stdout; logs go to stderr.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
TOTAL=${TOTAL:-1000000}
HOST_HEADER="bench.localhost"
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

command -v wrk >/dev/null || { echo "Error! \`wrk\` is not installed (apt-get install wrk)" >&2; exit 1; }

# shellcheck source=bench/proxy/common.sh
source "$(dirname "$0")/common.sh"
trap stop_gently EXIT

build_examples
(cd "$ROOT" && cargo build --profile "$PROFILE" -p stack --example request_log_render >&2)
start_upstream
ON_PORT=$(free_port)
OFF_PORT=$(free_port)
"$EXAMPLES/proxy_bench" "127.0.0.1:$ON_PORT" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/on.log" 2>&1 &
ON_PID=$!
PIDS+=($ON_PID)
STACK_REQUEST_LOG=off "$EXAMPLES/proxy_bench" "127.0.0.1:$OFF_PORT" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/off.log" 2>&1 &
OFF_PID=$!
PIDS+=($OFF_PID)
wait_port "$ON_PORT"
wait_port "$OFF_PORT"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
HZ=$(getconf CLK_TCK)

# run NAME PORT PID: one wrk round; appends "req/s cpu_us_per_request" to $WORK/NAME
run() {
    local name=$1 port=$2 pid=$3 before after
    before=$(cpu_ticks "$pid")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >"$WORK/$name.wrk"
    after=$(cpu_ticks "$pid")
    grep -q "Non-2xx\|Socket errors" "$WORK/$name.wrk" && { cat "$WORK/$name.wrk" >&2; echo "Error! $name had errors" >&2; exit 1; }
    local rps n
    rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/$name.wrk")
    n=$(awk '/requests in/ { print $1 }' "$WORK/$name.wrk")
    local cpu
    cpu=$(awk -v t=$(( after - before )) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", t * 1000000 / hz / n }')
    echo "  $name: $rps req/s, $cpu us CPU/request" >&2
    echo "$rps $cpu" >>"$WORK/$name"
}

echo "warm-up..." >&2
for port in $ON_PORT $OFF_PORT; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round" >&2
    run on "$ON_PORT" "$ON_PID"
    run off "$OFF_PORT" "$OFF_PID"
done
ON_RPS=$(awk '{ print $1 }' "$WORK/on" | median)
OFF_RPS=$(awk '{ print $1 }' "$WORK/off" | median)
ON_CPU=$(awk '{ print $2 }' "$WORK/on" | median)
OFF_CPU=$(awk '{ print $2 }' "$WORK/off" | median)
ALL_ON=$(awk '{ print $1 }' "$WORK/on" | paste -sd/ -)
ALL_OFF=$(awk '{ print $1 }' "$WORK/off" | paste -sd/ -)
RATIO=$(awk -v a="$ON_RPS" -v b="$OFF_RPS" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')
CPU_RATIO=$(awk -v a="$ON_CPU" -v b="$OFF_CPU" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }')

# Memory: requests through the logging proxy until TOTAL, RSS read after each burst.
echo "memory: $TOTAL requests through the proxy with the log..." >&2
served=0
MEMORY_ROWS=""
while [ "$served" -lt "$TOTAL" ]; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -H "Host: $HOST_HEADER" "http://127.0.0.1:$ON_PORT/" >"$WORK/mem.wrk"
    served=$(( served + $(awk '/requests in/ { print $1 }' "$WORK/mem.wrk") ))
    MEMORY_ROWS="$MEMORY_ROWS$served:$(( $(rss_kb "$ON_PID") / 1024 ))MB "
    echo "  $served requests: RSS $(( $(rss_kb "$ON_PID") / 1024 )) MB" >&2
done
FINAL_RSS=$(( $(rss_kb "$ON_PID") / 1024 ))
OFF_RSS=$(( $(rss_kb "$OFF_PID") / 1024 ))

# Five runs (each 10 s of batches): the one of median cost, and every run's share of a core.
for _ in 1 2 3 4 5; do "$EXAMPLES/request_log_render" 5000 >>"$WORK/render"; done
RENDER=$(sort -t= -k2 -n "$WORK/render" | sed -n 3p)
RENDER_RUNS=$(sed 's/.*= \([0-9.]*%\).*/\1/' "$WORK/render" | paste -sd/ -)

cat <<MD
## Issue 17: request log and dashboard

- Command: \`bench/proxy/request_log.sh\` (PROFILE=$PROFILE CONNECTIONS=$CONNECTIONS DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS);
  \`cli/examples/proxy_bench.rs\` per-core (what \`stack up\` runs), the same binary twice: with the request log and with
  \`STACK_REQUEST_LOG=off\`; \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION -H 'Host: $HOST_HEADER'\` to each in $ROUNDS interleaved rounds after a warm-up,
  medians reported. Upstream: \`cli/examples/bench_upstream.rs\`.
- Machine: $(nproc) cores (shared with other work: compare the ratios), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');
  wrk, both proxies and the upstream on these cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
- Date: $(date -u '+%Y-%m-%d %H:%M UTC').

| proxy | req/s | CPU/request (us) | req/s per round |
|---|---:|---:|---|
| request log off (\`STACK_REQUEST_LOG=off\`) | $OFF_RPS | $OFF_CPU | $ALL_OFF |
| request log on (default) | $ON_RPS | $ON_CPU | $ALL_ON |
| on against off | $RATIO | $CPU_RATIO | |

- Memory of the proxy with the log after the benchmark rounds and then $served more requests (requests sent: RSS after each 3 s burst):
  $MEMORY_ROWS; the proxy without the log, after the rounds only: $OFF_RSS MB.
- Event stream (\`cli/examples/request_log_render.rs\`, median of 5 runs): $RENDER; every run: $RENDER_RUNS of a core.
MD
