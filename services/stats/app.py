"""stats: the counter demo's third service, in Python.

`GET /stats` answers the logged-in user and the count the writer keeps, read from the same
express-session login the Rust and Node services use (SESSION-FORMAT.md): the `connect.sid`
cookie's signature is checked with `SESSION_SECRET` (a comma-separated list: every secret
verifies), the session is read from `sess:<id>` in Redis (`REDIS_SESSION_URL`), and its TTL
is extended as connect-redis's `touch` does. Without a login: 403, as the reader answers. Redis
unreachable: 503 with `Retry-After: 1`. `GET /healthz` is its health check.

Only the standard library's HTTP server and the `redis` client from PyPI.
"""

import base64
import hashlib
import hmac
import json
import math
import os
import sys
import time
import urllib.parse
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

COOKIE = "connect.sid"
DEFAULT_TTL = 86400
LOGIN_FIRST = b'{"message":"Please go \\"log in!\\" (set up your session)","login":"/login"}'
STORE_DOWN = b'{"message":"the session store (Redis) cannot be reached; try again in a moment"}'


def secrets_from(text):
    return [secret for secret in (text or "").split(",") if secret]


def signature(secret, value):
    digest = hmac.new(secret.encode(), value.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def unsign(cookie_value, secrets):
    """The session id of a signed cookie value (`s:<id>.<signature>`), or None."""
    if not cookie_value.startswith("s:"):
        return None
    session_id, dot, given = cookie_value[2:].rpartition(".")
    if not dot:
        return None
    for secret in secrets:
        # Constant-time, and a signature of the wrong length is simply invalid.
        if hmac.compare_digest(signature(secret, session_id).encode(), given.encode()):
            return session_id
    return None


def cookie_value(header, name=COOKIE):
    """The (percent-decoded) value of cookie `name` in a Cookie header."""
    for part in (header or "").split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            return urllib.parse.unquote(value.strip().strip('"'))
    return None


def ttl_of(session):
    """Seconds the session lives: until `cookie.expires`, else a day."""
    expires = (session.get("cookie") or {}).get("expires")
    if not expires:
        return DEFAULT_TTL
    when = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    return math.ceil(when - time.time())


def connect(url):
    """A client for every single-server form of REDIS_SESSION_URL (the 2017 `?password=` too)."""
    if not url:
        return redis.Redis(host="127.0.0.1", port=6379)
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    options = {"socket_timeout": 1, "socket_connect_timeout": 1}
    if "password" in query and not parsed.password:
        options["password"] = query["password"][0]
        url = urllib.parse.urlunsplit(parsed._replace(query=""))
    return redis.Redis.from_url(url, **options)


class Stats(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store = None
    secrets = []

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/healthz":
            return self.answer(200, b'{"status":"ok"}')
        if path not in ("/stats", "/stats/"):
            return self.answer(404, b'{"message":"not found"}')
        session_id = unsign(cookie_value(self.headers.get("Cookie")) or "", self.secrets)
        if session_id is None:
            return self.answer(403, LOGIN_FIRST)
        key = "sess:" + session_id
        try:
            stored = self.store.get(key)
            if stored is None:
                return self.answer(403, LOGIN_FIRST)
            session = json.loads(stored)
            ttl = ttl_of(session)
            if ttl <= 0:
                self.store.delete(key)
                return self.answer(403, LOGIN_FIRST)
            self.store.expire(key, ttl)
        except redis.RedisError:
            return self.answer(503, STORE_DOWN, [("Retry-After", "1")])
        if not session.get("user"):
            return self.answer(403, LOGIN_FIRST)
        body = {"user": session["user"]}
        if "count" in session:
            body["count"] = session["count"]
        return self.answer(200, json.dumps(body, separators=(",", ":")).encode())

    def answer(self, status, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        sys.stdout.write("%s %s\n" % (self.command, format % args))
        sys.stdout.flush()


def main():
    secrets = secrets_from(os.environ.get("SESSION_SECRET"))
    if not secrets:
        sys.exit("stats: SESSION_SECRET is not set")
    Stats.secrets = secrets
    Stats.store = connect(os.environ.get("REDIS_SESSION_URL"))
    port = int(os.environ.get("PORT", "8082"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Stats)
    print(f"stats listening on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
