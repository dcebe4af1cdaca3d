//! Keep-alive connections to upstreams: a small stack of idle HTTP/1.1 connections per
//! upstream authority, built on `hyper::client::conn::http1` directly.
//!
//! Owns connecting (timeout, `TCP_NODELAY`, TCP keep-alive), checking idle connections out and
//! back in (most recently used first), dropping idle ones after `pool_idle_timeout`, and the
//! one safe retry of a pooled connection: when hyper hands the request back because the
//! connection closed before a byte of it was written, it goes out again on another pooled or a
//! fresh connection. A request hyper did not hand back is never sent again. It never chooses
//! an instance or takes one out of rotation (that is `upstream`).
//!
//! Why not hyper-util's legacy `Client`: for one request it builds a lazy connect future, looks
//! the pool up by `(Scheme, Authority)`, boxes the response future and hands the connection
//! back through a spawned task; here a checkout is a short critical section and a connection
//! goes back to its stack when the response body ends (`bench/RESULTS.md`, issue 4).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;
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
    #[error("the HTTP/1.1 handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    #[error("the upstream request failed")]
    Request(#[source] hyper::Error),
}

impl PoolError {
    /// Whether no connection could be made, so nothing of the request was sent.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Handshake(_)
        )
    }
}

/// Idle keep-alive connections to every upstream one proxy talks to.
pub struct Pool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    /// foldhash, not SipHash: hashed twice per request (checkout, checkin), keyed by upstreams
    /// the routing table names.
    idle: Mutex<HashMap<Authority, Vec<IdleConnection>, foldhash::fast::RandomState>>,
    /// Bumped once per `idle_timeout` by the sweeper: connections checked in two generations
    /// ago have been idle for at least one period (no clock read per request).
    generation: AtomicU64,
    connect_timeout: Duration,
    max_idle_per_upstream: usize,
}

struct IdleConnection {
    sender: SendRequest<RequestBody>,
    generation: u64,
}

/// The connection a response came on; [`PooledConnection::release`] hands it back once the
/// response body is over. Dropped instead, the connection is closed.
pub struct PooledConnection {
    sender: SendRequest<RequestBody>,
    authority: Authority,
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

    /// Sends `request` (origin-form URI, `Host` set) to `authority` on an idle connection if
    /// one is ready, else on a new one.
    pub async fn send(
        &self,
        authority: &Authority,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConnection), PoolError> {
        loop {
            let (mut sender, pooled) = match self.shared.checkout(authority) {
                Some(sender) => (sender, true),
                None => (
                    connect(authority, self.shared.connect_timeout).await?,
                    false,
                ),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let connection = PooledConnection {
                        sender,
                        authority: authority.clone(),
                        pool: Arc::downgrade(&self.shared),
                    };
                    return Ok((response, connection));
                }
                Err(mut error) => match error.take_message() {
                    // The pooled connection closed before the request was written: nothing
                    // went out, so another connection may take it.
                    Some(unsent) if pooled => {
                        tracing::debug!(upstream = %authority, error = %error.error(), "pooled upstream connection was closed; trying another");
                        request = unsent;
                    }
                    _ => return Err(PoolError::Request(error.into_error())),
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
            .get(authority)
            .map_or(0, Vec::len)
    }
}

impl PoolShared {
    /// The most recently used idle connection that is ready for a request. Closed ones are
    /// dropped; one still finishing its last response stays for later.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<RequestBody>> {
        let mut idle = self
            .idle
            .lock()
            .expect("the pool lock is never held across a panic");
        let connections = idle.get_mut(authority)?;
        let mut index = connections.len();
        while index > 0 {
            index -= 1;
            let connection = &connections[index];
            if connection.sender.is_closed() {
                connections.remove(index);
            } else if connection.sender.is_ready() {
                return Some(connections.remove(index).sender);
            }
        }
        None
    }

    fn checkin(&self, authority: Authority, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let generation = self.generation.load(Ordering::Relaxed);
        let connection = IdleConnection { sender, generation };
        let mut idle = self
            .idle
            .lock()
            .expect("the pool lock is never held across a panic");
        let connections = idle.entry(authority).or_default();
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
            connections.retain(|connection| {
                connection.generation + 2 > generation && !connection.sender.is_closed()
            });
        }
        idle.retain(|_, connections| !connections.is_empty());
    }
}

impl PooledConnection {
    /// Hands the connection back for the next request (its response is over).
    pub fn release(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.checkin(self.authority, self.sender);
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

/// Opens a TCP connection to `authority` and starts an HTTP/1.1 connection on it (upgrades
/// allowed, for WebSocket), driven by its own task.
async fn connect(
    authority: &Authority,
    timeout: Duration,
) -> Result<SendRequest<RequestBody>, PoolError> {
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
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(PoolError::Handshake)?;
    let upstream = authority.clone();
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%upstream, %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::server::conn::http1 as server_http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A real upstream on loopback counting the connections it accepted; each connection
    /// serves keep-alive requests until `max_per_connection` were answered, then closes.
    async fn upstream(max_per_connection: usize) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let authority: Authority = listener
            .local_addr()
            .expect("a bound listener has an address")
            .to_string()
            .parse()
            .expect("ip:port is an authority");
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

    async fn request(authority: &Authority) -> Request<RequestBody> {
        // An empty client body, as the proxy would wrap it: a real hyper Incoming from a
        // loopback request.
        let (incoming_tx, mut incoming_rx) = tokio::sync::mpsc::channel(1);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("one connection");
            let service = service_fn(move |request: Request<Incoming>| {
                let incoming_tx = incoming_tx.clone();
                async move {
                    let _ = incoming_tx.send(request.into_body()).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            });
            let _ = server_http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let stream = TcpStream::connect(addr).await.expect("connect loopback");
        let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        tokio::spawn(async move {
            let _ = sender.send_request(Request::new(Empty::new())).await;
        });
        let incoming = incoming_rx.recv().await.expect("a request body");
        let (body, _handle) = RequestBody::new(incoming, None);
        Request::builder()
            .uri("/")
            .header(http::header::HOST, authority.as_str())
            .body(body)
            .expect("a valid request")
    }

    async fn send_and_finish(pool: &Pool, authority: &Authority) -> Result<(), PoolError> {
        let (response, connection) = pool.send(authority, request(authority).await).await?;
        assert_eq!(response.status(), http::StatusCode::OK);
        response
            .into_body()
            .collect()
            .await
            .expect("the response body arrives");
        connection.release();
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
        let (first, first_connection) = pool
            .send(&authority, request(&authority).await)
            .await
            .expect("answered");
        let (second, second_connection) = pool
            .send(&authority, request(&authority).await)
            .await
            .expect("answered");
        first.into_body().collect().await.expect("body");
        second.into_body().collect().await.expect("body");
        first_connection.release();
        second_connection.release();
        assert_eq!(pool.n_idle(&authority), 1);
    }
}
