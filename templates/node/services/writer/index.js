// writer: the auth service of the counter demo (express 4 + express-session + connect-redis).
// Routes and bodies are byte-for-byte those of the 2017 demo; the session format is the one the
// Rust services speak (SESSION-FORMAT.md), so a login here is a login there.
"use strict";
const express = require("express");
const { sessionMiddleware, storeUnavailable } = require("./session");

const app = express();
// Believe X-Forwarded-Proto from stack's proxy on loopback only: `cookie.secure: "auto"` then
// marks the cookie Secure for requests that came over HTTPS.
app.set("trust proxy", "loopback");
app.use(sessionMiddleware());

app.get("/login", (req, res, next) => {
  if (!req.session) return storeUnavailable(res);
  if (req.session.user) {
    return res.json({ message: "you are now logged in", user: req.session.user });
  }
  // A new id at login, keeping the data: an id planted before login is worthless after it.
  const data = { ...req.session };
  delete data.cookie;
  req.session.regenerate((err) => {
    if (err) return next(err);
    Object.assign(req.session, data);
    req.session.user = { id: Math.random() };
    res.json({ message: "you are now logged in", user: req.session.user });
  });
});

app.get("/increment", (req, res) => {
  if (!req.session) return storeUnavailable(res);
  req.session.count = (req.session.count || 0) + 1;
  res.json({ message: "Incremented Count", count: req.session.count });
});

app.get("/logout", (req, res, next) => {
  if (!req.session) return storeUnavailable(res);
  req.session.destroy((err) => {
    if (err) return next(err);
    res.json({ message: "logged out : count reset" });
  });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  console.error("session store error:", err.message);
  storeUnavailable(res);
});

const port = Number(process.env.PORT || 8090);
const server = app.listen(port, process.env.HOST || "127.0.0.1", () => {
  console.log(`writer listening on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
process.on("SIGINT", () => server.close(() => process.exit(0)));
