#!/usr/bin/env python3
"""The longest command Redis itself ran since the last reset, from its SLOWLOG: what other
clients had to wait behind, free of the client-side scheduling noise a busy machine adds.

Usage: slowest.py PORT reset   (log every command slower than 100 us, from now on)
       slowest.py PORT report  (prints {"logged": N, "max_ms": ..., "command": "MGET"})
       slowest.py PORT short   (prints MAX_MS:COMMAND)
"""
import json
import socket
import sys


def command(sock, *parts):
    data = b"*%d\r\n" % len(parts) + b"".join(
        b"$%d\r\n%s\r\n" % (len(p.encode()), p.encode()) for p in parts)
    sock.sendall(data)
    return parse(sock.makefile("rb"))


def parse(stream):
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = stream.read(n + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return [parse(stream) for _ in range(max(n, 0))]
    raise SystemExit(f"unexpected reply {line!r}")


def main():
    port, action = int(sys.argv[1]), sys.argv[2]
    sock = socket.create_connection(("127.0.0.1", port))
    if action == "reset":
        command(sock, "CONFIG", "SET", "slowlog-log-slower-than", "100")
        command(sock, "CONFIG", "SET", "slowlog-max-len", "100000")
        command(sock, "SLOWLOG", "RESET")
        return
    entries = command(sock, "SLOWLOG", "GET", "100000")
    # Each entry: id, unix time, duration in microseconds, [command and arguments], ...
    worst = max(entries, key=lambda entry: entry[2], default=None)
    if action == "short":
        print(f"{worst[2] / 1000.0 if worst else 0.0}:{worst[3][0].upper() if worst else '-'}")
        return
    print(json.dumps({
        "logged": len(entries),
        "max_ms": round(worst[2] / 1000.0, 3) if worst else 0.0,
        "command": worst[3][0].upper() if worst else "-",
    }))


if __name__ == "__main__":
    main()
