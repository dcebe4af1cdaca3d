// Session set-up shared in spirit by writer and reader (each service carries its own copy so it
// runs on its own): express-session + connect-redis on the Redis named by REDIS_SESSION_URL.
"use strict";
const session = require("express-session");
const { RedisStore } = require("connect-redis");
const { createClient, createCluster, createSentinel } = require("redis");

// Every form stack accepts: redis://, rediss://, unix:///path, redis+unix:///path, a bare
// /path/to.sock, the 2017 redis://host:port?password=pass, and past one server
// redis-sentinel://[:pass@]host:port[,host:port...][/db]#master-name and
// redis-cluster://[:pass@]host:port[,host:port...] (seed nodes; the others are discovered).
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

// `redis-sentinel://` and `redis-cluster://` by hand: a list of host:port is no URL authority.
// The password (and db) are the data nodes', as in Lettuce; the sentinels are asked without.
function multiNodeUrl(url) {
  const scheme = url.slice(0, url.indexOf("://")).toLowerCase();
  let rest = url.slice(scheme.length + 3);
  let name = null;
  if (rest.includes("#")) [rest, name] = [rest.slice(0, rest.indexOf("#")), decodeURIComponent(rest.slice(rest.indexOf("#") + 1))];
  const query = new URLSearchParams(rest.includes("?") ? rest.slice(rest.indexOf("?") + 1) : "");
  rest = rest.split("?")[0];
  const [authority, db] = [rest.split("/")[0], rest.split("/")[1] || ""];
  const at = authority.lastIndexOf("@");
  const userinfo = at >= 0 ? authority.slice(0, at) : "";
  const hosts = at >= 0 ? authority.slice(at + 1) : authority;
  const [user, pass] = userinfo.includes(":") ? userinfo.split(/:(.*)/s) : [userinfo, ""];
  const defaultPort = scheme === "redis-sentinel" ? 26379 : 6379;
  const nodes = hosts.split(",").map((node) => {
    const match = node.trim().match(/^\[?([^\]]*?)\]?(?::(\d+))?$/);
    return { host: match[1], port: Number(match[2] || defaultPort) };
  });
  return {
    scheme,
    nodes,
    name,
    database: Number(query.get("db") || db || 0),
    username: decodeURIComponent(user) || undefined,
    password: query.get("password") || decodeURIComponent(pass) || undefined,
  };
}

// A node-redis client for any form: a plain client, a cluster client (connect-redis scans
// every master itself) or a sentinel client that follows failovers.
function createRedisClient(raw) {
  const url = raw || "";
  const scheme = url.slice(0, url.indexOf("://")).toLowerCase();
  if (scheme !== "redis-cluster" && scheme !== "redis-sentinel") {
    return createClient(redisOptions(url));
  }
  const { nodes, name, database, username, password } = multiNodeUrl(url);
  const socket = { connectTimeout: 500, reconnectStrategy: () => 200 };
  const nodeOptions = { disableOfflineQueue: true, username, password, socket };
  if (scheme === "redis-cluster") {
    return createCluster({
      rootNodes: nodes.map(({ host, port }) => ({ socket: { host, port } })),
      defaults: nodeOptions,
    });
  }
  return createSentinel({
    name,
    sentinelRootNodes: nodes,
    nodeClientOptions: { ...nodeOptions, database },
    sentinelClientOptions: { socket },
  });
}

// Connects, and keeps trying while the store is away at start: a cluster or sentinel client
// gives up on its first failed connect (a plain one retries by itself, and says "ready").
function connectForever(client, url) {
  const multiNode = /^redis-(cluster|sentinel):\/\//i.test(url || "");
  client.connect().then(
    () => multiNode && console.log("session store ready"),
    (err) => {
      console.error("redis:", err.message);
      if (multiNode) setTimeout(() => connectForever(client, url), 500);
    },
  );
}

// Longest a request may wait on the session store before answering 503 (a frozen Redis holds
// commands forever; node-redis has no per-command timeout of its own).
const STORE_DEADLINE_MS = 600;

const UNAVAILABLE = {
  error: "session store unavailable",
  message: "The session store (Redis) cannot be reached; try again shortly.",
};

// SESSION_COOKIE_SECURE (auto, the default: Secure when the request came over HTTPS, which
// needs the app's `trust proxy` set to loopback; true; false) and SESSION_COOKIE_SAMESITE
// (lax, strict, none; unset: no attribute), as the Rust session library reads them.
function cookieOptions() {
  const secure = (process.env.SESSION_COOKIE_SECURE || "auto").trim().toLowerCase();
  const sameSite = (process.env.SESSION_COOKIE_SAMESITE || "").trim().toLowerCase();
  if (!["auto", "true", "false"].includes(secure)) {
    console.error(`Error! SESSION_COOKIE_SECURE is \`${secure}\`, not \`auto\`, \`true\` or \`false\`\nSet it to one of those, or unset it for \`auto\`.`);
    process.exit(1);
  }
  if (sameSite && !["lax", "strict", "none"].includes(sameSite)) {
    console.error(`Error! SESSION_COOKIE_SAMESITE is \`${sameSite}\`, not \`lax\`, \`strict\` or \`none\`\nSet it to one of those, or unset it for no SameSite attribute.`);
    process.exit(1);
  }
  return { secure: secure === "auto" ? "auto" : secure === "true", ...(sameSite ? { sameSite } : {}) };
}

function sessionMiddleware() {
  const secret = process.env.SESSION_SECRET;
  if (!secret) {
    console.error("Error! SESSION_SECRET is not set\nSet SESSION_SECRET to a long random string.");
    process.exit(1);
  }
  const client = createRedisClient(process.env.REDIS_SESSION_URL);
  client.on("error", (err) => console.error("redis:", err.message || err));
  client.on("ready", () => console.log("session store ready"));
  connectForever(client, process.env.REDIS_SESSION_URL);
  const store = new RedisStore({ client });
  const middleware = session({
    secret: secret.split(","),
    store,
    resave: false,
    saveUninitialized: false,
    cookie: cookieOptions(),
  });
  // With `secure: "auto"`, express-session stores `"secure":false` for a session made over
  // plain HTTP; leave it out, as express-session's default (and the Rust library) does, so the
  // stored cookie object stays the same whichever peer made the session.
  const generate = store.generate;
  store.generate = (req) => {
    generate.call(store, req);
    if (req.session.cookie.secure === false) req.session.cookie.secure = undefined;
  };
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

module.exports = { sessionMiddleware, storeUnavailable, multiNodeUrl };
