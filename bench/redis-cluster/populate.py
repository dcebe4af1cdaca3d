#!/usr/bin/env python3
"""N sessions shaped like the writer's, written straight to the master that owns each key's slot.

Usage: populate.py N SEED_PORT   (a Redis Cluster on 127.0.0.1; needs redis-cli)

Same values as bench/redis/populate.py (its RNG seed), so the cluster and single-server figures
list the same data. Each master gets one `redis-cli --pipe` of its own keys.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "redis"))
from populate import command  # noqa: E402  (the RESP encoder of the single-server benchmark)
import random  # noqa: E402


def crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_owners(seed_port: int) -> list:
    """For each of the 16384 slots, the port of the master serving it (CLUSTER NODES)."""
    listing = subprocess.run(["redis-cli", "-p", str(seed_port), "cluster", "nodes"],
                             check=True, capture_output=True, text=True).stdout
    owners = [None] * 16384
    for line in listing.splitlines():
        fields = line.split()
        if "master" not in fields[2].split(",") or "fail" in fields[2].split(","):
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        for part in fields[8:]:
            if part.startswith("["):
                continue
            start, _, end = part.partition("-")
            for slot in range(int(start), int(end or start) + 1):
                owners[slot] = port
    assert None not in owners, "every slot has a master"
    return owners


def main() -> None:
    n, seed_port = int(sys.argv[1]), int(sys.argv[2])
    owners = slot_owners(seed_port)
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    with tempfile.TemporaryDirectory() as work:
        files = {}
        for _ in range(n):
            sid = "".join(rng.choice(alphabet) for _ in range(32))
            key = "sess:" + sid
            value = ('{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},'
                     '"user":{"id":%r},"count":%d}' % (rng.random(), rng.randint(1, 50)))
            port = owners[crc16_xmodem(key.encode()) % 16384]
            if port not in files:
                files[port] = open(os.path.join(work, "%d.resp" % port), "wb")
            files[port].write(command("SET", key, value, "EX", str(rng.randint(3600, 86400))))
        for port, out in files.items():
            out.close()
            with open(out.name, "rb") as resp:
                subprocess.run(["redis-cli", "-p", str(port), "--pipe"], stdin=resp, check=True,
                               stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
