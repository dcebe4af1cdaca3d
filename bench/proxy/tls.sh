#!/usr/bin/env bash
# Issue 16 benchmark: the stack proxy's TLS port against nginx with an equivalent ECDSA P-256
# certificate, both in front of the same small upstream. One run, loopback only. Not run by CI.
#
#   bench/proxy/tls.sh                     # 64 connections, 5 s per measurement
#   CONNECTIONS=64 DURATION=5s ROUNDS=2 NAMES=10000 bench/proxy/tls.sh
#
# Measured, in interleaved rounds (median reported): TLS keep-alive req/s over HTTP/1.1 (wrk),
# over HTTP/2 (h2load, 10 streams per connection), new TLS handshakes per second (wrk with
# `Connection: close`: one full handshake per request, no resumption), and the CPU time of the
# proxy's processes per request. Then a fresh stack proxy's RSS before and after handshakes
# for NAMES distinct SNI names (each gets its own leaf; the cache keeps 1024).
#
# Prints a markdown section for bench/RESULTS.md on stdout; logs go to stderr.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
NAMES=${NAMES:-10000}
PROFILE=${PROFILE:-dist}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

for tool in wrk h2load nginx openssl python3; do
    command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is not installed (apt-get install wrk nghttp2-client nginx-light openssl python3)" >&2; exit 1; }
done

# shellcheck source=bench/proxy/common.sh
source "$(dirname "$0")/common.sh"
trap stop_gently EXIT

build_examples
start_upstream
PLAIN_PORT=$(free_port)
STACK_PORT=$(free_port)
NGINX_PORT=$(free_port)

# start_stack_proxy NAME PLAIN_PORT TLS_PORT: the stack proxy, per-core (what `stack up` runs),
# its CA in a temp STACK_HOME, its output in $WORK/NAME.log; sets PROXY_PID once TLS_PORT accepts.
start_stack_proxy() {
    STACK_HOME="$WORK/stack-home" PROXY_BENCH_TLS="127.0.0.1:$3" \
        "$EXAMPLES/proxy_bench" "127.0.0.1:$2" "127.0.0.1:$UPSTREAM_PORT" per-core >"$WORK/$1.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
    wait_port "$3"
}
start_stack_proxy stack "$PLAIN_PORT" "$STACK_PORT"
STACK_PID=$PROXY_PID

# nginx: the same upstream pool and headers, TLS with an ECDSA P-256 certificate, HTTP/2.
mkdir -p "$WORK/nginx"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/nginx/key.pem" -out "$WORK/nginx/cert.pem" 2>/dev/null
nginx_conf "$WORK/nginx" "$NGINX_PORT" "$UPSTREAM_PORT" "worker_processes auto;"
sed -i "s|listen 127.0.0.1:$NGINX_PORT;|listen 127.0.0.1:$NGINX_PORT ssl http2;\n        ssl_certificate $WORK/nginx/cert.pem;\n        ssl_certificate_key $WORK/nginx/key.pem;\n        ssl_protocols TLSv1.2 TLSv1.3;|" "$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"

for port in $STACK_PORT $NGINX_PORT; do
    body=$(curl -skf --http2 "https://localhost:$port/")
    [ "$body" = "hello world" ] || { echo "Error! localhost:$port answered \`$body\`" >&2; exit 1; }
done

cpu_ticks() {
    local user=0 system=0
    for pid in "$@"; do
        read -r u s < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        user=$(( user + u )); system=$(( system + s ))
    done
    echo "$((user + system))"
}
TICKS_PER_SECOND=$(getconf CLK_TCK)
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
per_request_us() { awk -v t="$1" -v hz="$TICKS_PER_SECOND" -v n="$2" 'BEGIN { printf "%.1f", t * 1000000 / hz / n }'; }

# measure KIND NAME PORT PIDS..: one run; appends "rate cpu_us_per_request" to NAME.KIND
measure() {
    local kind=$1 name=$2 port=$3; shift 3
    local before after rate n
    before=$(cpu_ticks "$@")
    case $kind in
        h1)
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "https://localhost:$port/" >"$WORK/out"
            rate=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/out")
            n=$(awk '/requests in/ { print $1 }' "$WORK/out") ;;
        handshake)
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "Connection: close" "https://localhost:$port/" >"$WORK/out"
            rate=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/out")
            n=$(awk '/requests in/ { print $1 }' "$WORK/out") ;;
        h2)
            h2load -t"$THREADS" -c"$CONNECTIONS" -m10 -D"${DURATION%s}" "https://localhost:$port/" >"$WORK/out"
            rate=$(awk '/^finished in/ { gsub(",", "", $4); printf "%.0f", $4 }' "$WORK/out")
            n=$(awk '/^requests:/ { print $8 }' "$WORK/out") ;;
    esac
    after=$(cpu_ticks "$@")
    if [ "$kind" = h2 ]; then
        grep -q "^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" "$WORK/out" || { cat "$WORK/out" >&2; echo "Error! $name h2 had errors" >&2; exit 1; }
    elif grep -q "Non-2xx" "$WORK/out"; then
        cat "$WORK/out" >&2; echo "Error! $name $kind had errors" >&2; exit 1
    fi
    local cpu
    cpu=$(per_request_us $(( after - before )) "$n")
    echo "  $kind $name: $rate/s, $cpu us CPU per request" >&2
    echo "$rate $cpu" >>"$WORK/$name.$kind"
}

echo "warm-up..." >&2
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "https://localhost:$STACK_PORT/" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "https://localhost:$NGINX_PORT/" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round" >&2
    for kind in h1 h2 handshake; do
        measure "$kind" stack "$STACK_PORT" "$STACK_PID"
        # shellcheck disable=SC2086 # a list of pids
        measure "$kind" nginx "$NGINX_PORT" $NGINX_WORKER_PIDS
    done
done

declare -A RATE CPU
for name in stack nginx; do
    for kind in h1 h2 handshake; do
        RATE[$name.$kind]=$(awk '{ print $1 }' "$WORK/$name.$kind" | median)
        CPU[$name.$kind]=$(awk '{ print $2 }' "$WORK/$name.$kind" | median)
    done
done

# RSS after handshakes for NAMES distinct SNI names (name-N.localhost), 8 clients at once, on a
# fresh proxy (the same binary and CA), so that the figure is the names' and not the buffers and
# allocator arenas the throughput runs left mapped in the first one (read here too).
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
RSS_BENCHED=$(rss_kb "$STACK_PID")
FRESH_PLAIN_PORT=$(free_port)
FRESH_PORT=$(free_port)
start_stack_proxy fresh "$FRESH_PLAIN_PORT" "$FRESH_PORT"
FRESH_PID=$PROXY_PID
RSS_BEFORE=$(rss_kb "$FRESH_PID")
NAMES_STARTED=$(date +%s.%N)
python3 - "$FRESH_PORT" "$NAMES" <<'PY'
import socket, ssl, sys
from concurrent.futures import ThreadPoolExecutor
port, names = int(sys.argv[1]), int(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
def handshake(n):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname=f"name-{n}.localhost") as tls:
            assert tls.getpeercert(binary_form=True)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(handshake, range(names)))
PY
NAMES_SECONDS=$(awk -v a="$NAMES_STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
RSS_AFTER=$(rss_kb "$FRESH_PID")
HWM=$(awk '/^VmHWM/ { print $2 }' "/proc/$FRESH_PID/status")

mb() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<MD
## Issue 16: HTTPS and HTTP/2 (bench/proxy/tls.sh)

- Command: \`bench/proxy/tls.sh\` (CONNECTIONS=$CONNECTIONS DURATION=$DURATION ROUNDS=$ROUNDS THREADS=$THREADS NAMES=$NAMES);
  HTTP/1.1: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION https://localhost:PORT/\`; HTTP/2: \`h2load -t$THREADS -c$CONNECTIONS -m10 -D${DURATION%s}\`;
  handshakes: wrk with \`Connection: close\` (a full TLS handshake per request); $ROUNDS interleaved rounds, medians.
- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), shared with other builds (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)): compare ratios.
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nginx -v 2>&1); $(h2load --version 2>&1 | head -1); $(openssl version).
- stack: \`cli/examples/proxy_bench.rs\` per-core (profile \`$PROFILE\`) with \`PROXY_BENCH_TLS\`: rustls (ring), a leaf per SNI name from
  the local CA (ECDSA P-256), ALPN h2/http1.1. nginx: \`worker_processes auto\`, \`listen ssl http2\`, \`keepalive_requests 1000000\`, a self-signed ECDSA P-256
  certificate, TLS 1.2 and 1.3, the same upstream pool and headers. CPU/request: utime+stime of the proxy's processes / requests.

| measurement | stack | nginx | stack / nginx | stack CPU/request (us) | nginx CPU/request (us) |
|---|---:|---:|---:|---:|---:|
| TLS keep-alive HTTP/1.1 req/s | ${RATE[stack.h1]} | ${RATE[nginx.h1]} | $(ratio "${RATE[stack.h1]}" "${RATE[nginx.h1]}") | ${CPU[stack.h1]} | ${CPU[nginx.h1]} |
| TLS HTTP/2 req/s (10 streams/conn) | ${RATE[stack.h2]} | ${RATE[nginx.h2]} | $(ratio "${RATE[stack.h2]}" "${RATE[nginx.h2]}") | ${CPU[stack.h2]} | ${CPU[nginx.h2]} |
| new TLS handshakes/s | ${RATE[stack.handshake]} | ${RATE[nginx.handshake]} | $(ratio "${RATE[stack.handshake]}" "${RATE[nginx.handshake]}") | ${CPU[stack.handshake]} | ${CPU[nginx.handshake]} |

Handshakes for $NAMES distinct names (\`name-N.localhost\`, 8 clients, ${NAMES_SECONDS}s: each name's first handshake issues its leaf):
a fresh stack proxy's RSS $(mb "$RSS_BEFORE") MB before, $(mb "$RSS_AFTER") MB after (peak $(mb "$HWM") MB; target < 25 MB);
the benchmarked proxy after the throughput runs: $((RSS_BENCHED / 1024)) MB.
MD
