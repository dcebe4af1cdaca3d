//! Keep-alive connections to upstreams: a small stack of idle HTTP/1.1 connections per
//! upstream authority.
//!
//! Owns connecting (timeout, `TCP_NODELAY`, TCP keep-alive), checking idle connections out and
//! back in (most recently used first), dropping idle ones after `pool_idle_timeout`, and the
//! one safe retry of a pooled connection: when the upstream closed it while it sat idle and
//! the first write of the request fails, not a byte went out, so the request goes out again on
//! another pooled or a fresh connection. A request of which a byte may have gone out is never
//! sent again. It never chooses an instance or takes one out of rotation (that is `upstream`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::Response;
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::client::{ClientError, Connection, Reply, RequestHead};
use super::limits::ProxyConfig;

/// TCP keep-alive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connecting to the upstream failed")]
    Connect(#[source] io::Error),
    #[error("connecting to the upstream took longer than {}ms", .0.as_millis())]
    ConnectTimeout(Duration),
    #[error("the upstream request failed")]
    Request(#[source] ClientError),
}

impl PoolError {
    /// Whether no connection could be made, so nothing of the request was sent.
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_) | Self::ConnectTimeout(_))
    }
}

/// A request that got no response; the body comes back when none of it went out.
pub struct PoolFailure {
    pub error: PoolError,
    pub unsent_body: Option<Incoming>,
}

/// Idle keep-alive connections to every upstream one proxy talks to.
pub struct Pool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    /// Keyed by the upstream's authority as text, exact (not `Authority`, whose hash and
    /// comparison go byte by byte ignoring case); foldhash, not SipHash: hashed twice per
    /// request (checkout, checkin).
    idle: Mutex<HashMap<Arc<str>, Vec<IdleConnection>, foldhash::fast::RandomState>>,
    /// Bumped once per `idle_timeout` by the sweeper: connections checked in two generations
    /// ago have been idle for at least one period (no clock read per request).
    generation: AtomicU64,
    connect_timeout: Duration,
    max_idle_per_upstream: usize,
}

struct IdleConnection {
    connection: Connection,
    generation: u64,
}

/// Where a connection goes back once its response is over: [`PoolSlot::give_back`].
pub struct PoolSlot {
    key: Arc<str>,
    pool: Weak<PoolShared>,
}

impl Pool {
    /// A pool with `config`'s connect timeout and idle limits. Must be called inside a tokio
    /// runtime: it spawns the sweeper of idle connections, which ends with the pool.
    pub fn new(config: &ProxyConfig) -> Self {
        let shared = Arc::new(PoolShared {
            idle: Mutex::new(HashMap::default()),
            generation: AtomicU64::new(0),
            connect_timeout: config.connect_timeout,
            max_idle_per_upstream: config.pool_max_idle_per_host,
        });
        tokio::spawn(sweep_idle(
            Arc::downgrade(&shared),
            config.pool_idle_timeout,
        ));
        Self { shared }
    }

    /// Sends a request to `authority` on an idle connection if one is left, else on a new
    /// one, and reads the response head. The response body comes with the connection; hand
    /// the connection to the returned slot when the body is over. `key` is `authority` as
    /// text, kept by the caller so a request does not build it.
    pub async fn send(
        &self,
        key: &Arc<str>,
        authority: &Authority,
        head: &RequestHead<'_>,
        mut body: Incoming,
        body_limit: Option<u64>,
    ) -> Result<(Response<()>, Reply, PoolSlot), PoolFailure> {
        loop {
            let (connection, pooled) = match self.shared.checkout(key) {
                Some(connection) => (connection, true),
                // Boxed: a new connection is the rare case, and its future would otherwise
                // make every request's future larger.
                None => match Box::pin(connect(authority, self.shared.connect_timeout)).await {
                    Ok(connection) => (connection, false),
                    Err(error) => {
                        return Err(PoolFailure {
                            error,
                            unsent_body: Some(body),
                        })
                    }
                },
            };
            match connection.send(head, body, body_limit).await {
                Ok((response, upstream)) => {
                    let slot = PoolSlot {
                        key: Arc::clone(key),
                        pool: Arc::downgrade(&self.shared),
                    };
                    return Ok((response, upstream, slot));
                }
                Err(failure) => match failure.unsent_body {
                    // The pooled connection was closed before a byte of the request went out:
                    // another connection may take it.
                    Some(unsent) if pooled => {
                        tracing::debug!(upstream = %authority, error = %failure.error, "pooled upstream connection was closed; trying another");
                        body = unsent;
                    }
                    unsent_body => {
                        return Err(PoolFailure {
                            error: PoolError::Request(failure.error),
                            unsent_body,
                        })
                    }
                },
            }
        }
    }

    #[cfg(test)]
    fn n_idle(&self, authority: &Authority) -> usize {
        self.shared
            .idle
            .lock()
            .expect("the pool lock is never held across a panic")
            .get(authority.as_str())
            .map_or(0, Vec::len)
    }
}

impl PoolShared {
    /// The most recently used idle connection still open; closed ones are dropped.
    fn checkout(&self, key: &str) -> Option<Connection> {
        let mut idle = self
            .idle
            .lock()
            .expect("the pool lock is never held across a panic");
        let connections = idle.get_mut(key)?;
        while let Some(idle) = connections.pop() {
            if !idle.connection.is_unusable() {
                return Some(idle.connection);
            }
        }
        None
    }

    fn checkin(&self, key: Arc<str>, connection: Connection) {
        let generation = self.generation.load(Ordering::Relaxed);
        let connection = IdleConnection {
            connection,
            generation,
        };
        let mut idle = self
            .idle
            .lock()
            .expect("the pool lock is never held across a panic");
        let connections = idle.entry(key).or_default();
        if connections.len() < self.max_idle_per_upstream {
            connections.push(connection);
        }
    }

    /// Drops connections idle for at least one period and closed ones.
    fn sweep(&self) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut idle = self
            .idle
            .lock()
            .expect("the pool lock is never held across a panic");
        for connections in idle.values_mut() {
            connections
                .retain(|idle| idle.generation + 2 > generation && !idle.connection.is_unusable());
        }
        idle.retain(|_, connections| !connections.is_empty());
    }
}

impl PoolSlot {
    /// Hands a connection back for the next request (its response is over).
    pub fn give_back(self, connection: Connection) {
        if let Some(pool) = self.pool.upgrade() {
            pool.checkin(self.key, connection);
        }
    }
}

async fn sweep_idle(pool: Weak<PoolShared>, idle_timeout: Duration) {
    let mut ticks = tokio::time::interval(idle_timeout.max(Duration::from_millis(10)));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep();
    }
}

/// Opens a TCP connection to `authority`.
async fn connect(authority: &Authority, timeout: Duration) -> Result<Connection, PoolError> {
    let connecting = async {
        match authority.as_str().parse::<SocketAddr>() {
            // Instances are always `ip:port`: no resolver round trip.
            Ok(addr) => TcpStream::connect(addr).await,
            Err(_) => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await
            }
        }
    };
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_elapsed| PoolError::ConnectTimeout(timeout))?
        .map_err(PoolError::Connect)?;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY on an upstream connection");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%error, "could not set TCP keep-alive on an upstream connection");
    }
    Ok(Connection::new(stream))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http::HeaderValue;
    use http_body_util::{BodyExt, Empty};
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::super::body::ResponseBody;
    use super::super::client::{test_head, test_incoming};

    use super::*;

    /// A listener on a free loopback port, and its address as an authority.
    async fn loopback_listener() -> (TcpListener, Authority) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let authority = listener
            .local_addr()
            .expect("a bound listener has an address")
            .to_string()
            .parse()
            .expect("ip:port is an authority");
        (listener, authority)
    }

    /// A real upstream on loopback counting the connections it accepted; each connection
    /// serves keep-alive requests until `max_per_connection` were answered, then closes.
    async fn upstream(max_per_connection: usize) -> (Authority, Arc<AtomicUsize>) {
        let (listener, authority) = loopback_listener().await;
        let n_connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&n_connections);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let mut response = Response::new(Empty::<Bytes>::new());
                            if n >= max_per_connection {
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = server_http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (authority, n_connections)
    }

    /// Sends `GET /` and returns the response body, which gives the connection back once read.
    async fn send(pool: &Pool, authority: &Authority) -> Result<ResponseBody, PoolError> {
        let host = HeaderValue::from_str(authority.as_str())
            .expect("an authority is a valid header value");
        let headers = http::HeaderMap::new();
        let path_and_query = http::uri::PathAndQuery::from_static("/");
        let head = test_head(&http::Method::GET, &path_and_query, &host, &headers);
        let key: Arc<str> = Arc::from(authority.as_str());
        let (response, upstream, slot) = pool
            .send(
                &key,
                authority,
                &head,
                test_incoming(vec![], true).await,
                None,
            )
            .await
            .map_err(|failure| failure.error)?;
        assert_eq!(response.status(), http::StatusCode::OK);
        let Reply::Body(reader) = upstream else {
            panic!("no upgrade was asked for");
        };
        Ok(ResponseBody::upstream(reader, None, Some(slot)))
    }

    async fn send_and_finish(pool: &Pool, authority: &Authority) -> Result<(), PoolError> {
        send(pool, authority)
            .await?
            .collect()
            .await
            .expect("the response body arrives");
        Ok(())
    }

    /// Waits (bounded) until the released connection is ready for its next request.
    async fn until(mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in 5 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn reuses_a_released_connection() {
        let (authority, n_connections) = upstream(usize::MAX).await;
        let pool = Pool::new(&ProxyConfig::default());
        for _ in 0..5 {
            send_and_finish(&pool, &authority).await.expect("answered");
            until(|| pool.n_idle(&authority) == 1).await;
        }
        assert_eq!(n_connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let (authority, n_connections) = upstream(1).await;
        let pool = Pool::new(&ProxyConfig::default());
        for _ in 0..3 {
            send_and_finish(&pool, &authority).await.expect("answered");
        }
        assert_eq!(n_connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_skipped() {
        // The upstream answers one request per connection and then closes it, without saying
        // so (no `Connection: close`), as a server with a short keep-alive timeout does.
        let (listener, authority) = loopback_listener().await;
        let n_connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&n_connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
            }
        });
        let pool = Pool::new(&ProxyConfig::default());
        send_and_finish(&pool, &authority).await.expect("answered");
        assert_eq!(pool.n_idle(&authority), 1);
        // Let the runtime see the close before the next checkout.
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_and_finish(&pool, &authority)
            .await
            .expect("answered on a new connection");
        assert_eq!(n_connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let authority: Authority = listener
            .local_addr()
            .expect("a bound listener has an address")
            .to_string()
            .parse()
            .expect("ip:port is an authority");
        drop(listener);
        let pool = Pool::new(&ProxyConfig::default());
        let error = send_and_finish(&pool, &authority)
            .await
            .expect_err("nothing listens");
        assert!(error.is_connect(), "{error:?}");
    }

    #[tokio::test]
    async fn idle_connections_are_dropped_after_the_idle_timeout() {
        let (authority, _) = upstream(usize::MAX).await;
        let config = ProxyConfig {
            pool_idle_timeout: Duration::from_millis(50),
            ..ProxyConfig::default()
        };
        let pool = Pool::new(&config);
        send_and_finish(&pool, &authority).await.expect("answered");
        assert_eq!(pool.n_idle(&authority), 1);
        until(|| pool.n_idle(&authority) == 0).await;
    }

    #[tokio::test]
    async fn keeps_at_most_the_idle_limit() {
        let (authority, _) = upstream(usize::MAX).await;
        let config = ProxyConfig {
            pool_max_idle_per_host: 1,
            ..ProxyConfig::default()
        };
        let pool = Pool::new(&config);
        let first = send(&pool, &authority).await.expect("answered");
        let second = send(&pool, &authority).await.expect("answered");
        first.collect().await.expect("body");
        second.collect().await.expect("body");
        assert_eq!(pool.n_idle(&authority), 1);
    }
}
