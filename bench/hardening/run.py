#!/usr/bin/env python3
"""Issue 20's timings, each through the real release binary on loopback:

1. the managed Redis killed with -9: time until it answers again, and the sessions kept;
2. an instance stopped with SIGSTOP under load: time until it leaves the rotation, and the
   requests that failed meanwhile (at the default 30 s upstream timeout and at 2 s);
3. the proxy's latency with 1,100 idle connections open at a 1024 soft open-file limit,
   beside the same run with none open.

Usage: bench/hardening/run.py (builds `stack` with the release profile; needs redis-server,
redis-cli, node, wrk and prlimit). Prints a Markdown section for bench/RESULTS.md.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.path.join(ROOT, "target", "release", "stack")
FIXTURE = os.path.join(ROOT, "cli", "tests", "fixtures", "scaling")


class Up:
    """A `stack up` in a copy of the scaling fixture, its output collected."""

    def __init__(self, args, prefix=()):
        self.dir = tempfile.mkdtemp(prefix="stack-hardening-")
        shutil.copytree(FIXTURE, self.dir, dirs_exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("SESSION_SECRET", "REDIS_SESSION_URL")}
        env["NO_COLOR"] = "1"
        self.lines = []
        self.proc = subprocess.Popen(
            [*prefix, STACK, "--cwd", self.dir, "up", "--port", "0", "--no-watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait(r"Proxy listening on http://127.0.0.1:(\d+)")[0].group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, pattern, timeout=120, after=0.0):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if at >= after:
                    found = regex.search(line)
                    if found:
                        return found, at
            time.sleep(0.01)
        raise SystemExit(f"no `{pattern}` from stack up:\n" + "\n".join(l for _, l in self.lines))

    def stack(self, *args):
        return subprocess.run([STACK, "--cwd", self.dir, *args], capture_output=True, text=True, check=True).stdout

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_cli(port, password, *args):
    return subprocess.run(
        ["redis-cli", "--no-auth-warning", "-p", str(port), "-a", password, *args],
        capture_output=True, text=True,
    ).stdout.strip()


def redis_restart():
    up = Up(["web"])
    line, _ = up.wait(r"Redis ready at redis://:\*\*\*@127\.0\.0\.1:(\d+)")
    port = int(line.group(1))
    password = open(os.path.join(up.dir, ".stack", "redis-password")).read().strip()
    up.wait(r"Ready! http://web-")
    pipe = "".join(f"SET sess:bench-{n} count-{n} EX 3600\n" for n in range(1000))
    subprocess.run(["redis-cli", "--no-auth-warning", "-p", str(port), "-a", password],
                   input=pipe, capture_output=True, text=True, check=True)
    written = int(redis_cli(port, password, "DBSIZE"))
    assert written == 1000, f"{written} sessions written"
    time.sleep(1.5)  # the append-only file is fsynced every second
    pid = next(
        int(name) for name in os.listdir(os.path.join(up.dir, ".stack", "pids"))
        if open(os.path.join(up.dir, ".stack", "pids", name)).read().split("\n")[1] == "redis"
    )
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while redis_cli(port, password, "PING") != "PONG":
        time.sleep(0.005)
    back = time.monotonic() - killed
    kept = int(redis_cli(port, password, "DBSIZE"))
    up.stop()
    return back, kept


def stop_one_instance(upstream_timeout):
    up = Up(["web", "--upstream-timeout", upstream_timeout])
    up.wait(r"Ready! http://web-")
    up.stack("scale", "web", "2")
    instances = re.findall(r'"pid": (\d+)', up.stack("ls", "--json"))
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c8", "-d45s", "--timeout", "40s", "-H", "Host: web.localhost",
         f"http://127.0.0.1:{up.port}/"],
        stdout=subprocess.PIPE, text=True,
    )
    time.sleep(3)
    stopped = time.monotonic()
    os.killpg(int(instances[1]), signal.SIGSTOP)
    _, left_at = up.wait(r"did not answer the proxy in time: out of rotation", timeout=60, after=stopped)
    out, _ = wrk.communicate()
    os.killpg(int(instances[1]), signal.SIGCONT)
    up.stop()
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out).group(1)
    return left_at - stopped, int(failed.group(1)) if failed else 0, int(total)


def latency(idle):
    hard = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout)
    up = Up(["web"], prefix=("prlimit", f"--nofile=1024:{hard}", "--"))
    up.wait(r"Ready! http://web-")
    held = [socket.create_connection(("127.0.0.1", up.port)) for _ in range(idle)]
    out = subprocess.run(
        ["wrk", "-t2", "-c16", "-d10s", "--latency", "-H", "Host: web.localhost",
         f"http://127.0.0.1:{up.port}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    for sock in held:
        sock.close()
    up.stop()
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    rps = re.search(r"Requests/sec:\s+(\S+)", out).group(1)
    return p99, rps


def main():
    subprocess.run(["cargo", "build", "--release", "-p", "stack"], cwd=ROOT, check=True)
    back, kept = redis_restart()
    stops = [(timeout, *stop_one_instance(timeout)) for timeout in ("30s", "2s")]
    quiet = latency(0)
    loaded = latency(1100)
    print(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("- Command: `bench/hardening/run.py` (release build, loopback, the `scaling` test fixture)")
    print(f"- Managed Redis after `kill -9`: answering again after **{back * 1000:.0f} ms**; "
          f"**{kept}/1000** sessions written 1.5 s before the kill kept.")
    for timeout, left, failed, total in stops:
        print(f"- SIGSTOP of one of 2 instances under wrk -c8, `--upstream-timeout {timeout}`: out of "
              f"rotation **{left:.1f} s** after the stop; **{failed}** of {total} requests failed "
              f"(504, the ones that met it).")
    print(f"- 1,100 idle connections at a 1024 soft limit: p99 **{loaded[0]}** ({loaded[1]} req/s) "
          f"against **{quiet[0]}** ({quiet[1]} req/s) with none, same run (wrk -c16 -d10s).")


if __name__ == "__main__":
    sys.exit(main())
