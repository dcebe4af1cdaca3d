//! The in-process reverse proxy: one origin (`:3000`) in front of every alias and deployment.
//!
//! Owns client connections, host and path routing through a swappable [`RoutingTable`],
//! forwarding (hop-by-hop headers, `X-Forwarded-*`, WebSocket tunnels), the pooled upstream
//! client with round robin and its single safe retry, and the proxy's own JSON errors. It never
//! starts, stops or probes processes and never waits on the supervisor while serving a request:
//! all it knows is the table it was last handed.
//!
//! # Layout
//!
//! - `routing`: [`Routing`], [`RoutingTable`], [`HostRoute`], [`Target`], [`Deployment`],
//!   [`Backend`]; the contract with the supervisor.
//! - `host`: request checks (`Host`, `CONNECT`, framing) and host → rule → target.
//! - `forward`: hop-by-hop removal, `X-Forwarded-*`, `x-stack-*`, upgrade tunnels.
//! - `upstream`: round robin, connect-failure retry, timeouts.
//! - `client`: one HTTP/1.1 exchange with an upstream (head, body framing, upgrades).
//! - `pool`: keep-alive upstream connections per upstream, and the one safe retry.
//! - `body`: response bodies, streamed frame by frame.
//! - `limits`: [`ProxyConfig`], every timeout and size limit.
//! - `error`: [`ProxyError`] and its JSON body.
//! - `requests`: [`RequestLog`], the last 1,000 requests answered and each rule's hits.
//! - `reserved`: [`ReservedHost`], the host the proxy serves itself (`stack.localhost`).
//! - `handler`, `server`: one request end to end; the accept loop and graceful shutdown.
//! - `watchdog`: the header, idle and response timeouts of client connections: one sweep per
//!   server, no timer per request or per connection.
//!
//! # For the supervisor: building and swapping tables
//!
//! ```no_run
//! use std::sync::Arc;
//! use stack::proxy::{self, Deployment, HostRoute, Backend, Routing, RoutingTable, Target};
//! # async fn example(rules: Arc<stack::rules::RuleSet>) {
//! // Keep one Arc<Backend> per running process for as long as it lives.
//! let writer_1 = Arc::new(Backend::new(1, "127.0.0.1:41001".parse().unwrap()));
//! let writer = Target::Deployment(Arc::new(Deployment::new(
//!     "writer-gkdldldejq", // id, sent back in `x-stack-deployment`
//!     "writer",            // service
//!     vec![Arc::clone(&writer_1)], // ready instances only
//!     0,                   // instances starting, not ready yet
//! )));
//!
//! let mut table = RoutingTable::new();
//! table.insert("writer-gkdldldejq.localhost", HostRoute::Target(writer.clone()));
//! table.insert("writer.localhost", HostRoute::Target(writer.clone()));
//! // A path alias: one target per rule, in rule order.
//! let targets = vec![writer.clone(); rules.rules().len()];
//! table.insert("counter-demo.localhost", HostRoute::rules(rules, targets).unwrap());
//!
//! let routing = Routing::new(table);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(proxy::run(listener, routing.clone(), shutdown.clone().cancelled_owned()));
//!
//! // Later: build a complete new table and swap it in. Requests in flight finish on the old
//! // table; new requests see the new one; requests waiting for a starting deployment wake up.
//! routing.swap(RoutingTable::new());
//! # }
//! ```
//!
//! For throughput, `stack up` uses [`run_on_threads`] (a single-threaded runtime per
//! core, connections dealt out in turn) rather than [`run`] on a multi-threaded runtime: same behaviour,
//! 15-20% less CPU per request (`bench/RESULTS.md`, issue 4).
//!
//! Rules of the contract:
//!
//! - Tables are immutable once swapped in; build a new one for every change (deployment
//!   ready, instance up or down, scale, alias set or removed). Hosts are matched lower-case
//!   without port.
//! - A [`Deployment`] lists its *ready* instances; `n_starting` counts those not ready yet.
//!   While no listed instance is in rotation and `n_starting > 0`, requests wait up to
//!   [`ProxyConfig::starting_wait`] for the next swap instead of failing. With no instance at
//!   all and nothing starting, requests get 503.
//! - [`Target::Unavailable`] answers with its status: 503 `service_unavailable` for a CRASHED
//!   service (name it in the message), 502 `bad_gateway` for a deployment that disappeared.
//!   In a path alias it fails only its own rule.
//! - **Out of rotation**: when a connect to an instance fails, the proxy calls it out of
//!   rotation ([`Backend::is_out_of_rotation`]) and skips it while another instance is in
//!   rotation. Call [`Backend::put_back_in_rotation`] when the readiness check passes again.
//! - **Draining** an instance before stopping it: swap in a table without it (new requests
//!   stop going there), then poll [`Backend::in_flight`] until it is 0 or the grace period is
//!   over, then stop the process. `in_flight` counts requests sent whose response body has not
//!   ended or been dropped, WebSocket tunnels included.
//!
//! # Errors
//!
//! Every answer of the proxy itself is JSON, `{"error": "<code>", "message": "..."}`, with a
//! stable code: `no_route` (404; unknown host, with a `hosts` list, or no matching rule),
//! `bad_request` (400), `method_not_allowed` (405, `CONNECT`), `payload_too_large` (413),
//! `bad_gateway` (502), `service_unavailable` (503), `gateway_timeout` (504),
//! `request_header_fields_too_large` (431, HTTP/2). HTTP/1.1 request heads over the size caps
//! get hyper's 431; a client too slow to send its head is disconnected.

mod body;
mod client;
mod error;
mod forward;
mod handler;
mod host;
mod limits;
mod pool;
pub mod requests;
mod reserved;
mod routing;
mod server;
mod upstream;
mod watchdog;

use std::future::Future;

use tokio::net::TcpListener;

use server::{Connections, HandedOver};

pub use body::ReservedBody;
pub use error::ProxyError;
pub use limits::ProxyConfig;
pub use requests::{LoggedRequest, RequestLog};
pub use reserved::ReservedHost;
pub use routing::{
    host_key, Backend, Deployment, HostRoute, PathRules, Routing, RoutingError, RoutingTable,
    Target,
};

/// Serves `listener` with the default [`ProxyConfig`] until `shutdown` completes, then stops
/// accepting and gives requests in flight up to 10 s to finish.
pub async fn run(
    listener: TcpListener,
    routing: Routing,
    shutdown: impl Future<Output = ()> + Send,
) {
    server::serve(
        Connections::Listener(listener),
        routing,
        ProxyConfig::default(),
        None,
        None,
        shutdown,
    )
    .await;
}

/// The TLS port of [`run_on_threads`]: its socket and the rustls configuration (certificates
/// per SNI name, ALPN `h2` and `http/1.1`) it is served with.
pub struct TlsListener {
    pub listener: std::net::TcpListener,
    pub config: std::sync::Arc<rustls::ServerConfig>,
}

/// Runs the proxy on `n_threads` threads, each with its own single-threaded tokio runtime
/// and upstream pool (nginx's worker model), and one more thread that accepts on `listener`
/// (and on `tls`'s, whose clients get HTTPS with HTTP/2 or HTTP/1.1, the same routes) and deals
/// connections out in turn. On a loaded machine this costs 15-20% less CPU per request than
/// one multi-threaded runtime, because a request never wakes another thread
/// (`bench/RESULTS.md`, issue 4). Returns once every thread has stopped after `shutdown` is
/// cancelled.
pub fn run_on_threads(
    listener: std::net::TcpListener,
    tls: Option<TlsListener>,
    routing: Routing,
    config: ProxyConfig,
    n_threads: usize,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let https_port = tls
        .as_ref()
        .and_then(|tls| tls.listener.local_addr().ok())
        .map(|addr| addr.port());
    let (tls_listener, tls_config) = match tls {
        Some(TlsListener { listener, config }) => {
            listener.set_nonblocking(true)?;
            (Some(listener), Some(config))
        }
        None => (None, None),
    };
    let mut threads = Vec::new();
    let mut workers = Vec::new();
    for n in 0..n_threads.max(1) {
        let (handed_over, connections) = tokio::sync::mpsc::unbounded_channel();
        workers.push(handed_over);
        let routing = routing.clone();
        let config = config.clone();
        let tls_config = tls_config.clone();
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{n}"))
            .spawn(move || -> std::io::Result<()> {
                current_thread_runtime()?.block_on(server::serve(
                    Connections::HandedOver(connections),
                    routing,
                    config,
                    tls_config,
                    https_port,
                    shutdown.cancelled_owned(),
                ));
                Ok(())
            })?;
        threads.push(thread);
    }
    // One thread accepts and deals connections out in turn: threads that all accepted on the
    // shared socket themselves ended up serving 2:1 shares, and the busier one was the
    // bottleneck (`bench/RESULTS.md`, issue 4).
    let acceptor = std::thread::Builder::new()
        .name("proxy-accept".into())
        .spawn(move || -> std::io::Result<()> {
            current_thread_runtime()?.block_on(async move {
                let listener = TcpListener::from_std(listener)?;
                let tls_listener = tls_listener.map(TcpListener::from_std).transpose()?;
                tracing::info!(addr = ?listener.local_addr().ok(), tls_addr = ?tls_listener.as_ref().and_then(|tls| tls.local_addr().ok()), threads = workers.len(), "proxy accepting");
                deal_out(listener, tls_listener, workers, shutdown).await;
                Ok(())
            })
        })?;
    threads.push(acceptor);
    let mut outcome = Ok(());
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => outcome = Err(error),
            Err(_) => outcome = Err(std::io::Error::other("a proxy thread panicked")),
        }
    }
    outcome
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Accepts on `listener` (and `tls_listener`) until `shutdown`, handing each connection to the
/// next worker in turn.
async fn deal_out(
    listener: TcpListener,
    tls_listener: Option<TcpListener>,
    workers: Vec<tokio::sync::mpsc::UnboundedSender<HandedOver>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut next = 0;
    loop {
        let (accepted, tls) = tokio::select! {
            accepted = listener.accept() => (accepted, false),
            accepted = accept_on(tls_listener.as_ref()) => (accepted, true),
            () = shutdown.cancelled() => return,
        };
        let handed_over = accepted.and_then(|(stream, addr)| {
            Ok(HandedOver {
                stream: stream.into_std()?,
                addr,
                tls,
            })
        });
        match handed_over {
            Ok(connection) => {
                // A worker that is gone has stopped: its connection is dropped (closed).
                let _ = workers[next].send(connection);
                next = (next + 1) % workers.len();
            }
            Err(error) => {
                // Out of file descriptors and the like: back off a little, keep serving.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The next connection on `listener`; never, without one.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// [`run`] with explicit timeouts and limits.
pub async fn run_with_config(
    listener: TcpListener,
    routing: Routing,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    server::serve(
        Connections::Listener(listener),
        routing,
        config,
        None,
        None,
        shutdown,
    )
    .await;
}
