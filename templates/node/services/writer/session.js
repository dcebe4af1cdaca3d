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

function sessionMiddleware() {
  const secret = process.env.SESSION_SECRET;
  if (!secret) {
    console.error("Error! SESSION_SECRET is not set\nSet SESSION_SECRET to a long random string.");
    process.exit(1);
  }
  const client = createClient(redisOptions(process.env.REDIS_SESSION_URL));
  client.on("error", (err) => console.error("redis:", err.message));
  client.connect().catch(() => {});
  return session({
    secret: secret.split(","),
    store: new RedisStore({ client }),
    resave: false,
    saveUninitialized: false,
  });
}

function storeUnavailable(res) {
  res
    .status(503)
    .set("Retry-After", "1")
    .json({ error: "session store unavailable", message: "The session store (Redis) cannot be reached; try again shortly." });
}

module.exports = { sessionMiddleware, storeUnavailable };
