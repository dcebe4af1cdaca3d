#!/usr/bin/env python3
"""Issue 6 measurements against a running `stack up` (started by bench/watch/run.sh).

usage: measure.py PROJECT UP_LOG PROXY_PORT REDIS_URL RUNS STACK

For each run: a one-line change to the demo reader (its 403 message), saved, then
  - debounce: save -> `> Building reader` line appears
  - build:    as stack measured it (the Ready line's `build`)
  - swap:     build done -> new deployment promoted (the Ready line's `swap`)
  - lag:      Ready line seen -> first request answered by the new deployment (0 when the
              new deployment answered first: the table swaps at promote, before the line)
  - save_to_first: save -> first request answered by the new deployment (wall)
  - overhead: save_to_first minus the build = debounce + swap + lag
Baseline in the same run: a stop-then-start restart of the same reader binary (what
cargo-watch, compose or overmind do): downtime and failed requests of a polling client.
"""

import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

project, up_log, port, redis_url, runs, stack = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
lib_rs = os.path.join(project, "services/reader/src/lib.rs")


def now():
    return time.monotonic()


def deployment_of(host="reader.localhost"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.getheader("x-stack-deployment")
    finally:
        conn.close()


def count_lines(needle):
    with open(up_log, errors="replace") as f:
        return sum(1 for line in f if needle in line)


def last_line(needle):
    with open(up_log, errors="replace") as f:
        lines = [line for line in f if needle in line]
    return lines[-1] if lines else ""


def wait_count(needle, n, deadline=300):
    end = now() + deadline
    while count_lines(needle) < n:
        if now() > end:
            sys.exit(f"no {n}x {needle!r} in {up_log}")
        time.sleep(0.002)
    return now()


rows = []
for run in range(runs):
    old = deployment_of()
    n_building = count_lines("> Building reader")
    n_ready = count_lines("> Ready! http://reader-")
    text = open(lib_rs).read()
    text = re.sub(r"set up your session[^)]*\)", f"set up your session, round {run})", text, count=1)
    saved = now()
    with open(lib_rs, "w") as f:
        f.write(text)
    building_seen = wait_count("> Building reader", n_building + 1)
    # First request answered by the new deployment, polled as fast as one client can.
    first = None
    while first is None:
        try:
            if deployment_of() != old:
                first = now()
        except OSError:
            pass
        if now() - saved > 300:
            sys.exit("the new deployment never answered")
    ready_seen = wait_count("> Ready! http://reader-", n_ready + 1)
    line = last_line("> Ready! http://reader-")
    match = re.search(r"\[build ([0-9.]+)s, swap ([0-9]+)ms\]", line)
    build_s, swap_ms = float(match.group(1)), int(match.group(2))
    debounce_ms = (building_seen - saved) * 1000
    lag_ms = max(0.0, (first - ready_seen) * 1000)
    save_to_first_ms = (first - saved) * 1000
    rows.append(
        {
            "debounce_ms": debounce_ms,
            "build_s": build_s,
            "swap_ms": swap_ms,
            "lag_ms": lag_ms,
            "save_to_first_ms": save_to_first_ms,
            "overhead_ms": debounce_ms + swap_ms + lag_ms,
        }
    )
    time.sleep(1.0)  # let the old deployment drain and stop before the next save


# Baseline: stop-then-start of the same binary on its own port, a client polling meanwhile.
live = [d for d in json.loads(subprocess.check_output([stack, "--cwd", project, "ls", "--json"])) if d["service"] == "reader" and d["current"]]
binary = os.path.join(project, ".stack/deployments", live[0]["id"], "reader")
env = dict(os.environ, REDIS_SESSION_URL=redis_url, SESSION_SECRET="bench-secret")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def answers(p):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", p, timeout=2)
        conn.request("GET", "/")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


baseline = []
for run in range(runs):
    p = free_port()
    env["PORT"] = str(p)
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not answers(p):
        time.sleep(0.002)
    failed, ok, stop = [0], [0], [False]

    def poll():
        while not stop[0]:
            if answers(p):
                ok[0] += 1
            else:
                failed[0] += 1

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    t0 = now()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not answers(p):
        time.sleep(0.002)
    downtime_ms = (now() - t0) * 1000
    time.sleep(0.2)
    stop[0] = True
    poller.join()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    baseline.append({"downtime_ms": downtime_ms, "failed": failed[0], "ok": ok[0]})


def med(key, data):
    return statistics.median(row[key] for row in data)


def span(key, data):
    values = [row[key] for row in data]
    return f"{statistics.median(values):.0f} (min {min(values):.0f}, max {max(values):.0f})"


print(json.dumps({"runs": rows, "baseline": baseline}), file=sys.stderr)
print(f"| save -> first request by the new deployment, minus the build (ms) | {span('overhead_ms', rows)} |")
print(f"| of which: save -> build starts (debounce) (ms) | {span('debounce_ms', rows)} |")
print(f"| of which: build done -> swapped (start, ready, promote) (ms) | {span('swap_ms', rows)} |")
print(f"| incremental build of the reader, as stack measured it (s) | {statistics.median(r['build_s'] for r in rows):.1f} (min {min(r['build_s'] for r in rows):.1f}, max {max(r['build_s'] for r in rows):.1f}) |")
print(f"| save -> first request by the new deployment, wall (ms) | {span('save_to_first_ms', rows)} |")
print(f"| baseline: stop-then-start restart, downtime (ms) | {span('downtime_ms', baseline)} |")
print(f"| baseline: failed attempts of one client polling without pause, per restart | {span('failed', baseline)} |")
