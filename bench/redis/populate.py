#!/usr/bin/env python3
"""RESP for `redis-cli --pipe`: N sessions shaped like the writer's (user, count, cookie), with a TTL.

Usage: populate.py N | redis-cli -p PORT --pipe
"""
import random
import sys


def command(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def main() -> None:
    n = int(sys.argv[1])
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    out = sys.stdout.buffer
    for _ in range(n):
        sid = "".join(rng.choice(alphabet) for _ in range(32))
        value = ('{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                 '"user":{"id":%r},"count":%d}' % (rng.random(), rng.randint(1, 50)))
        out.write(command("SET", "sess:" + sid, value, "EX", str(rng.randint(3600, 86400))))
    for index in range(100):
        out.write(command("SET", "other:%d" % index, "not a session"))


if __name__ == "__main__":
    main()
