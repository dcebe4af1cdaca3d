//! The accept loop: one hyper HTTP/1.1 connection per client, with the header timeout, the
//! header caps and the idle timeout applied, and a graceful shutdown.
//!
//! Owns client connections and their lifetime. hyper-util's `server_graceful` example is the
//! template: an accept error is logged and the loop goes on; on shutdown the listener is
//! dropped at once, in-flight requests get `shutdown_grace` to finish, then everything left is
//! cut. It never looks inside a request (that is `handler`).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{self, Shared};
use super::limits::ProxyConfig;
use super::pool::Pool;
use super::routing::Routing;

const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Serves `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
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
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(config.max_header_size)
        .keep_alive(true);
    // hyper's default is 100 headers on the stack; setting any value, even 100, makes it fill
    // a fresh header array for every request, so only set it when it differs.
    if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        http.max_headers(config.max_headers);
    }
    // Connections are tracked, and told to finish up through `stopping` (hyper-util's
    // GracefulShutdown does the same, but does not take hyper's upgradeable http1 connection).
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    let local_addr = listener.local_addr().ok();
    tracing::info!(addr = ?local_addr, "proxy listening");

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, client_addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
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
                let io = TokioIo::new(IdleIo { stream, activity: Arc::clone(&activity) });
                let request_shared = Arc::clone(&shared);
                let client = Arc::new(handler::Client::new(client_addr));
                let service = service_fn(move |request| {
                    handler::handle(Arc::clone(&request_shared), Arc::clone(&client), request)
                });
                let connection = http.serve_connection(io, service).with_upgrades();
                let idle_timeout = config.idle_timeout;
                let stopping = stopping.clone();
                let cut_off = shared.cut_off.clone();
                connections.spawn(async move {
                    let mut connection = pin!(connection);
                    let served = tokio::select! {
                        served = connection.as_mut() => served,
                        () = activity.idle_for(idle_timeout) => {
                            tracing::debug!(client = %client_addr, "idle client connection closed");
                            return;
                        }
                        () = stopping.cancelled() => {
                            // Finish the request in flight (if any), then close.
                            connection.as_mut().graceful_shutdown();
                            tokio::select! {
                                served = connection => served,
                                () = cut_off.cancelled() => return,
                            }
                        }
                    };
                    if let Err(error) = served {
                        tracing::debug!(client = %client_addr, %error, "client connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    tracing::info!(addr = ?local_addr, "proxy stopping: waiting for requests in flight");
    stopping.cancel();
    connections.close();
    shared.tunnels.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!(grace_s = config.shutdown_grace.as_secs(), "requests still in flight after the grace period; cut off");
        }
    }
    shared.cut_off.cancel();
    shared.tunnels.wait().await;
    tracing::info!(addr = ?local_addr, "proxy stopped");
}

/// Whether a connection moved a byte lately: a counter bumped on every completed read or
/// write, compared by a watchdog once per idle period (no clock read on the I/O path), so an
/// idle connection is closed between one and two idle periods after its last byte.
struct Activity {
    n_events: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            n_events: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.n_events.fetch_add(1, Ordering::Relaxed);
    }

    /// Completes once a whole `idle_timeout` passed with no byte moving.
    async fn idle_for(&self, idle_timeout: Duration) {
        let mut seen = self.n_events.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(idle_timeout).await;
            let now = self.n_events.load(Ordering::Relaxed);
            if now == seen {
                return;
            }
            seen = now;
        }
    }
}

/// A client socket that records when it last moved a byte, for the idle timeout.
struct IdleIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
