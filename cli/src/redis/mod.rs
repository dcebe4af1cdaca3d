//! Redis for stack: the managed `redis-server` that `stack up` starts when `REDIS_SESSION_URL`
//! is unset ([`managed`]), and a
//! PING for one the user brings ([`ping`]). The `stack redis` commands (a later issue) will live beside it.

pub mod managed;
pub mod ping;
