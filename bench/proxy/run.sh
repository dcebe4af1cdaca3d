#!/usr/bin/env bash
# Issue 4 benchmark: wrk straight to a small upstream, through the stack proxy, and through
# nginx configured the same way (keepalive upstream pool, one worker per core, the same
# forwarding headers). One run, loopback only. Not run by CI.
#
#   bench/proxy/run.sh            # 64 connections, 10 s per target
#   CONNECTIONS=64 DURATION=10s THREADS=2 bench/proxy/run.sh
#
# Prints a markdown section for bench/RESULTS.md on stdout; logs go to stderr.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
HOST_HEADER="bench.localhost"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
PIDS=()

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is not installed (apt-get install $tool)" >&2; exit 1; }
done

cleanup() {
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "Error! nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

echo "building release examples..." >&2
(cd "$ROOT" && cargo build --release -p stack --example bench_upstream --example proxy_bench >&2)
BIN="$ROOT/target/release/examples"

UPSTREAM_PORT=$(free_port)
STACK_PORT=$(free_port)
NGINX_PORT=$(free_port)

"$BIN/bench_upstream" "127.0.0.1:$UPSTREAM_PORT" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UPSTREAM_PORT"

"$BIN/proxy_bench" "127.0.0.1:$STACK_PORT" "127.0.0.1:$UPSTREAM_PORT" >"$WORK/stack.log" 2>&1 &
STACK_PID=$!
PIDS+=($STACK_PID)
wait_port "$STACK_PORT"

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream app {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name $HOST_HEADER;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$proxy_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Real-IP \$remote_addr;
        }
    }
}
NGINX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!
PIDS+=($NGINX_PID)
wait_port "$NGINX_PORT"

# One request each, to check the wiring before measuring.
for port in "$UPSTREAM_PORT" "$STACK_PORT" "$NGINX_PORT"; do
    body=$(curl -sf -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/")
    [ "$body" = "hello world" ] || { echo "Error! 127.0.0.1:$port answered \`$body\`" >&2; exit 1; }
done

# wrk --latency prints "50%  123.00us" lines; normalise every latency to milliseconds.
to_ms() {
    awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
           else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
           else if (v ~ /s$/)  { sub(/s$/,"",v);  printf "%.3f", v*1000 } }'
}

declare -A RPS P50 P99
run() {
    local name=$1 port=$2
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER' http://127.0.0.1:$port/  ($name)" >&2
    # Warm-up: fill the pools, fault in the code.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >/dev/null
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST_HEADER" "http://127.0.0.1:$port/" >"$WORK/$name.wrk"
    cat "$WORK/$name.wrk" >&2
    grep -q "Non-2xx" "$WORK/$name.wrk" && { echo "Error! $name answered non-2xx responses" >&2; exit 1; }
    RPS[$name]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$WORK/$name.wrk")
    P50[$name]=$(awk '$1=="50%" { print $2 }' "$WORK/$name.wrk" | to_ms)
    P99[$name]=$(awk '$1=="99%" { print $2 }' "$WORK/$name.wrk" | to_ms)
}

run direct "$UPSTREAM_PORT"
run stack "$STACK_PORT"
run nginx "$NGINX_PORT"

hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
STACK_HWM=$(hwm_kb "$STACK_PID")
NGINX_HWM=0
NGINX_WORKERS=0
for pid in $(pgrep -P "$NGINX_PID"); do
    NGINX_HWM=$(( NGINX_HWM + $(hwm_kb "$pid") ))
    NGINX_WORKERS=$(( NGINX_WORKERS + 1 ))
done
NGINX_MASTER_HWM=$(hwm_kb "$NGINX_PID")

added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

cat <<MD
## Issue 4: proxy

- Command: \`bench/proxy/run.sh\` (CONNECTIONS=$CONNECTIONS DURATION=$DURATION THREADS=$THREADS); each
  target: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER'\` after a 2 s warm-up.
- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.1f GB", $2/1048576 }' /proc/meminfo); wrk, proxy and upstream share these cores.
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nginx -v 2>&1); $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2).
- Upstream: \`cli/examples/bench_upstream.rs\` (hyper, 12-byte body). Stack: \`cli/examples/proxy_bench.rs\`
  (release, \`proxy::run\`, default \`ProxyConfig\`, tokio one worker per core). nginx: keepalive upstream pool
  (128), \`worker_processes auto\` ($NGINX_WORKERS workers), same X-Forwarded-* headers, access log off.

| target | req/s | p50 (ms) | p99 (ms) | p99 added (ms) | peak RSS (VmHWM) |
|---|---:|---:|---:|---:|---:|
| direct to upstream | ${RPS[direct]} | ${P50[direct]} | ${P99[direct]} | - | - |
| stack proxy | ${RPS[stack]} | ${P50[stack]} | ${P99[stack]} | $(added "${P99[stack]}" "${P99[direct]}") | $((STACK_HWM / 1024)) MB |
| nginx | ${RPS[nginx]} | ${P50[nginx]} | ${P99[nginx]} | $(added "${P99[nginx]}" "${P99[direct]}") | $((NGINX_HWM / 1024)) MB workers + $((NGINX_MASTER_HWM / 1024)) MB master |
MD
