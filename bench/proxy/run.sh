#!/usr/bin/env bash
# Issue 4 benchmark: wrk straight to a small upstream, through the stack proxy, and through
# nginx configured the same way (keepalive upstream pool, one worker per core, the same
# forwarding headers). One run, loopback only. Not run by CI.
#
#   bench/proxy/run.sh            # 64 connections, 3 rounds of 5 s per target
#   CONNECTIONS=64 DURATION=5s ROUNDS=3 THREADS=2 bench/proxy/run.sh
#   BASELINE_BIN=/tmp/before bench/proxy/run.sh   # also an earlier proxy_bench, per-core
#   RATE=10000 bench/proxy/run.sh   # also latency at a fixed rate below saturation (needs oha)
#
# BASELINE_BIN names a directory holding a `proxy_bench` built from an earlier commit (e.g.
# `git worktree add /tmp/b main && cargo build --profile dist --example proxy_bench` there, or a copy
# of target/dist/examples/proxy_bench taken before a change); it runs per-core in the same
# interleaved rounds, so before and after meet the same load.
#
# The targets are measured in interleaved rounds (direct, stack, stack per-core, nginx, again)
# and the median over the rounds is reported, so load from other processes hits every target alike. Besides
# wrk's figures it reports the proxy's CPU time per request (utime+stime of the proxy's
# processes / requests served), which other load on the machine disturbs much less.
#
# Prints a markdown section for bench/RESULTS.md on stdout; logs go to stderr.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
HOST_HEADER="bench.localhost"
# `dist` (fat LTO, what `cargo install --profile dist` builds); PROFILE=release for quicker builds.
PROFILE=${PROFILE:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is not installed (apt-get install $tool)" >&2; exit 1; }
done

# shellcheck source=bench/proxy/common.sh
source "$(dirname "$0")/common.sh"
trap stop_gently EXIT

build_examples
BIN=$EXAMPLES
start_upstream
STACK_PORT=$(free_port)
PERCORE_PORT=$(free_port)
NGINX_PORT=$(free_port)
BASELINE_PORT=$(free_port)

"$BIN/proxy_bench" "127.0.0.1:$STACK_PORT" "127.0.0.1:$UPSTREAM_PORT" multi >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
PIDS+=($STACK_PID)
wait_port "$STACK_PORT"

"$BIN/proxy_bench" "127.0.0.1:$PERCORE_PORT" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/percore.log" 2>&1 &
PERCORE_PID=$!
PIDS+=($PERCORE_PID)
wait_port "$PERCORE_PORT"

TARGETS="direct stack percore nginx"
if [ -n "${BASELINE_BIN:-}" ]; then
    [ -x "$BASELINE_BIN/proxy_bench" ] || { echo "Error! no executable $BASELINE_BIN/proxy_bench" >&2; exit 1; }
    "$BASELINE_BIN/proxy_bench" "127.0.0.1:$BASELINE_PORT" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/baseline.log" 2>&1 &
    BASELINE_PID=$!
    PIDS+=($BASELINE_PID)
    wait_port "$BASELINE_PORT"
    TARGETS="direct stack baseline percore nginx"
fi

nginx_conf "$WORK/nginx" "$NGINX_PORT" "$UPSTREAM_PORT" "worker_processes auto;"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"

# One request each, to check the wiring before measuring.
PORTS="$UPSTREAM_PORT $STACK_PORT $PERCORE_PORT $NGINX_PORT${BASELINE_BIN:+ $BASELINE_PORT}"
for port in $PORTS; do
    body=$(curl -sf -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/")
    [ "$body" = "hello world" ] || { echo "Error! 127.0.0.1:$port answered \`$body\`" >&2; exit 1; }
done

# wrk --latency prints "50%  123.00us" lines; normalise every latency to milliseconds.
to_ms() {
    awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
           else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
           else if (v ~ /s$/)  { sub(/s$/,"",v);  printf "%.3f", v*1000 } }'
}

# CPU ticks of the given processes (all threads): "user system".
cpu_ticks() {
    local user=0 system=0
    for pid in "$@"; do
        read -r u s < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        user=$(( user + u )); system=$(( system + s ))
    done
    echo "$user $system"
}
TICKS_PER_SECOND=$(getconf CLK_TCK)
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
NGINX_WORKERS=$(echo $NGINX_WORKER_PIDS | wc -w)

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# run NAME PORT ROUND [PID..]: one wrk run; appends figures to $WORK/NAME.figures
run() {
    local name=$1 port=$2 round=$3; shift 3
    echo "round $round: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER' http://127.0.0.1:$port/  ($name)" >&2
    local before="0 0" after="0 0"
    [ $# -gt 0 ] && before=$(cpu_ticks "$@")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >"$WORK/$name.wrk"
    [ $# -gt 0 ] && after=$(cpu_ticks "$@")
    grep -q "Non-2xx\|Socket errors" "$WORK/$name.wrk" && { cat "$WORK/$name.wrk" >&2; echo "Error! $name had errors" >&2; exit 1; }
    local rps p50 p99 n_requests cpu_us user_us sys_us
    rps=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/$name.wrk")
    p50=$(awk '$1=="50%" { print $2 }' "$WORK/$name.wrk" | to_ms)
    p99=$(awk '$1=="99%" { print $2 }' "$WORK/$name.wrk" | to_ms)
    n_requests=$(awk '/requests in/ { print $1 }' "$WORK/$name.wrk")
    per_request() { awk -v ticks="$1" -v hz="$TICKS_PER_SECOND" -v n="$n_requests" 'BEGIN { printf "%.1f", ticks * 1000000 / hz / n }'; }
    read -r user_before sys_before <<<"$before"
    read -r user_after sys_after <<<"$after"
    user_us=$(per_request $(( user_after - user_before )))
    sys_us=$(per_request $(( sys_after - sys_before )))
    cpu_us=$(awk -v u="$user_us" -v s="$sys_us" 'BEGIN { printf "%.1f", u + s }')
    echo "  $rps req/s, p50 $p50 ms, p99 $p99 ms, proxy CPU $cpu_us us/request ($user_us user)" >&2
    echo "$rps $p50 $p99 $cpu_us $user_us $sys_us" >>"$WORK/$name.figures"
}

echo "warm-up (2 s each)..." >&2
for port in $PORTS; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
    run direct "$UPSTREAM_PORT" "$round"
    run stack "$STACK_PORT" "$round" "$STACK_PID"
    [ -n "${BASELINE_BIN:-}" ] && run baseline "$BASELINE_PORT" "$round" "$BASELINE_PID"
    run percore "$PERCORE_PORT" "$round" "$PERCORE_PID"
    # shellcheck disable=SC2086 # a list of pids
    run nginx "$NGINX_PORT" "$round" $NGINX_WORKER_PIDS
done

declare -A RPS P50 P99 CPU USER SYS ALL_RPS
for name in $TARGETS; do
    RPS[$name]=$(awk '{ print $1 }' "$WORK/$name.figures" | median)
    P50[$name]=$(awk '{ print $2 }' "$WORK/$name.figures" | median)
    P99[$name]=$(awk '{ print $3 }' "$WORK/$name.figures" | median)
    CPU[$name]=$(awk '{ print $4 }' "$WORK/$name.figures" | median)
    USER[$name]=$(awk '{ print $5 }' "$WORK/$name.figures" | median)
    SYS[$name]=$(awk '{ print $6 }' "$WORK/$name.figures" | median)
    ALL_RPS[$name]=$(awk '{ print $1 }' "$WORK/$name.figures" | paste -sd/ -)
done

hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
STACK_HWM=$(hwm_kb "$STACK_PID")
PERCORE_HWM=$(hwm_kb "$PERCORE_PID")
NGINX_HWM=0
for pid in $NGINX_WORKER_PIDS; do
    NGINX_HWM=$(( NGINX_HWM + $(hwm_kb "$pid") ))
done
NGINX_MASTER_HWM=$(hwm_kb "$NGINX_PID")

added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# The earlier build's row, or nothing (a blank line would end the markdown table).
BASELINE_ROW=""
if [ -n "${BASELINE_BIN:-}" ]; then
    BASELINE_HWM=$(hwm_kb "$BASELINE_PID")
    BASELINE_ROW="| stack proxy before (per-core, BASELINE_BIN) | ${RPS[baseline]} | ${P50[baseline]} | ${P99[baseline]} | $(added "${P99[baseline]}" "${P99[direct]}") | ${CPU[baseline]} | ${USER[baseline]} / ${SYS[baseline]} | $((BASELINE_HWM / 1024)) MB | ${ALL_RPS[baseline]} |
"
fi

cat <<MD
## Issue 4: proxy

- Command: \`bench/proxy/run.sh\` (CONNECTIONS=$CONNECTIONS DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS);
  each target: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER'\`, $ROUNDS interleaved
  rounds after a 2 s warm-up; each figure is the median over the rounds (req/s of every round in the last column).
- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.1f GB", $2/1048576 }' /proc/meminfo);
  wrk, the proxy and the upstream share these cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nginx -v 2>&1); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2).
- Upstream: \`cli/examples/bench_upstream.rs\` (hyper, 12-byte body). Stack: \`cli/examples/proxy_bench.rs\`
  (profile \`$PROFILE\`, default \`ProxyConfig\`): \`multi\` = \`proxy::run\` on one tokio multi-thread runtime (a worker per core),
  \`per-core\` = \`proxy::run_on_threads\`, a current-thread runtime per core, connections dealt out in turn by one acceptor thread (nginx's model, what \`stack up\` runs). nginx: keepalive upstream
  pool (128), \`worker_processes auto\` ($NGINX_WORKERS workers), same X-Forwarded-* headers, access log off.
- CPU/request: utime+stime of the proxy's processes during the round / requests served (median of the rounds; user and sys
  are each the median of their own column).

| target | req/s | p50 (ms) | p99 (ms) | p99 added (ms) | CPU/request (us) | user / sys (us) | peak RSS (VmHWM) | req/s per round |
|---|---:|---:|---:|---:|---:|---:|---:|---|
| direct to upstream | ${RPS[direct]} | ${P50[direct]} | ${P99[direct]} | - | - | - | - | ${ALL_RPS[direct]} |
| stack proxy (multi) | ${RPS[stack]} | ${P50[stack]} | ${P99[stack]} | $(added "${P99[stack]}" "${P99[direct]}") | ${CPU[stack]} | ${USER[stack]} / ${SYS[stack]} | $((STACK_HWM / 1024)) MB | ${ALL_RPS[stack]} |
${BASELINE_ROW}| stack proxy (per-core) | ${RPS[percore]} | ${P50[percore]} | ${P99[percore]} | $(added "${P99[percore]}" "${P99[direct]}") | ${CPU[percore]} | ${USER[percore]} / ${SYS[percore]} | $((PERCORE_HWM / 1024)) MB | ${ALL_RPS[percore]} |
| nginx | ${RPS[nginx]} | ${P50[nginx]} | ${P99[nginx]} | $(added "${P99[nginx]}" "${P99[direct]}") | ${CPU[nginx]} | ${USER[nginx]} / ${SYS[nginx]} | $((NGINX_HWM / 1024)) MB workers + $((NGINX_MASTER_HWM / 1024)) MB master | ${ALL_RPS[nginx]} |
MD

# With RATE (requests per second, all connections together): the latency the proxy adds below
# saturation, which wrk's flat-out runs above cannot show (there every p99 is queueing on two
# shared cores). oha holds the rate over CONNECTIONS connections and corrects for coordinated
# omission; same interleaved rounds, medians.
if [ -n "${RATE:-}" ]; then
    command -v oha >/dev/null || { echo "Error! \`oha\` is not installed (cargo install oha)" >&2; exit 1; }
    # latency NAME PORT ROUND: one fixed-rate oha run; appends "p50 p99 p99.9" (ms) to NAME.latency
    latency() {
        local name=$1 port=$2 round=$3
        echo "round $round: oha -c$CONNECTIONS -q$RATE -z$DURATION --latency-correction ($name)" >&2
        oha --no-tui --output-format json -c "$CONNECTIONS" -q "$RATE" -z "$DURATION" --latency-correction \
            -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >"$WORK/$name.oha.json"
        python3 - "$WORK/$name.oha.json" >>"$WORK/$name.latency" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
codes = report.get("statusCodeDistribution", {})
# Requests still in flight when the duration ends are cut by oha itself, not failures.
errors = {k: v for k, v in report.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
if set(codes) - {"200"} or errors:
    sys.exit(f"Error! non-200 answers or errors: {codes} {errors}")
p = report["latencyPercentiles"]
print(" ".join(f"{p[k] * 1000:.3f}" for k in ("p50", "p99", "p99.9")))
PY
    }
    LATENCY_TARGETS="direct percore nginx"
    declare -A PORT_OF=([direct]=$UPSTREAM_PORT [percore]=$PERCORE_PORT [nginx]=$NGINX_PORT)
    for round in $(seq 1 "$ROUNDS"); do
        for name in $LATENCY_TARGETS; do latency "$name" "${PORT_OF[$name]}" "$round"; done
    done
    declare -A L50 L99 L999
    for name in $LATENCY_TARGETS; do
        L50[$name]=$(awk '{ print $1 }' "$WORK/$name.latency" | median)
        L99[$name]=$(awk '{ print $2 }' "$WORK/$name.latency" | median)
        L999[$name]=$(awk '{ print $3 }' "$WORK/$name.latency" | median)
    done
    cat <<MD

Below saturation: \`RATE=$RATE\`, each target \`oha -c$CONNECTIONS -q$RATE -z$DURATION --latency-correction -H 'Host: $HOST_HEADER'\`
($(oha --version 2>&1 | head -1)), $ROUNDS interleaved rounds, medians; "added" is against the direct upstream.

| target | p50 (ms) | p99 (ms) | p99.9 (ms) | p50 added (ms) | p99 added (ms) |
|---|---:|---:|---:|---:|---:|
| direct to upstream | ${L50[direct]} | ${L99[direct]} | ${L999[direct]} | - | - |
| stack proxy (per-core) | ${L50[percore]} | ${L99[percore]} | ${L999[percore]} | $(added "${L50[percore]}" "${L50[direct]}") | $(added "${L99[percore]}" "${L99[direct]}") |
| nginx | ${L50[nginx]} | ${L99[nginx]} | ${L999[nginx]} | $(added "${L50[nginx]}" "${L50[direct]}") | $(added "${L99[nginx]}" "${L99[direct]}") |
MD
fi
