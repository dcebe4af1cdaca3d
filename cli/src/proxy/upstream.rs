//! Talking to upstreams: round robin over a deployment's instances through the keep-alive
//! [`Pool`], and the one retry the proxy allows.
//!
//! Owns [`send_to_deployment`] / [`send_to_external`]. A connect failure
//! (nothing sent yet) takes the instance out of rotation and moves the request to the next one;
//! once any byte of a request may have gone out, it is never sent again, whatever happens. It
//! never decides which host or rule a request belongs to.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Response};
use hyper::body::Incoming;

use super::client::{ClientError, Reply, RequestHead};
use super::error::ProxyError;
use super::forward::Forwarding;
use super::limits::ProxyConfig;
use super::pool::{Pool, PoolError, PoolSlot};
use super::routing::{Backend, Deployment, InFlightGuard};
use super::watchdog::Exchange;

/// A response head from an upstream, with the rest of the response (body or upgraded
/// connection), where its connection goes back afterwards, and the instance that answered.
pub struct Answered {
    pub response: Response<()>,
    pub upstream: Reply,
    pub slot: PoolSlot,
    pub instance: Option<Arc<Backend>>,
    pub guard: Option<InFlightGuard>,
}

/// A request as it goes upstream, but its body: borrowed, so an attempt that sent nothing can
/// be made again.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub path_and_query: &'a PathAndQuery,
    pub forwarding: &'a Forwarding<'a>,
    /// The client's request, whose watchdog enforces the response timeout.
    pub exchange: &'a Exchange,
}

impl Outgoing<'_> {
    fn head<'a>(&'a self, host: &'a HeaderValue) -> RequestHead<'a> {
        RequestHead {
            method: self.method,
            path_and_query: self.path_and_query,
            host,
            headers: self.headers,
            forwarding: self.forwarding,
        }
    }
}

/// Why a request to a deployment got no response.
pub enum SendError {
    /// Every instance refused the connection; nothing was sent, so the body is handed back (a
    /// caller may wait for a starting instance and try again).
    NoInstanceAccepted { body: Incoming },
    /// Anything else: answered with this error, never retried.
    Failed(ProxyError),
}

/// The order in which to try a deployment's instances: round robin over those in rotation,
/// then, as a last resort, those out of rotation (a connect to a dead loopback port fails at
/// once, and one that succeeds puts the instance back). Each instance is tried at most once
/// (beyond 64 instances, at most twice); no allocation.
struct AttemptOrder {
    start: usize,
    n_instances: usize,
    offset: usize,
    last_resort: bool,
    tried: u64,
}

impl AttemptOrder {
    fn new(deployment: &Deployment) -> Self {
        let n_instances = deployment.instances.len();
        let start = if n_instances > 1 {
            deployment.next.fetch_add(1, Ordering::Relaxed) % n_instances
        } else {
            0
        };
        Self {
            start,
            n_instances,
            offset: 0,
            last_resort: false,
            tried: 0,
        }
    }

    fn next(&mut self, deployment: &Deployment) -> Option<usize> {
        loop {
            if self.offset == self.n_instances {
                if self.last_resort {
                    return None;
                }
                self.last_resort = true;
                self.offset = 0;
            }
            let index = (self.start + self.offset) % self.n_instances;
            self.offset += 1;
            let bit = if index < 64 { 1u64 << index } else { 0 };
            let wanted = deployment.instances[index].is_out_of_rotation() == self.last_resort;
            if wanted && self.tried & bit == 0 {
                self.tried |= bit;
                return Some(index);
            }
        }
    }
}

/// Sends a request to one of `deployment`'s instances.
pub async fn send_to_deployment(
    pool: &Pool,
    config: &ProxyConfig,
    deployment: &Deployment,
    outgoing: &Outgoing<'_>,
    body: Incoming,
) -> Result<Answered, SendError> {
    let mut body = body;
    let mut order = AttemptOrder::new(deployment);
    while let Some(index) = order.next(deployment) {
        let instance = &deployment.instances[index];
        let head = outgoing.head(&instance.host_header);
        let guard = instance.start_request();
        let sent = pin!(pool.send(
            &instance.pool_key,
            &instance.authority,
            &head,
            body,
            config.max_body_size,
        ));
        match outgoing.exchange.upstream_response(sent).await.ok_or(()) {
            Ok(Ok((response, upstream, slot))) => {
                instance.record_response();
                if instance.is_out_of_rotation() {
                    instance.put_back_in_rotation();
                }
                return Ok(Answered {
                    response,
                    upstream,
                    slot,
                    instance: Some(Arc::clone(instance)),
                    guard: Some(guard),
                });
            }
            Ok(Err(failure)) if failure.error.is_connect() => {
                drop(guard);
                instance.take_out_of_rotation();
                tracing::warn!(
                    deployment = %deployment.id,
                    instance = instance.number,
                    addr = %instance.addr,
                    error = %error_chain(&failure.error),
                    "connect to instance failed; out of rotation until ready again"
                );
                body = match failure.unsent_body {
                    Some(body) => body,
                    None => {
                        return Err(SendError::Failed(ProxyError::BadGateway(format!(
                            "`{}` could not be reached",
                            deployment.id
                        ))))
                    }
                };
            }
            Ok(Err(failure)) => {
                return Err(SendError::Failed(request_failed(
                    &deployment.id,
                    Some(instance),
                    &failure.error,
                )))
            }
            // The watchdog ended the wait: no response head within the response timeout. A
            // hung instance (stopped, deadlocked) would take every other request the same
            // way: out of rotation until it answers again (the supervisor probes it).
            Err(()) => {
                instance.take_out_of_rotation();
                tracing::warn!(
                    deployment = %deployment.id,
                    instance = instance.number,
                    timeout_ms = config.response_timeout.as_millis() as u64,
                    "instance sent no response headers in time; out of rotation until it answers"
                );
                return Err(SendError::Failed(ProxyError::GatewayTimeout(
                    deployment.id.clone(),
                )));
            }
        }
    }
    Err(SendError::NoInstanceAccepted { body })
}

/// Sends a request to a URL outside the stack (`http` only).
pub async fn send_to_external(
    pool: &Pool,
    config: &ProxyConfig,
    scheme: &Scheme,
    authority: &Authority,
    outgoing: &Outgoing<'_>,
    body: Incoming,
) -> Result<Answered, ProxyError> {
    if *scheme != Scheme::HTTP {
        return Err(ProxyError::BadGateway(format!(
            "`{scheme}://{authority}` is not supported: stack proxies to http upstreams only"
        )));
    }
    let host = HeaderValue::from_str(authority.as_str())
        .expect("an authority is always a valid header value");
    let head = outgoing.head(&host);
    let pool_key: Arc<str> = Arc::from(authority.as_str());
    let sent = pin!(pool.send(&pool_key, authority, &head, body, config.max_body_size));
    match outgoing.exchange.upstream_response(sent).await.ok_or(()) {
        Ok(Ok((response, upstream, slot))) => Ok(Answered {
            response,
            upstream,
            slot,
            instance: None,
            guard: None,
        }),
        Ok(Err(failure)) => Err(request_failed(authority.as_str(), None, &failure.error)),
        Err(()) => Err(ProxyError::GatewayTimeout(authority.to_string())),
    }
}

fn request_failed(
    upstream: &str,
    instance: Option<&Arc<Backend>>,
    error: &PoolError,
) -> ProxyError {
    if let PoolError::Request(ClientError::BodyTooLarge { limit }) = error {
        return ProxyError::PayloadTooLarge { limit: *limit };
    }
    tracing::warn!(
        upstream,
        instance = instance.map(|instance| instance.number),
        connect = error.is_connect(),
        error = %error_chain(error),
        "upstream request failed; not retried"
    );
    match error {
        _ if error.is_connect() => {
            ProxyError::BadGateway(format!("`{upstream}` could not be reached"))
        }
        // The client's chunked body did not parse: the client's fault, not the upstream's.
        PoolError::Request(ClientError::ClientBody(cause)) => {
            ProxyError::BadRequest(format!("the request body is malformed: {cause}"))
        }
        PoolError::Request(ClientError::Invalid(what)) => {
            ProxyError::BadGateway(format!("`{upstream}` sent an invalid response: {what}"))
        }
        PoolError::Request(ClientError::Write(_)) => ProxyError::BadGateway(format!(
            "`{upstream}` closed the connection while the request was being sent"
        )),
        PoolError::Request(ClientError::Read(_)) => ProxyError::BadGateway(format!(
            "the connection to `{upstream}` failed while its response was being read"
        )),
        _ => ProxyError::BadGateway(format!(
            "`{upstream}` closed the connection before answering"
        )),
    }
}

/// The whole `source()` chain, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
