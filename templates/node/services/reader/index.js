// reader: the app service of the counter demo. It only reads the session the writer set up.
"use strict";
const express = require("express");
const { sessionMiddleware, storeUnavailable } = require("./session");

const app = express();
// Believe X-Forwarded-Proto from stack's proxy on loopback only: `cookie.secure: "auto"` then
// marks the cookie Secure for requests that came over HTTPS.
app.set("trust proxy", "loopback");
app.use(sessionMiddleware());

app.get("/", (req, res) => {
  if (!req.session) return storeUnavailable(res);
  if (!req.session.user) {
    return res
      .status(403)
      .json({ message: 'Please go "log in!" (set up your session)', login: "/login" });
  }
  res.json({ user: req.session.user, count: req.session.count });
});

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  console.error("session store error:", err.message);
  storeUnavailable(res);
});

const port = Number(process.env.PORT || 8080);
const server = app.listen(port, process.env.HOST || "127.0.0.1", () => {
  console.log(`reader listening on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
process.on("SIGINT", () => server.close(() => process.exit(0)));
