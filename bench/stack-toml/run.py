#!/usr/bin/env python3
"""Issue 15 measurements: what health checking costs `stack up`, and save-to-served times of a
Python, a Node and a Rust service side by side, in the same run.

usage: bench/stack-toml/run.py [STACK_BINARY] [RUNS]

1. Health checks: a project of one Python web service at 50 instances, run twice for 10 s
   each once every instance is ready: with `health = { http = "/healthz", interval = "1s" }`,
   and without a health check (the baseline: readiness by TCP connect only). The figure is
   the CPU time (user + system, /proc/PID/stat) of the `stack up` process over the window,
   as a share of one core.
2. Save to served: three services, each answering its version on `GET /`: Python (declared
   in stack.toml, `run = ["python3", "app.py"]`), Node (detected: package.json with a start
   script and no dependencies), Rust (detected: a std-only Cargo binary, built by cargo). Each
   run rewrites the version in the source and times the save -> the first answer through the
   proxy with the new version (`<service>.localhost`). Medians of RUNS.
"""

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

STACK = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../target/release/stack")
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
TICKS = os.sysconf("SC_CLK_TCK")

PY_APP = '''import http.server, os
VERSION = "v0"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''
NODE_APP = '''const VERSION = "v0";
require("http").createServer((q, s) => s.end(VERSION)).listen(+process.env.PORT, "127.0.0.1");
'''
RUST_APP = '''use std::io::{Read, Write};
const VERSION: &str = "v0";
fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buffer = [0u8; 4096];
        let _ = stream.read(&mut buffer);
        let _ = write!(stream, "HTTP/1.1 200 OK\\r\\nContent-Length: {}\\r\\nConnection: close\\r\\n\\r\\n{}", VERSION.len(), VERSION);
    }
}
'''


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def start_up(project, extra=()):
    log = open(os.path.join(project, "up.log"), "w")
    env = dict(os.environ, SESSION_SECRET="bench-secret", NO_COLOR="1")
    env.pop("REDIS_SESSION_URL", None)
    process = subprocess.Popen([STACK, "--cwd", project, "up", "--port", "0", *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, os.path.join(project, "up.log")


def wait_line(log, pattern, count=1, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, errors="replace") as f:
            found = [line for line in f if re.search(pattern, line)]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {pattern!r} in {log}:\n" + open(log).read()[-3000:])


def stop(process):
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def ready_instances(project):
    out = subprocess.run([STACK, "--cwd", project, "ls", "--json"], capture_output=True, text=True).stdout
    return sum(deployment.get("ready", 0) for deployment in json.loads(out or "[]"))


def health_cost(with_health, window=10.0):
    project = tempfile.mkdtemp(prefix="stack-bench-health-")
    write(f"{project}/services/web/app.py", PY_APP)
    health = 'health = { http = "/healthz", interval = "1s" }\n' if with_health else ""
    write(f"{project}/stack.toml", f'[services.web]\nrun = ["python3", "app.py"]\ninstances = 50\n{health}')
    process, log = start_up(project, ["--no-watch"])
    try:
        wait_line(log, r"> Ready! http://web-", timeout=300)
        deadline = time.monotonic() + 120
        while ready_instances(project) < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        n_ready = ready_instances(project)
        time.sleep(2)
        before, started = cpu_seconds(process.pid), time.monotonic()
        time.sleep(window)
        used, wall = cpu_seconds(process.pid) - before, time.monotonic() - started
        return {"instances_ready": n_ready, "cpu_s": used, "wall_s": wall, "core_percent": 100 * used / wall}
    finally:
        stop(process)
        shutil.rmtree(project, ignore_errors=True)


def get(port, host):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError:
        return 0, ""
    finally:
        connection.close()


def save_to_served():
    project = tempfile.mkdtemp(prefix="stack-bench-save-")
    write(f"{project}/services/py/app.py", PY_APP)
    write(f"{project}/stack.toml", '[services.py]\nrun = ["python3", "app.py"]\n')
    write(f"{project}/services/node/index.js", NODE_APP)
    write(f"{project}/services/node/package.json", '{"name": "node", "private": true, "scripts": {"start": "node index.js"}}\n')
    write(f"{project}/services/rusty/src/main.rs", RUST_APP)
    write(f"{project}/services/rusty/Cargo.toml", '[package]\nname = "rusty"\nversion = "0.1.0"\nedition = "2021"\n\n[workspace]\n')
    sources = {"py": "services/py/app.py", "node": "services/node/index.js", "rusty": "services/rusty/src/main.rs"}
    process, log = start_up(project)
    results = {name: [] for name in sources}
    try:
        port = int(wait_line(log, r"Proxy listening on").rsplit(":", 1)[1])
        wait_line(log, r"Watching for changes")
        for name in sources:
            wait_line(log, rf"> Ready! http://{name}-")
        for run in range(1, RUNS + 1):
            for name, source in sources.items():
                path = os.path.join(project, source)
                text = open(path).read()
                new = f"v{run}"
                saved = time.monotonic()
                write(path, re.sub(r'"v\d+"', f'"{new}"', text))
                deadline = saved + 300
                while time.monotonic() < deadline:
                    if get(port, f"{name}.localhost") == (200, new):
                        break
                    time.sleep(0.005)
                results[name].append((time.monotonic() - saved) * 1000)
                time.sleep(0.5)
        return results
    finally:
        stop(process)
        shutil.rmtree(project, ignore_errors=True)


def main():
    health = {"with_health": health_cost(True), "baseline_no_health": health_cost(False)}
    if os.environ.get("HEALTH_ONLY"):
        print(json.dumps(health))
        return
    saves = save_to_served()
    print(json.dumps({"health": health, "save_to_served_ms": saves}))
    print()
    print("| measure | value |")
    print("|---|---|")
    for label, key in (("50 instances, health.http every 1 s", "with_health"), ("baseline: 50 instances, no health check", "baseline_no_health")):
        figures = health[key]
        print(f"| `stack up` CPU, {label} (% of one core) | {figures['core_percent']:.2f} ({figures['cpu_s']:.2f} s in {figures['wall_s']:.1f} s, {figures['instances_ready']} ready) |")
    for name, label in (("py", "Python (stack.toml, no build)"), ("node", "Node (detected, npm start)"), ("rusty", "Rust (detected, cargo build)")):
        values = saves[name]
        print(f"| save -> served, {label} (ms) | {statistics.median(values):.0f} (min {min(values):.0f}, max {max(values):.0f}) |")


if __name__ == "__main__":
    main()
