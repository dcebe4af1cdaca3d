//! One request through the proxy: check, route, rewrite headers, send, and shape the answer.
//!
//! Owns the order of the steps and the wait for a starting deployment. Each step lives in its
//! own module (`host`, `forward`, `upstream`, `error`); this file only strings them together.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::ResponseBody;
use super::client::Reply;
use super::error::ProxyError;
use super::forward::{self, X_STACK_DEPLOYMENT, X_STACK_INSTANCE};
use super::host;
use super::limits::ProxyConfig;
use super::pool::Pool;
use super::requests::{LoggedRequest, Pending, RawHeaders, RequestLog, Trace};
use super::routing::{Routing, Target};
use super::upstream::{self, Answered, Outgoing, SendError};
use super::watchdog::{Exchange, WatchedBody};

/// What every request of one proxy shares.
pub struct Shared {
    pub routing: Routing,
    /// Keep-alive connections to the upstreams.
    pub pool: Pool,
    pub config: ProxyConfig,
    /// Upgraded (WebSocket) tunnels, which outlive their HTTP connection.
    pub tunnels: TaskTracker,
    /// Cancelled when the shutdown grace period is over: ends tunnels and connections left.
    pub cut_off: CancellationToken,
}

/// The client end of a connection, computed once per connection rather than per request.
pub struct Peer {
    pub addr: SocketAddr,
    /// The client's IP as a header value, for `X-Forwarded-For` and `X-Real-IP`.
    pub ip_header: HeaderValue,
    /// `X-Forwarded-Proto`: `http`, or `https` on the TLS port.
    pub proto: &'static [u8],
}

impl Peer {
    /// A client of the plain port.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_proto(addr, b"http")
    }

    /// A client of the TLS port.
    pub fn tls(addr: SocketAddr) -> Self {
        Self::with_proto(addr, b"https")
    }

    fn with_proto(addr: SocketAddr, proto: &'static [u8]) -> Self {
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self {
            addr,
            ip_header,
            proto,
        }
    }
}

/// One request, start to finish: the upstream's response or the proxy's own error, with a body
/// that ends the `exchange` when hyper is done with it.
///
/// The request head goes into a box: an `async fn` keeps each argument twice in its future
/// (as the argument and as the moved-in local), hyper copies the whole future into its slot on
/// every request, and the head is the largest thing the future would hold (224 bytes, kept four
/// times over two layers). The handles are owned rather than borrowed from a wrapping `async`
/// block, which would be one more layer to copy.
pub fn handle(
    shared: Arc<Shared>,
    client: Arc<Peer>,
    exchange: Exchange,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<WatchedBody>, Infallible>> {
    let (head, body) = request.into_parts();
    answer(shared, client, exchange, Box::new(head), body)
}

async fn answer(
    shared: Arc<Shared>,
    client: Arc<Peer>,
    exchange: Exchange,
    mut head: Box<Parts>,
    body: Incoming,
) -> Result<Response<WatchedBody>, Infallible> {
    // HTTP/2 names the host in `:authority`: from here on it is in `Host`, as in HTTP/1.1,
    // for the reserved host's check as for the routing.
    if head.version == http::Version::HTTP_2 {
        // h2's own cap is set above this (`server.rs`): past it h2 would reset the stream,
        // which clients retry, rather than let a 431 be the answer.
        let limit = shared.config.max_header_size;
        if header_list_size(&head) > limit {
            let response = ProxyError::HeadersTooLarge { limit }.into_response();
            return Ok(response.map(|body| WatchedBody::new(body, exchange, None)));
        }
        host::authority_as_host(&head.uri, &mut head.headers);
    }
    if let Some(reserved) = &shared.config.reserved {
        if reserved.takes(&head.headers, &client.addr) {
            let response = reserved.serve(Request::from_parts(*head, body)).await;
            return Ok(
                response.map(|body| WatchedBody::new(ResponseBody::Reserved(body), exchange, None))
            );
        }
    }
    let started = shared
        .config
        .request_log
        .as_ref()
        .map(|_| (Instant::now(), SystemTime::now()));
    let mut trace = Trace::default();
    let response = match proxy(&shared, &client, &exchange, &mut head, body, &mut trace).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(
                method = %head.method,
                client = %client.addr,
                error = error.code(),
                message = %error,
                "proxy answered itself"
            );
            error.into_response()
        }
    };
    let pending = match (&shared.config.request_log, started) {
        (Some(log), Some((started, time))) => {
            Some(pending(log, started, time, &head, trace, &response))
        }
        _ => None,
    };
    Ok(response.map(|body| WatchedBody::new(body, exchange, pending)))
}

/// An HTTP/2 request's header list size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113,
/// 6.5.2: each field's name and value plus 32), its pseudo-header fields included.
fn header_list_size(head: &Parts) -> usize {
    const PER_FIELD: usize = 32;
    let pseudo = [
        (":method".len(), head.method.as_str().len()),
        (
            ":path".len(),
            head.uri
                .path_and_query()
                .map_or(1, |path| path.as_str().len()),
        ),
        (
            ":authority".len(),
            head.uri
                .authority()
                .map_or(0, |authority| authority.as_str().len()),
        ),
        (":scheme".len(), head.uri.scheme_str().map_or(0, str::len)),
    ];
    let pseudo: usize = pseudo
        .iter()
        .map(|(name, value)| name + value + PER_FIELD)
        .sum();
    let fields: usize = head
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + PER_FIELD)
        .sum();
    pseudo + fields
}

/// The log entry of a request answered with `response`, to be finished when its body is done.
/// Copies what it keeps: a slice of the request would pin hyper's read buffer.
fn pending(
    log: &RequestLog,
    started: Instant,
    time: SystemTime,
    head: &Parts,
    trace: Trace,
    response: &Response<ResponseBody>,
) -> Box<Pending> {
    let headers = &head.headers;
    let bytes_in = headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    let path = match &trace.path {
        Some(path) => path.as_str(),
        None => head.uri.path_and_query().map_or("", |path| path.as_str()),
    };
    Box::new(Pending {
        log: log.clone(),
        started,
        entry: LoggedRequest {
            seq: 0,
            time,
            duration: std::time::Duration::ZERO,
            method: head.method.clone(),
            host: host.into(),
            path: path.into(),
            status: response.status().as_u16(),
            bytes_in,
            bytes_out: 0,
            rule: trace.rule,
            deployment: trace.deployment,
            instance: trace.instance,
            headers: RawHeaders::copy_of(headers),
        },
    })
}

async fn proxy(
    shared: &Shared,
    client: &Peer,
    exchange: &Exchange,
    head: &mut Parts,
    mut body: Incoming,
    trace: &mut Trace,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut websocket_over_http2 = false;
    if head.version == http::Version::HTTP_2 {
        websocket_over_http2 = forward::websocket_over_http2(head);
    }
    let requested_host = host::check_request(&head.method, head.version, &head.headers)?;
    if let Some(length) = keep_one_content_length(&mut head.headers) {
        if let Some(limit) = shared.config.max_body_size.filter(|limit| length > *limit) {
            return Err(ProxyError::PayloadTooLarge { limit });
        }
    }
    let path_and_query = host::normalized_path_and_query(&head.uri)?;
    if shared.config.request_log.is_some() {
        trace.path = Some(path_and_query.clone());
    }

    let mut upgrade_protocol = forward::strip_hop_by_hop(&mut head.headers);
    if websocket_over_http2 {
        upgrade_protocol = Some(HeaderValue::from_static("websocket"));
    }
    // What `hyper::upgrade::on` does for a whole request: hyper left it for a request that asked.
    let client_upgrade = upgrade_protocol
        .as_ref()
        .and_then(|_| head.extensions.remove::<OnUpgrade>());
    let forwarding = forward::Forwarding {
        client_ip: &client.ip_header,
        requested_host: requested_host.as_ref(),
        proto: client.proto,
    };
    if let Some(protocol) = &upgrade_protocol {
        forward::set_upgrade(&mut head.headers, protocol.clone());
    }

    let parts = &*head;
    let outgoing = Outgoing {
        method: &parts.method,
        headers: &parts.headers,
        path_and_query: &path_and_query,
        forwarding: &forwarding,
        exchange,
    };
    // Subscribed to swaps only once a request has to wait (most never do); the table is loaded
    // again right after subscribing, so a swap in between is not missed.
    let mut changes: Option<tokio::sync::watch::Receiver<u64>> = None;
    let wait_deadline = Instant::now() + shared.config.starting_wait;
    loop {
        let table = shared.routing.load();
        let (target, rule) = host::resolve(
            &table,
            requested_host.as_ref(),
            &parts.method,
            path_and_query.path(),
        )?;
        trace.rule = rule;
        let deployment = match target {
            Target::Unavailable { status, message } => {
                return Err(ProxyError::unavailable(*status, message));
            }
            Target::External { scheme, authority } => {
                // Boxed: rare, and not to be carried by every request's future.
                let answered = Box::pin(upstream::send_to_external(
                    &shared.pool,
                    &shared.config,
                    scheme,
                    authority,
                    &outgoing,
                    body,
                ))
                .await?;
                return Ok(respond(
                    shared,
                    answered,
                    None,
                    Upgrade {
                        protocol: upgrade_protocol,
                        client: client_upgrade,
                        over_http2: websocket_over_http2,
                    },
                ));
            }
            Target::Deployment(deployment) => Arc::clone(deployment),
        };
        drop(table);
        trace.deployment = Some(deployment.deployment_header.clone());
        if deployment.instances.is_empty() && deployment.n_starting == 0 {
            return Err(ProxyError::ServiceUnavailable(format!(
                "`{}` has no running instance",
                deployment.id
            )));
        }
        let must_wait = deployment.n_starting > 0 && !deployment.has_ready_instance();
        if !must_wait {
            match upstream::send_to_deployment(
                &shared.pool,
                &shared.config,
                &deployment,
                &outgoing,
                body,
            )
            .await
            {
                Ok(answered) => {
                    trace.instance = answered.instance.as_ref().map(|instance| instance.number);
                    let deployment_header = Some(deployment.deployment_header.clone());
                    return Ok(respond(
                        shared,
                        answered,
                        deployment_header,
                        Upgrade {
                            protocol: upgrade_protocol,
                            client: client_upgrade,
                            over_http2: websocket_over_http2,
                        },
                    ));
                }
                Err(SendError::Failed(error)) => return Err(error),
                Err(SendError::NoInstanceAccepted { body: unsent_body }) => {
                    if deployment.n_starting == 0 {
                        return Err(ProxyError::BadGateway(format!(
                            "no instance of `{}` accepted the connection",
                            deployment.id
                        )));
                    }
                    body = unsent_body;
                }
            }
        }
        // Instances are starting: wait for the supervisor's next swap, then route again.
        let Some(changes) = changes.as_mut() else {
            changes = Some(shared.routing.subscribe());
            continue;
        };
        tracing::debug!(deployment = %deployment.id, "waiting for a starting instance");
        match tokio::time::timeout_at(wait_deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                return Err(ProxyError::ServiceUnavailable(format!(
                    "`{}` is starting and did not become ready in time",
                    deployment.id
                )))
            }
        }
    }
}

/// The upgrade a client asked for, if any.
struct Upgrade {
    /// The `Upgrade` protocol sent upstream.
    protocol: Option<HeaderValue>,
    /// The client's side of the upgrade, once it is answered.
    client: Option<OnUpgrade>,
    /// A WebSocket over HTTP/2 (extended `CONNECT`): a `101` from upstream is a `200` here.
    over_http2: bool,
}

/// Turns an upstream's response into the client's: hop-by-hop headers out, `x-stack-*` in,
/// and for a `101 Switching Protocols` the two upgraded streams joined.
fn respond(
    shared: &Shared,
    answered: Answered,
    deployment_header: Option<HeaderValue>,
    upgrade: Upgrade,
) -> Response<ResponseBody> {
    let Answered {
        response,
        upstream,
        slot,
        instance,
        mut guard,
    } = answered;
    let (mut parts, ()) = response.into_parts();
    let answered_protocol = forward::strip_hop_by_hop(&mut parts.headers);
    let body = match upstream {
        Reply::Body(reader) => ResponseBody::upstream(reader, guard, Some(slot)),
        Reply::Upgraded(upgraded) => {
            let Some(client_upgrade) = upgrade.client else {
                return ProxyError::BadGateway(
                    "the upstream switched protocols though the client asked for no upgrade".into(),
                )
                .into_response();
            };
            if upgrade.over_http2 {
                forward::accept_websocket_over_http2(&mut parts);
            } else if let Some(protocol) = answered_protocol.or(upgrade.protocol) {
                forward::set_upgrade(&mut parts.headers, protocol);
            }
            // An upgraded connection belongs to its tunnel, never back in the pool.
            forward::spawn_tunnel(
                client_upgrade,
                upgraded,
                guard.take(),
                shared.cut_off.clone(),
                &shared.tunnels,
            );
            ResponseBody::empty()
        }
    };
    if let Some(deployment_header) = deployment_header {
        parts
            .headers
            .insert(X_STACK_DEPLOYMENT.clone(), deployment_header);
    }
    if let Some(instance) = &instance {
        parts
            .headers
            .insert(X_STACK_INSTANCE.clone(), instance.number_header.clone());
    }
    Response::from_parts(parts, body)
}

/// The request's `Content-Length`, left in the headers once: hyper refuses differing values;
/// identical repeats are legal but some upstreams reject them, so one goes upstream. One
/// lookup: most requests have none.
fn keep_one_content_length(headers: &mut http::HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?.clone();
    if values.next().is_some() {
        headers.insert(CONTENT_LENGTH, first.clone());
    }
    first.to_str().ok()?.parse().ok()
}
