//! Redis for stack: the managed `redis-server` that `stack up` starts when `REDIS_SESSION_URL`
//! is unset ([`managed`]), a PING for one the user brings ([`ping`]), and what `stack redis`
//! needs to look inside the session store: [`locate`] (which Redis, which secrets), [`inspect`]
//! (SCAN-based reads and deletes), [`topology`] (the one server, the Sentinel set's master or
//! every master of a cluster), [`lookup`] (ids and signed cookies), [`watch`] (keyspace
//! notifications and field diffs) and [`pretty`] (coloured JSON, TTLs, sizes).

pub mod inspect;
pub mod locate;
pub mod lookup;
pub mod managed;
pub mod ping;
pub mod pretty;
pub mod topology;
pub mod watch;
