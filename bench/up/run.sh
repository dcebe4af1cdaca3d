#!/usr/bin/env bash
# Issue 5 benchmark: `stack up` of the demo (writer, reader, managed Redis, proxy).
#
#   bench/up/run.sh [RUNS]
#
# Measures, with already-built service binaries:
#   1. wall time from starting `stack up` to both `> Ready!` lines (cargo's no-op check and the
#      managed redis-server included), and the time `stack up` itself prints;
#   2. `stack scale reader 8` until it returns (it answers once all eight are ready);
#   3. RSS of the `stack up` process with the demo running, after 8 readers and a wrk load.
# Each beside a baseline measured in the same run: the same processes started by a shell
# script (redis-server + writer + reader, then 8 readers), waiting for their ports.
# Prints a Markdown section for bench/RESULTS.md on stdout.
set -euo pipefail

RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export NO_COLOR=1

# STACK_PROFILE=debug measures the dev build of stack instead (to try the script quickly).
PROFILE=${STACK_PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release -q -p stack; else cargo build -q -p stack; fi
cargo build -q -p writer -p reader
STACK="$ROOT/target/$PROFILE/stack"
WRITER="$ROOT/target/debug/writer"
READER="$ROOT/target/debug/reader"

PROJECT=$(mktemp -d /tmp/stack-bench-up-XXXXXX)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$PROJECT"' EXIT
cp aliases.json "$PROJECT/"
echo "SESSION_SECRET=bench-secret" > "$PROJECT/.env"

now_ms() { date +%s%3N; }

# Waits until 127.0.0.1:$1 accepts a connection (10 s at most).
wait_port() {
  local deadline=$(( $(now_ms) + 10000 ))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "port $1 never opened" >&2; return 1; }
    sleep 0.005
  done
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until file $1 has $2 lines matching $3 (30 s at most).
wait_lines() {
  local deadline=$(( $(now_ms) + 30000 ))
  until [ "$(grep -c -- "$3" "$1" || true)" -ge "$2" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "no '$3' in $1:" >&2; cat "$1" >&2; return 1; }
    sleep 0.005
  done
}

UP_PID=""
start_up() {
  "$STACK" --cwd "$PROJECT" up "$ROOT/services/writer" "$ROOT/services/reader" --dotenv --port 0 \
    > "$PROJECT/up.log" 2>&1 &
  UP_PID=$!
}
stop_up() {
  "$STACK" --cwd "$PROJECT" down > /dev/null
  wait "$UP_PID" || true
}

# Warm-up: the first run records the deployments; later runs reuse them (nothing rebuilt).
start_up; wait_lines "$PROJECT/up.log" 2 "> Ready!"; stop_up

up_wall=(); after_build=(); cargo_check=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ms); start_up
  wait_lines "$PROJECT/up.log" 1 "> Built"
  t_built=$(now_ms)
  wait_lines "$PROJECT/up.log" 2 "> Ready!"
  t_ready=$(now_ms)
  up_wall+=( $(( t_ready - t0 )) )
  cargo_check+=( $(( t_built - t0 )) )
  after_build+=( $(( t_ready - t_built )) )
  stop_up
done

# Baseline for the build part: cargo's no-op check of the two packages on its own.
base_cargo=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ms)
  cargo build -q -p writer -p reader --message-format=json-render-diagnostics > /dev/null
  base_cargo+=( $(( $(now_ms) - t0 )) )
done

# Baseline: the same three processes from a shell, until their ports accept.
base_up=()
for _ in $(seq "$RUNS"); do
  data=$(mktemp -d)
  rp=$(free_port); wp=$(free_port); dp=$(free_port)
  t0=$(now_ms)
  redis-server --bind 127.0.0.1 --port "$rp" --dir "$data" --appendonly yes --logfile "" > /dev/null &
  r=$!
  wait_port "$rp"
  REDIS_SESSION_URL="redis://127.0.0.1:$rp" SESSION_SECRET=bench PORT=$wp "$WRITER" > /dev/null 2>&1 &
  w=$!
  REDIS_SESSION_URL="redis://127.0.0.1:$rp" SESSION_SECRET=bench PORT=$dp "$READER" > /dev/null 2>&1 &
  d=$!
  wait_port "$wp"; wait_port "$dp"
  base_up+=( $(( $(now_ms) - t0 )) )
  kill "$w" "$d" "$r"; wait "$w" "$d" "$r" 2>/dev/null || true
  rm -rf "$data"
done

# Scale to 8 and back, RUNS times, against one running stack.
start_up; wait_lines "$PROJECT/up.log" 2 "> Ready!"
PORT=$(grep -o 'Proxy listening on http://127.0.0.1:[0-9]*' "$PROJECT/up.log" | grep -o '[0-9]*$')
rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$UP_PID/status")
scale_ms=()
for _ in $(seq "$RUNS"); do
  t0=$(now_ms)
  "$STACK" --cwd "$PROJECT" scale reader 8 > /dev/null
  scale_ms+=( $(( $(now_ms) - t0 )) )
  "$STACK" --cwd "$PROJECT" scale reader 1 > /dev/null
done
"$STACK" --cwd "$PROJECT" scale reader 8 > /dev/null
rss_scaled=$(awk '/VmRSS/ {print $2}' "/proc/$UP_PID/status")
wrk_line="(wrk not installed)"
if command -v wrk > /dev/null; then
  wrk_line=$(wrk -t2 -c32 -d5s -H "Host: counter-demo.localhost" "http://127.0.0.1:$PORT/" | grep -E 'Requests/sec')
fi
rss_loaded=$(awk '/VmRSS/ {print $2}' "/proc/$UP_PID/status")
rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$UP_PID/status")
stop_up

# Baseline: 8 readers from a shell, until their ports accept (Redis already up).
data=$(mktemp -d); rp=$(free_port)
redis-server --bind 127.0.0.1 --port "$rp" --dir "$data" --logfile "" > /dev/null &
r=$!; wait_port "$rp"
base_scale=()
for _ in $(seq "$RUNS"); do
  pids=(); ports=()
  for _ in 1 2 3 4 5 6 7; do ports+=( "$(free_port)" ); done
  t0=$(now_ms)
  for p in "${ports[@]}"; do
    REDIS_SESSION_URL="redis://127.0.0.1:$rp" SESSION_SECRET=bench PORT=$p "$READER" > /dev/null 2>&1 &
    pids+=( $! )
  done
  for p in "${ports[@]}"; do wait_port "$p"; done
  base_scale+=( $(( $(now_ms) - t0 )) )
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
done
kill "$r"; wait "$r" 2>/dev/null || true; rm -rf "$data"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

cat <<EOF
## Issue 5: stack up

- Command: \`bench/up/run.sh $RUNS\` ($PROFILE \`stack\`, dev-profile writer and reader already built)
- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), shared with other jobs
- Date: $(date -u +%Y-%m-%dT%H:%MZ), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)

| measure | stack (median of $RUNS) | baseline, same run | target |
|---|---|---|---|
| \`stack up\` to both \`> Ready!\` (wall, incl. cargo no-op check and Redis) | $(median "${up_wall[@]}") ms (runs: ${up_wall[*]}) | $(median "${base_up[@]}") ms: shell starts redis-server, writer, reader and waits for their ports | < 1000 ms |
| of which until \`> Built\` (process start and cargo's no-op check) | $(median "${cargo_check[@]}") ms (runs: ${cargo_check[*]}) | $(median "${base_cargo[@]}") ms: \`cargo build -p writer -p reader\` alone, nothing to do (runs: ${base_cargo[*]}) | |
| of which \`> Built\` to both \`> Ready!\` (Redis if still starting, deployments, instances, readiness) | $(median "${after_build[@]}") ms (runs: ${after_build[*]}) | | |
| \`stack scale reader 8\` until all ready (1 -> 8) | $(median "${scale_ms[@]}") ms (runs: ${scale_ms[*]}) | $(median "${base_scale[@]}") ms: shell starts 7 readers and waits for their ports | < 1000 ms |
| RSS of \`stack up\`, demo running (1 writer, 1 reader) | $(( rss_idle / 1024 )) MB | | < 30 MB |
| RSS with 8 readers | $(( rss_scaled / 1024 )) MB | | < 30 MB |
| RSS after 5 s of wrk (2 threads, 32 connections) through the proxy | $(( rss_loaded / 1024 )) MB (peak $(( rss_peak / 1024 )) MB); $wrk_line | | < 30 MB |
EOF
