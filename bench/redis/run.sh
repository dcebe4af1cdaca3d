#!/usr/bin/env bash
# Issue 7 benchmark: `stack redis keys` over N sessions (default 100,000).
#
# Measures the wall time of `stack redis keys` (table and --json, output to /dev/null) and the
# highest PING round trip another client sees while it runs (ping_latency.py: PINGs back to back
# on its own connection). Baselines from the same run, on the same server and data: PING while
# idle, `redis-cli --scan` (names only), and `redis-cli KEYS` (the blocking command stack avoids).
# Targets: keys under 3 s, PING under 10 ms. Writes the section "Issue 7: stack redis" of
# bench/RESULTS.md (replacing an earlier one). Loopback only; the server is stopped at exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${N:-100000}
RUNS=${RUNS:-5}

for tool in redis-server redis-cli python3 cargo; do
    command -v "$tool" >/dev/null || { echo "Error! \`$tool\` is needed (redis-server/redis-cli: apt-get install redis-server)" >&2; exit 1; }
done

# STACK=path/to/stack skips the build (e.g. to try the script with a debug binary).
if [ -z "${STACK:-}" ]; then
    cargo build --release -p stack --manifest-path "$ROOT/Cargo.toml" >&2
    STACK="$ROOT/target/release/stack"
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
cleanup() {
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    redis-cli -p "$PORT" PING >/dev/null 2>&1 && break
    sleep 0.05
done

echo "> populating $N sessions" >&2
python3 "$HERE/populate.py" "$N" | redis-cli -p "$PORT" --pipe >/dev/null
export REDIS_SESSION_URL="redis://127.0.0.1:$PORT"
export NO_COLOR=1
CWD="$WORK/project"
mkdir -p "$CWD"

# measure LABEL COMMAND...: runs COMMAND RUNS times, each with the pinger alongside.
# Prints "LABEL|median wall s|max wall s|max PING ms|p99 PING ms|longest server command".
measure() {
    local label=$1
    shift
    local walls=() pings=() p99s=() slowest=()
    for _ in $(seq 1 "$RUNS"); do
        rm -f "$WORK/stop"
        python3 "$HERE/slowest.py" "$PORT" reset
        python3 "$HERE/ping_latency.py" "$PORT" 60 "$WORK/stop" >"$WORK/ping.json" &
        local pinger=$!
        sleep 0.2
        local started ended
        started=$(date +%s.%N)
        "$@" >/dev/null
        ended=$(date +%s.%N)
        touch "$WORK/stop"
        wait "$pinger"
        slowest+=("$(python3 "$HERE/slowest.py" "$PORT" short)")
        walls+=("$(python3 -c "print(f'{$ended - $started:.3f}')")")
        pings+=("$(python3 -c "import json; print(json.load(open('$WORK/ping.json'))['max_ms'])")")
        p99s+=("$(python3 -c "import json; print(json.load(open('$WORK/ping.json'))['p99_ms'])")")
    done
    python3 - "$label" "${walls[*]}" "${pings[*]}" "${p99s[*]}" "${slowest[*]}" <<'PY'
import statistics, sys
label, walls, pings, p99s = sys.argv[1], *[list(map(float, a.split())) for a in sys.argv[2:5]]
slow = max((float(ms), name) for ms, name in (item.split(":") for item in sys.argv[5].split()))
slow_text = f"{slow[0]:.2f} ({slow[1]})" if slow[0] > 0 else "none over 0.1"
print(f"{label}|{statistics.median(walls):.3f}|{max(walls):.3f}|{max(pings):.2f}|{max(p99s):.2f}|{slow_text}")
PY
}

idle() {
    python3 "$HERE/ping_latency.py" "$PORT" 2 >"$WORK/idle.json"
    python3 -c "import json; d = json.load(open('$WORK/idle.json')); print(f\"PING only, nothing else running (2 s)|-|-|{d['max_ms']:.2f}|{d['p99_ms']:.2f}|-\")"
}

echo "> measuring ($RUNS runs each)" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# The CPU the command itself uses (what an idle machine's wall time would be close to).
CPU_TIME=$( { /usr/bin/time -f "%U s user, %S s sys, %M KB max RSS" "$STACK" --cwd "$CWD" redis keys >/dev/null; } 2>&1 | tail -1)
ROWS=()
ROWS+=("$(idle)")
ROWS+=("$(measure "\`stack redis keys\` (table)" "$STACK" --cwd "$CWD" redis keys)")
ROWS+=("$(measure "\`stack redis keys --json\`" "$STACK" --cwd "$CWD" redis keys --json)")
ROWS+=("$(measure "baseline: \`redis-cli --scan --pattern 'sess:*'\` (names only)" redis-cli -p "$PORT" --scan --pattern 'sess:*')")
ROWS+=("$(measure "baseline: \`redis-cli KEYS 'sess:*'\` (blocking, what stack never does)" redis-cli -p "$PORT" KEYS 'sess:*')")

COUNT=$("$STACK" --cwd "$CWD" redis keys --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
REDIS_VERSION=$(redis-server --version | awk '{print $3}')
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

SECTION="$WORK/section.md"
{
    echo "## Issue 7: stack redis"
    echo
    echo "\`bench/redis/run.sh\` (N=$N, RUNS=$RUNS), $DATE, commit $COMMIT, binary \`${STACK#"$ROOT/"}\`."
    echo "Machine: $(nproc) cores ($CPU), shared with other jobs; redis-server $REDIS_VERSION on loopback,"
    echo "persistence off. $COUNT sessions listed (writer-shaped values, ~120 bytes, TTLs 1-24 h) plus 100"
    echo "non-session keys. Load average (1, 5, 15 min) when measuring began: $LOAD_BEFORE. PING = round trip seen by another client (back-to-back PINGs on its own"
    echo "connection) while the command runs; wall = whole process, output to /dev/null. Longest server"
    echo "command = the slowest command Redis itself ran meanwhile (SLOWLOG, threshold 0.1 ms): what"
    echo "every other client waited behind, without the client-side scheduling noise of a busy machine."
    echo
    echo "| command | wall median (s) | wall max (s) | PING max (ms) | PING p99 (ms) | longest server command (ms) |"
    echo "|---|---|---|---|---|---|"
    for row in "${ROWS[@]}"; do
        echo "| ${row//|/ | } |"
    done
    echo
    echo "CPU of one \`stack redis keys\` (table): $CPU_TIME."
    echo
    echo "Targets: \`stack redis keys\` under 3 s, PING under 10 ms."
} >"$SECTION"

RESULTS="$ROOT/bench/RESULTS.md"
python3 - "$RESULTS" "$SECTION" <<'PY'
import pathlib, re, sys
results, section = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
text = results.read_text() if results.exists() else "# Benchmark results\n"
pattern = re.compile(r"^## Issue 7: stack redis\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda _: section + "\n", text)
else:
    text = text.rstrip("\n") + "\n\n" + section
results.write_text(text)
PY
cat "$SECTION"
