#!/usr/bin/env python3
"""`stack restart` under load: what a restart costs the requests in flight, against the same
load with no restart in the same run (the baseline).

usage: bench/restart/run.py [STACK_BINARY] [RESTARTS]

One Node service (detected: package.json with a start script, no dependencies) answering its
pid, behind the release `stack up --no-watch`. For 1 and then 2 instances, wrk runs twice for
12 s each on `web.localhost` (16 connections, keep-alive): once with nothing else going on
(baseline), once while `stack restart web` runs RESTARTS times, one after another with 1 s
between them. Reported per run: req/s, p99 and max latency, non-2xx answers and socket errors
(wrk's), and the wall time of each `stack restart`. Loopback only; prints JSON and a markdown
table.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

STACK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../target/release/stack")
RESTARTS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
DURATION = 12
CONNECTIONS = 16

NODE_APP = '''require("http")
  .createServer((request, response) => response.end(String(process.pid)))
  .listen(+process.env.PORT, "127.0.0.1");
'''
HOST_LUA = 'wrk.headers["Host"] = "web.localhost"\n'


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def wait_line(log, pattern, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            for line in f:
                if re.search(pattern, line):
                    return line
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {pattern!r}:\n" + open(log).read()[-3000:])


def stack(project, *args):
    started = time.monotonic()
    done = subprocess.run([STACK, "--cwd", project, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"stack {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started


def wrk(port, script):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout

    def find(pattern, default="0"):
        match = re.search(pattern, out, re.M)
        return match.group(1) if match else default

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(find(r"^Requests/sec:\s+([\d.]+)")),
        "p99": find(r"^\s+99%\s+(\S+)"),
        "max": find(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)"),
        "requests": int(find(r"^\s+(\d+) requests in")),
        "non_2xx": int(find(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
    }


def under_restarts(project, port, script):
    """wrk while `stack restart web` runs RESTARTS times; the wall time of each restart."""
    times = []

    def restart_loop():
        time.sleep(1.5)
        for _ in range(RESTARTS):
            times.append(stack(project, "restart", "web"))
            time.sleep(1)

    restarter = threading.Thread(target=restart_loop)
    restarter.start()
    figures = wrk(port, script)
    restarter.join()
    figures["restart_s"] = times
    return figures


def main():
    project = tempfile.mkdtemp(prefix="stack-bench-restart-")
    write(f"{project}/services/web/index.js", NODE_APP)
    write(f"{project}/services/web/package.json", '{"name": "web", "private": true, "scripts": {"start": "node index.js"}}\n')
    script = os.path.join(project, "host.lua")
    write(script, HOST_LUA)
    log = os.path.join(project, "up.log")
    env = dict(os.environ, SESSION_SECRET="bench-secret", NO_COLOR="1")
    env.pop("REDIS_SESSION_URL", None)
    up = subprocess.Popen([STACK, "--cwd", project, "up", "--port", "0", "--no-watch", "--no-https"],
                          stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    results = {}
    try:
        port = int(wait_line(log, r"Proxy listening on").rsplit(":", 1)[1])
        wait_line(log, r"> Ready! http://web-")
        for instances in (1, 2):
            stack(project, "scale", "web", str(instances))
            results[f"{instances} instance(s), baseline"] = wrk(port, script)
            results[f"{instances} instance(s), {RESTARTS} restarts"] = under_restarts(project, port, script)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        shutil.rmtree(project, ignore_errors=True)
    print(json.dumps(results))
    print()
    print("| run | req/s | p99 | max | non-2xx | socket errors | requests | `stack restart` wall time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, f in results.items():
        restarts = f.get("restart_s")
        shown = (f"median {statistics.median(restarts):.2f} ({', '.join(f'{t:.2f}' for t in restarts)})"
                 if restarts else "-")
        print(f"| {label} | {f['rps']:.0f} | {f['p99']} | {f['max']} | {f['non_2xx']} | {f['socket_errors']} | {f['requests']} | {shown} |")


if __name__ == "__main__":
    main()
