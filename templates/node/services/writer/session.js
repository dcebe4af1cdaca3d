// Session set-up shared in spirit by writer and reader (each service carries its own copy so it
// runs on its own): express-session + connect-redis on the Redis named by REDIS_SESSION_URL.
"use strict";
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const { createClient } = require("redis");

// Every form stack accepts: redis://, rediss://, unix:///path, redis+unix:///path, a bare
// /path/to.sock, and the 2017 redis://host:port?password=pass.
function redisOptions(raw) {
  const url = raw || "redis://127.0.0.1:6379";
  // Fail fast instead of queueing commands while Redis is away: the services answer 503.
  const common = { disableOfflineQueue: true };
  const socket = { connectTimeout: 500, reconnectStrategy: () => 200 };
  if (url.startsWith("/")) return { ...common, socket: { ...socket, path: url } };
  const parsed = new URL(url);
  if (parsed.protocol === "unix:" || parsed.protocol === "redis+unix:") {
    const database = Number(parsed.searchParams.get("db") || 0);
    const password = parsed.searchParams.get("password") || undefined;
    return { ...common, database, password, socket: { ...socket, path: decodeURIComponent(parsed.pathname) } };
  }
  const password = parsed.searchParams.get("password");
  parsed.search = "";
  return { ...common, url: parsed.toString(), ...(password ? { password } : {}), socket };
}

// Longest a request may wait on the session store before answering 503 (a frozen Redis holds
// commands forever; node-redis has no per-command timeout of its own).
const STORE_DEADLINE_MS = 600;

const UNAVAILABLE = {
  error: "session store unavailable",
  message: "The session store (Redis) cannot be reached; try again shortly.",
};

function sessionMiddleware() {
  const secret = process.env.SESSION_SECRET;
  if (!secret) {
    console.error("Error! SESSION_SECRET is not set\nSet SESSION_SECRET to a long random string.");
    process.exit(1);
  }
  const client = createClient(redisOptions(process.env.REDIS_SESSION_URL));
  client.on("error", (err) => console.error("redis:", err.message));
  client.on("ready", () => console.log("session store ready"));
  client.connect().catch(() => {});
  const middleware = session({
    secret: secret.split(","),
    store: new RedisStore({ client }),
    resave: false,
    saveUninitialized: false,
  });
  return (req, res, next) => {
    // express-session answers 200 even when the save at the end fails: refuse up front instead.
    if (!client.isReady) return storeUnavailable(res);
    // express-session wraps res.end to save first; keep the raw one to answer past a stuck save.
    const rawEnd = res.end;
    let timedOut = false;
    const timer = setTimeout(() => {
      if (res.headersSent || res.writableEnded) return;
      timedOut = true;
      req.session = null; // no Set-Cookie on a 503
      res.statusCode = 503;
      res.setHeader("Retry-After", "1");
      res.setHeader("Content-Type", "application/json; charset=utf-8");
      rawEnd.call(res, JSON.stringify(UNAVAILABLE));
    }, STORE_DEADLINE_MS);
    const clear = () => clearTimeout(timer);
    res.on("finish", clear);
    res.on("close", clear);
    middleware(req, res, (err) => {
      if (!timedOut) next(err);
    });
  };
}

function storeUnavailable(res) {
  if (res.headersSent) return;
  res.status(503).set("Retry-After", "1").json(UNAVAILABLE);
}

module.exports = { sessionMiddleware, storeUnavailable };
