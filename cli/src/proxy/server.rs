//! The accept loop: one hyper HTTP/1.1 connection per client, with the header caps applied,
//! the server's watchdog for the header and idle timeouts, and a graceful shutdown.
//!
//! Owns client connections and their lifetime. hyper-util's `server_graceful` example is the
//! template: an accept error is logged and the loop goes on; on shutdown the listener is
//! dropped at once, in-flight requests get `shutdown_grace` to finish, then everything left is
//! cut. It never looks inside a request (that is `handler`).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{self, Shared};
use super::limits::ProxyConfig;
use super::pool::Pool;
use super::routing::Routing;
use super::watchdog::{Activity, Limits, Verdict, Watchdog, WatchedIo};

const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Where a proxy's client connections come from.
pub enum Connections {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted by another thread and handed over ([`super::run_on_threads`] deals them out
    /// in turn, so every thread serves as many connections).
    HandedOver(mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl Connections {
    /// The next client connection; `None` once no more will come.
    async fn next(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match self {
            Self::Listener(listener) => Some(listener.accept().await),
            Self::HandedOver(handed_over) => {
                let (stream, addr) = handed_over.recv().await?;
                Some(TcpStream::from_std(stream).map(|stream| (stream, addr)))
            }
        }
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Listener(listener) => listener.local_addr().ok(),
            Self::HandedOver(_) => None,
        }
    }
}

/// Serves `connections` until `shutdown` completes, then shuts down gracefully.
pub async fn serve(
    mut incoming: Connections,
    routing: Routing,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let shared = Arc::new(Shared {
        routing,
        pool: Pool::new(&config),
        config: config.clone(),
        tunnels: TaskTracker::new(),
        cut_off: CancellationToken::new(),
    });
    // No hyper timer: hyper would arm a fresh one for every request head (the header timeout
    // was ~8% of the proxy's instructions per request); the connection's watchdog enforces it.
    let mut http = http1::Builder::new();
    http.max_header_size(config.max_header_size)
        .keep_alive(true);
    // hyper's default is 100 headers on the stack; setting any value, even 100, makes it fill
    // a fresh header array for every request, so only set it when it differs.
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http.max_headers(config.max_headers);
    }
    // Connections are tracked, and told to finish up through the watchdog (hyper-util's
    // GracefulShutdown does the same, but does not take hyper's upgradeable http1 connection).
    let connections = TaskTracker::new();
    let watchdog = Watchdog::start(Limits {
        idle: config.idle_timeout,
        head: config.header_read_timeout,
        response: config.response_timeout,
    });
    let mut shutdown = pin!(shutdown);
    let local_addr = incoming.local_addr();
    tracing::info!(addr = ?local_addr, "proxy listening");
    let mut open = true;

    loop {
        tokio::select! {
            accepted = incoming.next(), if open => {
                let (stream, client_addr) = match accepted {
                    Some(Ok(accepted)) => accepted,
                    // The acceptor stopped: serve what is here until the shutdown.
                    None => {
                        open = false;
                        continue;
                    }
                    Some(Err(error)) => {
                        // Out of file descriptors and the like: back off a little, keep serving.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                let activity = Arc::new(Activity::new());
                watchdog.watch(Arc::clone(&activity));
                let io = TokioIo::new(WatchedIo::new(stream, Arc::clone(&activity)));
                let request_shared = Arc::clone(&shared);
                let client = Arc::new(handler::Peer::new(client_addr));
                let request_activity = Arc::clone(&activity);
                let service = service_fn(move |request| {
                    handler::handle(
                        Arc::clone(&request_shared),
                        Arc::clone(&client),
                        request_activity.request_started(),
                        request,
                    )
                });
                let connection = http.serve_connection(io, service).with_upgrades();
                connections.spawn(async move {
                    let mut connection = pin!(connection);
                    let mut stopping = false;
                    // The connection, and what the watchdog says about it: one atomic read per
                    // poll, no timer or shutdown future of its own.
                    let served = poll_fn(|cx| {
                        match activity.poll_verdict(cx) {
                            Verdict::GoOn => {}
                            Verdict::Stop => {
                                if !stopping {
                                    // Finish the request in flight (if any), then close.
                                    stopping = true;
                                    connection.as_mut().graceful_shutdown();
                                }
                            }
                            Verdict::Cut(cut) => return Poll::Ready(Err(cut)),
                        }
                        connection.as_mut().poll(cx).map(Ok)
                    })
                    .await;
                    activity.close();
                    match served {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(client = %client_addr, %error, "client connection ended with an error");
                        }
                        Err(cut) => {
                            tracing::debug!(client = %client_addr, reason = cut.reason(), "client connection closed");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(incoming);
    tracing::info!(addr = ?local_addr, "proxy stopping: waiting for requests in flight");
    watchdog.stop_all();
    connections.close();
    shared.tunnels.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!(grace_s = config.shutdown_grace.as_secs(), "requests still in flight after the grace period; cut off");
        }
    }
    watchdog.cut_all();
    shared.cut_off.cancel();
    shared.tunnels.wait().await;
    tracing::info!(addr = ?local_addr, "proxy stopped");
}
