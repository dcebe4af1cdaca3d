#!/usr/bin/env python3
"""Another client's view of Redis: PING back to back on one connection and time each round trip.

Usage: ping_latency.py PORT SECONDS [STOP_FILE]
Runs for SECONDS (or until STOP_FILE exists), then prints one JSON line:
{"pings": N, "max_ms": ..., "p99_ms": ..., "p50_ms": ...}.
"""
import json
import os
import socket
import sys
import time


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    stop_file = sys.argv[3] if len(sys.argv) > 3 else None
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    deadline = time.monotonic() + seconds
    checked = 0
    while time.monotonic() < deadline:
        started = time.perf_counter()
        sock.sendall(b"PING\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise SystemExit("redis closed the connection")
            answer += chunk
        samples.append((time.perf_counter() - started) * 1000.0)
        checked += 1
        if stop_file and checked % 200 == 0 and os.path.exists(stop_file):
            break
    samples.sort()
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)
    print(json.dumps({"pings": len(samples), "max_ms": round(samples[-1], 3),
                      "p99_ms": pick(0.99), "p50_ms": pick(0.5)}))


if __name__ == "__main__":
    main()
