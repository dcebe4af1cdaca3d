#!/usr/bin/env bash
# Issue 18 benchmark: sessions past one Redis. Three figures, each beside its baseline measured
# in the same run on the same machine:
#   1. reader `GET /` req/s (wrk) with the Rust services on a local Redis Cluster (3 masters,
#      3 replicas) against the same services on one redis-server; ROUNDS rounds, interleaved.
#   2. `stack redis keys` over N sessions spread on the 3 masters, against the same N sessions
#      on one redis-server.
#   3. failovers under load (20 clients logging in, incrementing, reading): kill -9 the master
#      of a busy session's slot on the cluster, and the master of a Sentinel set; the figures of
#      the writer crate's failover tests (FAILOVER-FIGURES lines), FAILOVERS times each.
# Writes the section "## Issue 18" of bench/RESULTS.md (replacing an earlier one) and prints it.
# Loopback only; every server is stopped by PID at exit.
#
# Usage: bench/redis-cluster/run.sh   (ROUNDS=3 DURATION=5s CONNECTIONS=32 N=100000 RUNS=5
#        FAILOVERS=3 to override). Needs cargo, redis-server, redis-cli, wrk, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
n_sessions=${N:-100000}
runs=${RUNS:-5}
failovers=${FAILOVERS:-3}
secret="bench-secret-$RANDOM$RANDOM"
target=${CARGO_TARGET_DIR:-$root/target}

for tool in cargo redis-server redis-cli wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is not installed" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== building release binaries (writer, reader, stack)"
cargo build --release -q -p writer -p reader -p stack

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# A port below 55000 whose cluster bus port (+10000) is free too.
free_cluster_port() {
  python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    if port < 55000:
        try:
            t = socket.socket(); t.bind(("127.0.0.1", port + 10000)); t.close(); print(port); break
        except OSError:
            pass
    s.close()
PY
}
# Starts redis-server in its own dir with extra args; waits for PING.
start_redis() { # port dir args...
  local port=$1 dir=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --daemonize no "$@" >/dev/null 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "Error! redis-server did not start on $port" >&2; exit 1
}

echo "== one redis-server and a cluster of 6 (3 masters, 3 replicas)"
single_port=$(free_port)
start_redis "$single_port" "$work/single"
cluster_ports=()
for i in 1 2 3 4 5 6; do
  port=$(free_cluster_port)
  start_redis "$port" "$work/node$i" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000
  cluster_ports+=("$port")
done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") --cluster-replicas 1 --cluster-yes >"$work/create.log"
for _ in $(seq 200); do
  ok=0
  for port in "${cluster_ports[@]}"; do redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1)); done
  [ "$ok" = 6 ] && break
  sleep 0.1
done
[ "$ok" = 6 ] || { echo "Error! the cluster did not form" >&2; cat "$work/create.log" >&2; exit 1; }
single_url="redis://127.0.0.1:$single_port"
cluster_url="redis-cluster://$(printf '127.0.0.1:%s,' "${cluster_ports[@]}" | sed 's/,$//')"

# Starts a service; sets $addr (from its start line) and $service_pid.
start() { # name url binary
  local name=$1 url=$2 binary=$3
  PORT=0 REDIS_SESSION_URL=$url SESSION_SECRET=$secret RUST_LOG=info "$binary" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  service_pid=$!
  addr=
  for _ in $(seq 200); do
    addr=$(grep -oE 'addr=[0-9.]+:[0-9]+' "$work/$name.log" | head -1 | cut -d= -f2) || true
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "Error! $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
}
echo "== services on each store"
start single-writer "$single_url" "$target/release/writer"; single_writer=$addr
start single-reader "$single_url" "$target/release/reader"; single_reader=$addr; single_reader_pid=$service_pid
start cluster-writer "$cluster_url" "$target/release/writer"; cluster_writer=$addr
start cluster-reader "$cluster_url" "$target/release/reader"; cluster_reader=$addr; cluster_reader_pid=$service_pid

# One logged-in session per connection, so the cluster figure spreads over every master.
cookie_of() { curl -s -o /dev/null -D - "$1" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(connect\.sid=[^;]*\).*/\1/p'; }
for store in single cluster; do
  writer_var=${store}_writer
  : >"$work/$store-cookies"
  for _ in $(seq "$connections"); do cookie_of "http://${!writer_var}/login" >>"$work/$store-cookies"; done
done
# shellcheck source=../lib/wrk.sh
. "$root/bench/lib/wrk.sh"
wrk_cookie_script
for round in $(seq "$rounds"); do
  echo "== reader round $round of $rounds"
  measure "baseline: reader GET /, one redis-server" "http://$single_reader/" "$work/single-cookies" "$single_reader_pid"
  measure "reader GET /, Redis Cluster (3 masters)" "http://$cluster_reader/" "$work/cluster-cookies" "$cluster_reader_pid"
done
rows=$(best_rows)

echo "== stack redis keys over $n_sessions sessions"
for port in "${cluster_ports[@]}" "$single_port"; do redis-cli -p "$port" flushall >/dev/null 2>&1 || true; done
python3 bench/redis/populate.py "$n_sessions" | redis-cli -p "$single_port" --pipe >/dev/null
python3 bench/redis-cluster/populate.py "$n_sessions" "${cluster_ports[0]}"
per_master=$(for port in "${cluster_ports[@]}"; do
  if redis-cli -p "$port" info replication | grep -q role:master; then redis-cli -p "$port" dbsize; fi
done | paste -sd/ -)
keys_run() { # label url args...
  local label=$1 url=$2; shift 2
  : >"$work/times"
  for _ in $(seq "$runs"); do
    /usr/bin/time -f '%e' -o "$work/t" env REDIS_SESSION_URL="$url" "$target/release/stack" --cwd "$work" redis keys "$@" >/dev/null 2>"$work/keys.err" || {
      echo "Error! stack redis keys failed:" >&2; cat "$work/keys.err" >&2; exit 1; }
    cat "$work/t" >>"$work/times"
  done
  sort -n "$work/times" | awk -v label="$label" '{ v[NR] = $1 } END { printf "| %s | %.3f | %.3f |\n", label, v[int((NR + 1) / 2)], v[NR] }'
}
keys_rows=$(
  keys_run "baseline: \`stack redis keys\` (table), one redis-server" "$single_url"
  keys_run "\`stack redis keys\` (table), Redis Cluster, 3 masters ($per_master)" "$cluster_url"
  keys_run "baseline: \`stack redis keys --json\`, one redis-server" "$single_url" --json
  keys_run "\`stack redis keys --json\`, Redis Cluster, 3 masters" "$cluster_url" --json
)
echo "$keys_rows"
listed=$(REDIS_SESSION_URL="$cluster_url" "$target/release/stack" --cwd "$work" redis keys --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')
[ "$listed" = "$n_sessions" ] || { echo "Error! the cluster listing has $listed sessions, not $n_sessions" >&2; exit 1; }

echo "== failovers under load (the writer crate's failover tests, release build)"
: >"$work/failovers"
for round in $(seq "$failovers"); do
  echo "-- failover round $round of $failovers"
  cargo test --release -q -p writer --test cluster --test sentinel under_load -- --nocapture --test-threads 1 2>&1 |
    tee -a "$work/failover.log" | grep -o 'FAILOVER-FIGURES .*' | sed 's/^FAILOVER-FIGURES //' >>"$work/failovers"
done
grep -q 'test result: ok' "$work/failover.log" && ! grep -q 'test result: FAILED' "$work/failover.log" || {
  echo "Error! a failover test failed:" >&2; tail -40 "$work/failover.log" >&2; exit 1; }
failover_rows=$(python3 - "$work/failovers" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for what in dict.fromkeys(row["what"] for row in rows):
    for row in (r for r in rows if r["what"] == what):
        print("| %s | %d | %d | %d | %d / %d | %d | %d of %d | %d | %d |" % (
            what, row["promoted_ms"], row["recovered_ms"], row["recovered_ms"] - row["promoted_ms"],
            row["failed"], row["requests"], row["slowest_failure_ms"], row["idle_lost"],
            row["idle_sessions"], row["busy_writes_lost"], row["applied_twice"]))
PY
)
echo "$failover_rows"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
section=$(cat <<MD
## Issue 18: Redis Cluster and Sentinel

\`bench/redis-cluster/run.sh\` (ROUNDS=$rounds DURATION=$duration CONNECTIONS=$connections N=$n_sessions RUNS=$runs FAILOVERS=$failovers),
$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- services cli 2>/dev/null || echo ' (with uncommitted changes)'), release builds.
Machine: $(nproc) cores ($cpu), shared with other engineers' builds (noisy: figures are
indicative); load average (1, 5, 15 min) at the start $load_at_start, at the end $(cut -d' ' -f1-3 /proc/loadavg).
redis-server $(redis-server --version | grep -oE 'v=[0-9.]+' | cut -d= -f2) on loopback, persistence off; the cluster is 6 nodes (3 masters, 3 replicas,
\`cluster-node-timeout 1000\`) on this same machine, so its masters share the 2 cores with wrk and the services.

### Reader req/s: Redis Cluster against one redis-server

wrk -t$threads -c$connections -d$duration --latency after a 2 s warm-up, $connections sessions round robin
(on the cluster they spread over the 3 masters), $rounds rounds interleaved, best round shown.

| what | req/s (best round) | p50 | p99 | non-2xx | req/s of every round | reader CPU µs/request, every round |
|---|---|---|---|---|---|---|
$rows

### \`stack redis keys\` over $n_sessions sessions

Wall time of the whole process (output to /dev/null), $runs runs each, same data on both stores
(bench/redis/populate.py's values; on the cluster each key on the master of its slot).
Target: under 3 s.

| command | wall median (s) | wall max (s) |
|---|---|---|
$keys_rows

### Failovers under load

\`cargo test --release -p writer --test cluster --test sentinel under_load -- --nocapture\`, $failovers times:
20 busy clients (login, then /increment and reader / in a loop) and 40 idle sessions written
at least 1.2 s before the kill; the in-process writer and reader (release build) talk to the
store; kill -9 of the master holding busy client 0's session (cluster) or of the Sentinel
master. *promoted* = kill until Redis itself has a new master (polled every 10 ms; the
baseline: what no client can beat); *recovered* = kill until every busy client had a request
that started after its last failure succeed; failures are all 503 JSON with \`Retry-After: 1\`
(the tests fail otherwise). Failure detection is configured at 1000 ms for both
(\`cluster-node-timeout\`, \`down-after-milliseconds\`).

| failover | promoted (ms) | recovered (ms) | recovered after promotion (ms) | failed / requests | slowest failure (ms) | idle sessions lost | busy writes lost | counts applied twice |
|---|---|---|---|---|---|---|---|---|
$failover_rows

Targets: recovered within the failure-detection time + 1 s; idle sessions lost 0; no count
applied twice. The store's own part (recovered after promotion) is what stack controls; the
promotion itself is Redis's: on a cluster, \`cluster-node-timeout\` then the replica's election
delay (500 ms + up to 500 ms random, by design); on Sentinel, \`down-after-milliseconds\`, the
quorum vote and a failover start delayed up to 1 s at random.
MD
)
results=bench/RESULTS.md
awk -v section="$section" '
  /^## Issue 18: / { skipping = 1; if (!done) { print section; print ""; done = 1 }; next }
  skipping && /^## / { skipping = 0 }
  !skipping { print }
  END { if (!done) { print ""; print section } }
' "$results" >"$work/RESULTS.md"
cp "$work/RESULTS.md" "$results"
echo "$section"
