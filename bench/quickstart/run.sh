#!/usr/bin/env bash
# Times the README's two quick-start commands from a fresh clone: cold (empty target
# directory) and warm (the same clone again, after a saved change under services/).
#   bench/quickstart/run.sh [demo|tests|all]
# The demo command is timed until `stack up` prints `Ready!` for every service; stack is
# installed into a temporary root so the user's ~/.cargo/bin is untouched.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
what=${1:-all}
work=$(mktemp -d /tmp/stack-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/stack"
cp -r "$repo/../shared" "$work/" 2>/dev/null || true
cd "$work/stack"
export PATH="$work/root/bin:$PATH"
unset CARGO_TARGET_DIR

demo() { # prints seconds from the command to every Ready!
  local log="$work/up.log" start
  start=$(date +%s.%N)
  ( scripts/prerequisites \
      && cargo install -q --locked --debug --target-dir target --root "$work/root" --path cli \
      && exec stack up --port 0 ) >"$log" 2>&1 &
  local pid=$!
  until [ "$(grep -c 'Ready!' "$log" 2>/dev/null)" -ge 2 ]; do
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "stack up stopped" >&2; exit 1; }
    sleep 0.2
  done
  echo "$(date +%s.%N) - $start" | bc
  stack down >/dev/null 2>&1 || kill "$pid"
  wait "$pid" 2>/dev/null || true
}

tests() {
  local start
  start=$(date +%s.%N)
  scripts/prerequisites --tests >/dev/null
  (cd templates/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cargo build -q --workspace --bins && cargo test -q --workspace >"$work/test.log" 2>&1 \
    || { tail -40 "$work/test.log"; echo "the tests failed" >&2; exit 1; }
  echo "$(date +%s.%N) - $start" | bc
}

if [ "$what" = demo ] || [ "$what" = all ]; then
  echo "demo cold: $(demo) s"
  touch services/reader/src/lib.rs
  echo "demo warm (after a save under services/): $(demo) s"
fi
if [ "$what" = tests ] || [ "$what" = all ]; then
  echo "tests (target warm from the demo when run with all): $(tests) s"
  echo "tests warm: $(tests) s"
fi
