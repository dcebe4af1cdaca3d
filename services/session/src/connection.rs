//! How the store reaches Redis: one server, the master of a Sentinel set, or a Redis Cluster.
//!
//! Owns dialing (lazily: Redis may be down when a service starts), keeping one shared
//! connection, dropping it when it breaks or stalls so the next command dials again, and the one
//! question every command asks after a failure: may it run again? It never decides what a
//! command means (the store does) and logs URLs only masked.
//!
//! - One server (`redis://`, `rediss://`, a Unix socket): one multiplexed connection.
//! - Sentinel (`redis-sentinel://`): the sentinels are asked for the master each time a
//!   connection is made (redis-rs checks its `ROLE`), so after a failover the broken connection
//!   is dropped and the next command reaches the promoted master by itself.
//! - Cluster (`redis-cluster://`): redis-rs's cluster client routes every command by slot,
//!   follows `MOVED` and `ASK` and refreshes the slot map on its own. It also re-sends a command
//!   whose connection broke, which is right for a read but could apply a compare-and-set twice
//!   (it may have landed before the master died). So there are two cluster connections: one with
//!   redis-rs's retries for commands that may run twice, and one with none for those that may
//!   not, whose redirections ([`Failure::NotRun`]) the store follows itself: `MOVED`, `TRYAGAIN`,
//!   `CLUSTERDOWN` are retried after the slot map is rebuilt, `ASK` is sent to the node named,
//!   after `ASKING`, as redis-rs would. A command refused with a redirection never ran, so
//!   following it cannot apply anything twice.

use crate::redis_url::{RedisAddr, RedisUrl};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::SingleNodeRoutingInfo;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Whether a command may run again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Running it twice is the same as once (reads, touch, delete, `SET NX` of a fresh id).
    Idempotent,
    /// It may have landed already (compare-and-set, rotate).
    Never,
}

/// What a failed command tells about running it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Refused before it ran (a redirection, a cluster or master in transition, a demoted
    /// master): safe to send again, for `ask` to that node first.
    NotRun { ask: Option<(String, u16)> },
    /// The connection failed: the command may or may not have run.
    Connection,
    /// Redis answered with an error about the command itself.
    Answer,
}

impl Failure {
    pub(crate) fn of(error: &RedisError) -> Failure {
        match error.kind() {
            ErrorKind::Ask => Failure::NotRun {
                ask: error
                    .redirect_node()
                    .and_then(|(node, _slot)| node.rsplit_once(':'))
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?))),
            },
            ErrorKind::Moved
            | ErrorKind::TryAgain
            | ErrorKind::ClusterDown
            | ErrorKind::MasterDown
            | ErrorKind::BusyLoadingError
            | ErrorKind::ReadOnly
            | ErrorKind::ClusterConnectionNotFound => Failure::NotRun { ask: None },
            // Nothing was sent on a connection that could not be made.
            _ if error.is_connection_refusal() => Failure::NotRun { ask: None },
            _ if error.is_io_error()
                || error.is_connection_dropped()
                || error.is_unrecoverable_error() =>
            {
                Failure::Connection
            }
            _ => Failure::Answer,
        }
    }
}

/// A connection lent to one command.
pub(crate) struct Lease {
    connection: Connection,
    generation: u64,
    /// Made for this command (so a failure is news, not a stale socket).
    pub(crate) fresh: bool,
}

#[derive(Clone)]
enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Lease {
    /// Sends `cmd`; with `ask`, to that node after `ASKING` (cluster only).
    pub(crate) async fn send(&self, cmd: &Cmd, ask: Option<&(String, u16)>) -> RedisResult<Value> {
        match (&self.connection, ask) {
            (Connection::Server(connection), _) => cmd.query_async(&mut connection.clone()).await,
            (Connection::Cluster(connection), None) => {
                cmd.query_async(&mut connection.clone()).await
            }
            (Connection::Cluster(connection), Some((host, port))) => {
                let mut pipeline = redis::pipe();
                pipeline.cmd("ASKING").add_command(cmd.clone());
                let mut replies = connection
                    .clone()
                    .route_pipeline(
                        &pipeline,
                        1,
                        1,
                        SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        },
                    )
                    .await?;
                replies.pop().ok_or_else(|| {
                    RedisError::from((ErrorKind::ClientError, "ASKING pipeline had no reply"))
                })
            }
        }
    }
}

/// Every way the store dials, each behind one lazily made shared connection.
pub(crate) enum Backend {
    /// One server or a Sentinel set's master. (Boxed, as the cluster's: a `Lazy` holds a whole
    /// client, and a backend is made once per service.)
    Server(Box<Lazy>),
    /// A cluster: `retrying` for idempotent commands, `once` for the others (module docs).
    Cluster {
        retrying: Box<Lazy>,
        once: Box<Lazy>,
    },
}

/// The cluster client's wait before a retry: random between the minimum and
/// 10 ms x 2^retry, capped at the maximum.
const RETRY_WAIT_MIN_MS: u64 = 20;
const RETRY_WAIT_MAX_MS: u64 = 100;

impl Backend {
    /// The backend for `url`; connects nothing yet.
    pub(crate) fn new(url: &RedisUrl, timeout: Duration) -> RedisResult<Self> {
        Ok(match &url.addr {
            RedisAddr::Tcp { .. } | RedisAddr::Unix(_) => {
                Backend::Server(Box::new(Lazy::new(url, Dial::Server(url.client()?))))
            }
            RedisAddr::Sentinel { .. } => Backend::Server(Box::new(Lazy::new(
                url,
                Dial::Sentinel(tokio::sync::Mutex::new(url.sentinel_client()?)),
            ))),
            RedisAddr::Cluster { nodes } => {
                let builder = || {
                    // redis-rs waits at least 1.28 s before it retries a command whose node
                    // is gone (and rebuilds the slot map meanwhile); every such command would
                    // outlive the command timeout and answer 503 even once a replica was
                    // promoted. 20 ms, doubling to at most 100 ms, retries inside the timeout.
                    let mut builder =
                        ClusterClientBuilder::new(nodes.iter().map(|node| url.node_info(node)))
                            .connection_timeout(timeout / 2)
                            .response_timeout(timeout)
                            .min_retry_wait(RETRY_WAIT_MIN_MS)
                            .max_retry_wait(RETRY_WAIT_MAX_MS);
                    if let Some(password) = url.password() {
                        builder = builder.password(password.to_owned());
                    }
                    if let Some(username) = &url.username {
                        builder = builder.username(username.clone());
                    }
                    builder
                };
                Backend::Cluster {
                    retrying: Box::new(Lazy::new(url, Dial::Cluster(builder().build()?))),
                    once: Box::new(Lazy::new(url, Dial::Cluster(builder().retries(0).build()?))),
                }
            }
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// The connection for a command that may (or may not) run twice.
    pub(crate) async fn lease(&self, retry: Retry) -> RedisResult<Lease> {
        self.lazy(retry).get().await
    }

    /// Drops a connection that broke or stalled, so the next command dials again. A cluster
    /// connection is kept: redis-rs reconnects its nodes and refreshes its slots itself.
    pub(crate) fn forget(&self, lease: &Lease) {
        if let Backend::Server(lazy) = self {
            lazy.forget(lease.generation);
        }
    }

    fn lazy(&self, retry: Retry) -> &Lazy {
        match (self, retry) {
            (Backend::Server(lazy), _) => lazy,
            (Backend::Cluster { retrying, .. }, Retry::Idempotent) => retrying,
            (Backend::Cluster { once, .. }, Retry::Never) => once,
        }
    }
}

/// How a connection is made.
enum Dial {
    Server(redis::Client),
    /// `SentinelClient` asks with `&mut self`; dials are serialised by `Lazy` anyway.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

/// One shared connection, made on first use and again after [`Lazy::forget`].
pub(crate) struct Lazy {
    dial: Dial,
    url: RedisUrl,
    current: ArcSwapOption<Held>,
    connecting: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

struct Held {
    generation: u64,
    connection: Connection,
}

impl Lazy {
    fn new(url: &RedisUrl, dial: Dial) -> Self {
        Self {
            dial,
            url: url.clone(),
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        }
    }

    async fn get(&self) -> RedisResult<Lease> {
        let lease = |held: &Held, fresh| Lease {
            connection: held.connection.clone(),
            generation: held.generation,
            fresh,
        };
        if let Some(held) = self.current.load_full() {
            return Ok(lease(&held, false));
        }
        // One task dials; the others wait for it instead of each opening sockets.
        let _connecting = self.connecting.lock().await;
        if let Some(held) = self.current.load_full() {
            return Ok(lease(&held, false));
        }
        let config = redis::AsyncConnectionConfig::new();
        let connection = match &self.dial {
            Dial::Server(client) => Connection::Server(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            Dial::Sentinel(client) => Connection::Server(
                client
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?,
            ),
            Dial::Cluster(client) => Connection::Cluster(client.get_async_connection().await?),
        };
        let held = Arc::new(Held {
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            connection,
        });
        tracing::info!(redis = %self.url, "connected to the session store");
        self.current.store(Some(Arc::clone(&held)));
        Ok(lease(&held, true))
    }

    /// Drops the connection of `generation` unless it was replaced already.
    fn forget(&self, generation: u64) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::warn!(redis = %self.url, "dropping the session store connection; the next request reconnects");
            self.current.compare_and_swap(&*current, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ErrorKind, detail: &str) -> RedisError {
        RedisError::from((kind, "test", detail.to_owned()))
    }

    #[test]
    fn redirections_never_ran_and_broken_connections_may_have() {
        assert_eq!(
            Failure::of(&error(ErrorKind::Ask, "3999 127.0.0.1:7002")),
            Failure::NotRun {
                ask: Some(("127.0.0.1".into(), 7002))
            }
        );
        for kind in [
            ErrorKind::Moved,
            ErrorKind::TryAgain,
            ErrorKind::ClusterDown,
            ErrorKind::ReadOnly,
        ] {
            assert_eq!(
                Failure::of(&error(kind, "3999 127.0.0.1:7002")),
                Failure::NotRun { ask: None },
                "{kind:?}"
            );
        }
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Failure::of(&refused), Failure::NotRun { ask: None });
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Failure::of(&reset), Failure::Connection);
        assert_eq!(
            Failure::of(&error(ErrorKind::ResponseError, "WRONGTYPE")),
            Failure::Answer
        );
    }
}
