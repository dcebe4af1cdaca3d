//! The accept loop: one hyper HTTP/1.1 connection per plain client, HTTP/2 or HTTP/1.1 (by
//! ALPN) per TLS client, with the header caps applied, the server's watchdog for the header and
//! idle timeouts, and a graceful shutdown.
//!
//! Owns client connections and their lifetime, the TLS handshake included (bounded by the
//! header timeout: the watchdog counts it as waiting for the first head). hyper-util's
//! `server_graceful` example is the template: an accept error is logged and the loop goes on;
//! on shutdown the listener is dropped at once, in-flight requests get `shutdown_grace` to
//! finish, then everything left is cut. It never looks inside a request (that is `handler`).

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::Version;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::{self, Shared};
use super::limits::ProxyConfig;
use super::pool::Pool;
use super::routing::Routing;
use super::watchdog::{
    Activity, Cut, Limits, Verdict, Watchdog, WatchedIo, WrongProtocol, TLS_HANDSHAKE,
};

const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// h2's cap on a decoded header block, as a multiple of the configured head size (the handler
/// answers 431 past the configured size; see `Secure::new`).
const H2_HEADER_LIST_HEADROOM: usize = 4;
/// h2's cap is at least this, whatever the configured head size.
const H2_MIN_HEADER_LIST: usize = 256 * 1024;

/// A client connection handed from the accepting thread to a worker.
pub struct HandedOver {
    pub stream: std::net::TcpStream,
    pub addr: SocketAddr,
    /// Accepted on the TLS port.
    pub tls: bool,
}

/// Where a proxy's client connections come from.
pub enum Connections {
    /// Accepted here.
    Listener(TcpListener),
    /// Accepted by another thread and handed over ([`super::run_on_threads`] deals them out
    /// in turn, so every thread serves as many connections).
    HandedOver(mpsc::UnboundedReceiver<HandedOver>),
}

impl Connections {
    /// The next client connection; `None` once no more will come.
    /// The next client connection and whether it is a TLS one; `None` once no more will come.
    async fn next(&mut self) -> Option<io::Result<(TcpStream, SocketAddr, bool)>> {
        match self {
            Self::Listener(listener) => Some(
                listener
                    .accept()
                    .await
                    .map(|(stream, addr)| (stream, addr, false)),
            ),
            Self::HandedOver(handed_over) => {
                let HandedOver { stream, addr, tls } = handed_over.recv().await?;
                Some(TcpStream::from_std(stream).map(|stream| (stream, addr, tls)))
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

/// Serves `connections` until `shutdown` completes, then shuts down gracefully. Connections
/// handed over as TLS ones are served with `tls` (and closed at once without it).
pub async fn serve(
    mut incoming: Connections,
    routing: Routing,
    config: ProxyConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    https_port: Option<u16>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let refusals = Arc::new(WrongProtocol {
        h2: h2_refusal(https_port),
        tls: tls_refusal(https_port),
    });
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
    let secure = tls.map(|tls| Secure::new(tls, &config));
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
                let (stream, client_addr, is_tls) = match accepted {
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
                if is_tls {
                    let Some(secure) = &secure else {
                        activity.close();
                        continue;
                    };
                    let io = WatchedIo::new(stream, Arc::clone(&activity));
                    connections.spawn(secure.serve(io, client_addr, activity, Arc::clone(&shared)));
                    continue;
                }
                let io = TokioIo::new(WatchedIo::plain(stream, Arc::clone(&activity), Arc::clone(&refusals)));
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
                    // The connection, and what the watchdog says about it: one atomic read per
                    // poll, no timer or shutdown future of its own. On a stop it finishes the
                    // request in flight (if any), then closes.
                    let served = watched(&activity, pin!(connection), |connection| {
                        connection.graceful_shutdown();
                    })
                    .await;
                    activity.close();
                    log_end(client_addr, served);
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

/// What a client that speaks HTTP/2 with prior knowledge on the plain port gets: the server's
/// SETTINGS, then a GOAWAY with `HTTP_1_1_REQUIRED` whose debug text names the HTTPS port
/// (RFC 9113, 6.8). HTTP/2 is served over TLS only; the plain port stays hyper's HTTP/1.1 server
/// (hyper-util's auto builder would serve h2c here, but it has no `max_header_size`, so the
/// plain port would lose its 431 at the configured head size).
fn h2_refusal(https_port: Option<u16>) -> Arc<[u8]> {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    const HTTP_1_1_REQUIRED: u32 = 0xd;
    let text = match https_port {
        Some(port) => format!(
            "this port serves HTTP/1.1 only; for HTTP/2 use HTTPS on port {port} (https://<host>.localhost:{port}/)"
        ),
        None => "this port serves HTTP/1.1 only; HTTP/2 needs HTTPS, which `--no-https` turned off".to_string(),
    };
    let mut frames = Vec::with_capacity(9 + 9 + 8 + text.len());
    let mut frame = |kind: u8, payload: &[u8]| {
        let length = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
        frames.extend_from_slice(&length[1..]);
        frames.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
        frames.extend_from_slice(payload);
    };
    frame(SETTINGS, &[]);
    let mut goaway = Vec::with_capacity(8 + text.len());
    goaway.extend_from_slice(&0u32.to_be_bytes());
    goaway.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    goaway.extend_from_slice(text.as_bytes());
    frame(GOAWAY, &goaway);
    frames.into()
}

/// What a TLS client on the plain port gets: a plain-text 400 that names the HTTPS port.
fn tls_refusal(https_port: Option<u16>) -> Arc<[u8]> {
    let text = match https_port {
        Some(port) => format!(
            "This port serves plain HTTP; for HTTPS use port {port} (https://<host>.localhost:{port}/).\n"
        ),
        None => "This port serves plain HTTP; HTTPS is off (`--no-https`).\n".to_string(),
    };
    plain_400(&text).into()
}

/// An HTTP/1.1 400 with `text` as its body, closing the connection.
fn plain_400(text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// A client that sent plain HTTP to the TLS port: the request head is read (so the close
/// does not reset the connection under the answer), then a 400 saying to use `https://`.
async fn refuse_plain_http(mut io: WatchedIo) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = [0u8; 8192];
    let _ = io.read(&mut head).await;
    let text = "This port serves HTTPS only: use https:// in the URL.\n";
    let _ = io.write_all(&plain_400(text)).await;
    let _ = io.shutdown().await;
}

/// How a connection's task ended, in the log.
fn log_end<E: std::fmt::Display>(client_addr: SocketAddr, served: Result<Result<(), E>, Cut>) {
    match served {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(client = %client_addr, %error, "client connection ended with an error");
        }
        Err(cut) => {
            tracing::debug!(client = %client_addr, reason = cut.reason(), "client connection closed");
        }
    }
}

/// Polls `future` under the watchdog's `activity`: a cut ends it (`Err`), a stop calls
/// `on_stop` once (which may ask it to finish up), else it runs to its end.
async fn watched<F: Future>(
    activity: &Activity,
    mut future: Pin<&mut F>,
    mut on_stop: impl FnMut(Pin<&mut F>),
) -> Result<F::Output, Cut> {
    let mut stopping = false;
    poll_fn(|cx| {
        match activity.poll_verdict(cx) {
            Verdict::GoOn => {}
            Verdict::Stop => {
                if !stopping {
                    stopping = true;
                    on_stop(future.as_mut());
                }
            }
            Verdict::Cut(cut) => return Poll::Ready(Err(cut)),
        }
        future.as_mut().poll(cx).map(Ok)
    })
    .await
}

/// The TLS side of a server: the handshake, then HTTP/2 or HTTP/1.1 as ALPN chose.
struct Secure {
    acceptor: tokio_rustls::TlsAcceptor,
    http: Arc<auto::Builder<TokioExecutor>>,
    response_timeout: Duration,
}

impl Secure {
    fn new(tls: Arc<rustls::ServerConfig>, config: &ProxyConfig) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .keep_alive(true)
            .max_buf_size(config.max_header_size.max(8192));
        if config.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            http.http1().max_headers(config.max_headers);
        }
        // Above its `max_header_list_size`, h2 answers 431 but also resets the stream with
        // REFUSED_STREAM, which clients read as "never processed, send it again" (curl retries
        // five times, then fails). So h2's own cap sits well above the configured head size and
        // the handler answers 431 at that size, as the HTTP/1.1 side does; only a header block
        // past h2's cap still gets h2's refusal.
        let h2_cap = config
            .max_header_size
            .saturating_mul(H2_HEADER_LIST_HEADROOM)
            .max(H2_MIN_HEADER_LIST);
        http.http2()
            .max_header_list_size(u32::try_from(h2_cap).unwrap_or(u32::MAX))
            // WebSocket over HTTP/2 (RFC 8441), forwarded as an HTTP/1.1 upgrade.
            .enable_connect_protocol();
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            http: Arc::new(http),
            response_timeout: config.response_timeout,
        }
    }

    /// One TLS client connection, start to end. The handshake counts as the wait for the first
    /// request head, so one that dribbles is cut at the header timeout.
    fn serve(
        &self,
        io: WatchedIo,
        client_addr: SocketAddr,
        activity: Arc<Activity>,
        shared: Arc<Shared>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let acceptor = self.acceptor.clone();
        let http = Arc::clone(&self.http);
        let response_timeout = self.response_timeout;
        async move {
            // A TLS client starts with a handshake record; anything else (plain HTTP, `curl
            // http://` to this port) gets a plain answer saying to use `https://`, rather
            // than a TLS alert it cannot read.
            let first = watched(&activity, pin!(io.peek_first_byte()), |_| {}).await;
            match first {
                Ok(Ok(Some(TLS_HANDSHAKE))) => {}
                Ok(Ok(Some(_))) => {
                    tracing::debug!(client = %client_addr, "plain HTTP on the TLS port");
                    let _ = watched(&activity, pin!(refuse_plain_http(io)), |_| {}).await;
                    activity.close();
                    return;
                }
                Ok(Ok(None) | Err(_)) | Err(_) => {
                    activity.close();
                    return;
                }
            }
            let accept = acceptor.accept(io);
            let handshake = watched(&activity, pin!(accept), |_| {}).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(client = %client_addr, %error, "TLS handshake failed");
                    activity.close();
                    return;
                }
                Err(cut) => {
                    tracing::debug!(client = %client_addr, reason = cut.reason(), "TLS handshake cut off");
                    activity.close();
                    return;
                }
            };
            let client = Arc::new(handler::Peer::tls(client_addr));
            let request_activity = Arc::clone(&activity);
            let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let exchange = if request.version() == Version::HTTP_2 {
                    request_activity.stream_started(response_timeout)
                } else {
                    request_activity.request_started()
                };
                handler::handle(Arc::clone(&shared), Arc::clone(&client), exchange, request)
            });
            let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let served = watched(&activity, pin!(connection), |connection| {
                connection.graceful_shutdown();
            })
            .await;
            activity.close();
            log_end(client_addr, served);
        }
    }
}
