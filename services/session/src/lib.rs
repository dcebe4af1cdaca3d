//! express-session compatible sessions for axum, stored the way connect-redis stores them.
//!
//! A Node service using `express-session` + `connect-redis` and a Rust service using this crate
//! read and write each other's sessions in one Redis (see SESSION-FORMAT.md).
//!
//! # Layout
//! - [`cookie`]: the signed `connect.sid` cookie (sign, verify with rotation, percent-encoding).
//! - [`id`]: session ids (24 CSPRNG bytes, base64url), their `sess:` keys and cluster slots.
//! - [`redis_url`]: `REDIS_SESSION_URL` in every form (one server, `redis-sentinel://`,
//!   `redis-cluster://`), displayed with the password masked; `rediss://` (TLS via rustls)
//!   trusts the bundled webpki roots, or only the PEM CA file named by `REDIS_TLS_CA_FILE` (for
//!   a self-signed local Redis).
//! - [`connection`] (private): dialing one server, a Sentinel set's master or a Cluster, and
//!   which failed commands may be sent again.
//! - [`data`]: a session's fields as ordered raw JSON, and the TTL rule.
//! - [`store`]: `RedisStore`, the connect-redis format with timeouts and compare-and-set.
//! - [`handle`]: `Session`, one request's session: load once, save on change, rotate, destroy.
//! - [`layer`]: the axum middleware, the extractor and the 503 answer.
//! - [`config`]: a service's environment (`HOST`, `PORT`, `REDIS_SESSION_URL`,
//!   `REDIS_TLS_CA_FILE`, `SESSION_SECRET`).
//! - [`service`]: `main` for a session service binary (serve, stop gracefully on signals).
//! - `testing` (feature `testing`): a real `redis-server`, Redis Cluster and Sentinel set for
//!   tests.

pub mod config;
mod connection;
pub mod cookie;
pub mod data;
pub mod handle;
pub mod id;
pub mod layer;
pub mod redis_url;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use handle::{Session, SessionError};
pub use layer::{middleware, Sessions};
