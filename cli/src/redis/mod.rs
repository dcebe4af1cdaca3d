//! Redis for stack: the managed `redis-server` that `stack up` starts when `REDIS_SESSION_URL`
//! is unset ([`managed`]). The `stack redis` commands (a later issue) will live beside it.

pub mod managed;
