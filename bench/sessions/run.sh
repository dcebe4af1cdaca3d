#!/usr/bin/env bash
# Benchmark for issue 2 (sessions): reader `GET /` with a valid session and writer `/increment`,
# the Rust services (release build) against the Node peer (templates/node), on loopback, against
# one redis-server, with wrk at 32 connections. Also counts the Redis commands a reader request
# costs (INFO commandstats deltas). Writes the figures to the "Issue 2: sessions" section of
# bench/RESULTS.md (replacing an earlier run of that section) and prints them.
#
# The machine may be shared, so each measurement runs ROUNDS times, Rust and Node interleaved,
# and the table shows the best round of each (with every round's req/s beside it).
#
# Usage: bench/sessions/run.sh   (ROUNDS=3 DURATION=5s CONNECTIONS=32 THREADS=2 to override)
# Needs: cargo, redis-server, redis-cli, wrk, node, and `(cd templates/node && npm ci)`.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
connections=${CONNECTIONS:-32}
threads=${THREADS:-2}
secret="bench-secret-$RANDOM$RANDOM"

for tool in cargo redis-server redis-cli wrk node curl; do
  command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is not installed" >&2; exit 1; }
done
[ -d templates/node/node_modules/express-session ] || {
  echo "Error! the Node peer is not installed" >&2
  echo "Run (cd templates/node && npm ci) first." >&2
  exit 1
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building release binaries"
cargo build --release -q -p writer -p reader

echo "== starting redis-server"
redis_port=
for port in $(seq 16400 16450); do
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then redis_port=$port; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -n "$redis_port" ]; then pids+=("$pid"); break; fi
  kill "$pid" 2>/dev/null || true
done
[ -n "$redis_port" ] || { echo "Error! no free port for redis-server in 16400-16450" >&2; exit 1; }
redis_url="redis://127.0.0.1:$redis_port"

# Starts a service on a free port (PORT=0); sets $addr from its first log line.
start() { # name dir command...
  local name=$1 dir=$2; shift 2
  # RUST_LOG=info: the start line (with the address) and warnings; nothing per request.
  (cd "$dir" && PORT=0 REDIS_SESSION_URL=$redis_url SESSION_SECRET=$secret RUST_LOG=info \
    exec "$@" >"$work/$name.log" 2>&1) &
  pids+=("$!")
  service_pid=$!
  addr=
  for _ in $(seq 200); do
    addr=$(grep -oE '(addr=|listening on http://)[0-9.]+:[0-9]+' "$work/$name.log" | head -1 | sed -E 's/^(addr=|listening on http:\/\/)//') || true
    [ -n "$addr" ] && break
    sleep 0.05
  done
  [ -n "$addr" ] || { echo "Error! $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
}

echo "== starting services"
start rust-writer . "$root/target/release/writer"; rust_writer=$addr; rust_writer_pid=$service_pid
start rust-reader . "$root/target/release/reader"; rust_reader=$addr; rust_reader_pid=$service_pid
start node-writer templates/node/services/writer node index.js; node_writer=$addr; node_writer_pid=$service_pid
start node-reader templates/node/services/reader node index.js; node_reader=$addr; node_reader_pid=$service_pid
for _ in $(seq 100); do grep -q "session store ready" "$work/node-writer.log" "$work/node-reader.log" 2>/dev/null && \
  [ "$(grep -l "session store ready" "$work"/node-*.log | wc -l)" = 2 ] && break; sleep 0.05; done

# One logged-in session per connection for the writers (so the figure is not one hot key),
# and one for the readers.
cookie_of() { curl -s -o /dev/null -D - "$1" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(connect\.sid=[^;]*\).*/\1/p'; }
make_cookies() { # writer-addr file
  : >"$2"
  for _ in $(seq "$connections"); do cookie_of "http://$1/login" >>"$2"; done
}
make_cookies "$rust_writer" "$work/rust-cookies"
make_cookies "$node_writer" "$work/node-cookies"
reader_cookie=$(head -1 "$work/node-cookies")
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $reader_cookie" "http://$rust_reader/")" = 200 ] || {
  echo "Error! the Rust reader does not accept the Node session" >&2; exit 1; }

# shellcheck source=../lib/wrk.sh
. "$root/bench/lib/wrk.sh"
wrk_cookie_script

# Redis round trips per request: what MONITOR sees from clients over sequential requests
# (commands a Lua script runs show as `[0 lua]` and are not round trips).
round_trips() { # url cookie
  local n=50 monitor
  redis-cli -p "$redis_port" monitor >"$work/monitor" &
  monitor=$!
  for _ in $(seq 100); do grep -q '^OK' "$work/monitor" 2>/dev/null && break; sleep 0.02; done
  for _ in $(seq "$n"); do curl -s -o /dev/null -H "Cookie: $2" "$1"; done
  redis-cli -p "$redis_port" ping >/dev/null # a marker: everything before it is in the file
  for _ in $(seq 100); do grep -q '"PING"' "$work/monitor" && break; sleep 0.02; done
  kill "$monitor" 2>/dev/null || true
  wait "$monitor" 2>/dev/null || true
  grep -v ' lua\]' "$work/monitor" | grep -oE '^[0-9.]+ \[[0-9]+ [^]]+\] "[A-Za-z]+"' |
    awk -v n="$n" '{ name = toupper($4); gsub("\"", "", name); if (name != "PING") { count[name]++; total++ } }
      END { for (name in count) printf "%s %.2f, ", name, count[name] / n; printf "total %.2f round trips", total / n }'
}

echo "$reader_cookie" >"$work/reader-cookie"
head -1 "$work/rust-cookies" >"$work/rust-hot"
head -1 "$work/node-cookies" >"$work/node-hot"
for round in $(seq "$rounds"); do
  echo "== round $round of $rounds"
  # Readers: one valid session. Writers: $connections sessions round robin, then one hot session.
  measure "Rust reader GET /" "http://$rust_reader/" "$work/reader-cookie" "$rust_reader_pid"
  measure "Node reader GET /" "http://$node_reader/" "$work/reader-cookie" "$node_reader_pid"
  measure "Rust writer /increment" "http://$rust_writer/increment" "$work/rust-cookies" "$rust_writer_pid"
  measure "Node writer /increment" "http://$node_writer/increment" "$work/node-cookies" "$node_writer_pid"
  measure "Rust writer /increment, 1 hot session" "http://$rust_writer/increment" "$work/rust-hot" "$rust_writer_pid"
  measure "Node writer /increment, 1 hot session" "http://$node_writer/increment" "$work/node-hot" "$node_writer_pid"
done

best_rows >"$work/rows"
best_rps() { awk -F'|' -v label="$1" '$1 == label && $2 > best { best = $2 } END { print best }' "$work/results"; }
# The median over rounds of the service's CPU time per request.
median_cpu() { awk -F'|' -v label="$1" '$1 == label { print $6 }' "$work/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
rust_reader_rps=$(best_rps "Rust reader GET /")
node_reader_rps=$(best_rps "Node reader GET /")
rust_writer_rps=$(best_rps "Rust writer /increment")
node_writer_rps=$(best_rps "Node writer /increment")

echo "== Redis round trips per request"
rust_reader_cmds=$(round_trips "http://$rust_reader/" "$reader_cookie")
node_reader_cmds=$(round_trips "http://$node_reader/" "$reader_cookie")
rust_writer_cmds=$(round_trips "http://$rust_writer/increment" "$(sed -n 2p "$work/rust-cookies")")
node_writer_cmds=$(round_trips "http://$node_writer/increment" "$(sed -n 2p "$work/node-cookies")")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
section=$(cat <<MD
## Issue 2: sessions

Run $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- services 2>/dev/null || echo ' (with uncommitted changes)') on $(nproc) cores ($cpu), load average at the end
$(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: figures are indicative).
Command: \`bench/sessions/run.sh\` (wrk -t$threads -c$connections -d$duration --latency, after a 2 s
warm-up, $rounds rounds with Rust and Node interleaved, best round shown; one redis-server $(redis-server --version | grep -oE 'v=[0-9.]+' | cut -d= -f2) on loopback;
Rust release build; Node $(node --version), express 4 + express-session + connect-redis 9).
Readers use one valid session; writers cycle through $connections logged-in sessions
(and, as a worst case, all connections on one session).

| what | req/s (best round) | p50 | p99 | non-2xx | req/s of every round | service CPU µs/request, every round |
|---|---|---|---|---|---|---|
$(cat "$work/rows")

- Rust reader / Node reader: **$(ratio "$rust_reader_rps" "$node_reader_rps")x** req/s, best rounds (target >= 8x);
  **$(ratio "$(median_cpu "Node reader GET /")" "$(median_cpu "Rust reader GET /")")x** less service CPU per request (medians).
- Rust writer / Node writer: **$(ratio "$rust_writer_rps" "$node_writer_rps")x** req/s, best rounds (target >= 5x);
  **$(ratio "$(median_cpu "Node writer /increment")" "$(median_cpu "Rust writer /increment")")x** less service CPU per request (medians).
- Redis round trips per request (client commands seen by MONITOR over 50 sequential requests
  per service; the GET/SET inside the compare-and-set script run in Redis and are not counted):
  - Rust reader GET /: $rust_reader_cmds
  - Node reader GET /: $node_reader_cmds
  - Rust writer /increment: $rust_writer_cmds (GETEX reads, EVALSHA is the compare-and-set)
  - Node writer /increment: $node_writer_cmds
MD
)

results=bench/RESULTS.md
[ -f "$results" ] || printf '# Benchmark results\n' >"$results"
# Replace an earlier "## Issue 2: sessions" section (up to the next "## "), or append.
awk -v section="$section" '
  /^## Issue 2: sessions/ { skipping = 1; if (!done) { print section; print ""; done = 1 }; next }
  skipping && /^## / { skipping = 0 }
  !skipping { print }
  END { if (!done) { print ""; print section } }
' "$results" >"$work/RESULTS.md"
mv "$work/RESULTS.md" "$results"
echo
echo "$section"
