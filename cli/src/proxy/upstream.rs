//! Talking to upstreams: round robin over a deployment's instances through the keep-alive
//! [`Pool`], and the one retry the proxy allows.
//!
//! Owns [`send_to_deployment`] / [`send_to_external`]. A connect failure
//! (nothing sent yet) takes the instance out of rotation and moves the request to the next one;
//! once any byte of a request may have gone out, it is never sent again, whatever happens. It
//! never decides which host or rule a request belongs to.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::body::{BodyHandle, RequestBody};
use super::error::ProxyError;
use super::limits::ProxyConfig;
use super::pool::{Pool, PoolError, PooledConnection};
use super::routing::{Deployment, InFlightGuard, Instance};

/// A response from an upstream, with the instance that answered and the connection it came
/// on (back to the pool once the body is over).
pub struct Answered {
    pub response: Response<Incoming>,
    pub connection: PooledConnection,
    pub instance: Option<Arc<Instance>>,
    pub guard: Option<InFlightGuard>,
}

/// Why a request to a deployment got no response.
pub enum SendError {
    /// Every instance refused the connection; nothing was sent, so the request is handed
    /// back (a caller may wait for a starting instance and try again).
    NoInstanceAccepted { parts: Parts, body: Incoming },
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

/// The request as it goes upstream: origin-form URI (`/path?query`), HTTP/1.1, the upstream's
/// `Host`.
fn upstream_request(
    parts: &mut Parts,
    reuse_parts: bool,
    host: HeaderValue,
    path_and_query: &PathAndQuery,
    body: RequestBody,
) -> Request<RequestBody> {
    let uri = Uri::from(path_and_query.clone());
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    // The last attempt takes the headers instead of copying them (the common, single-attempt
    // case); parts that may be sent again keep theirs.
    let mut headers = if reuse_parts {
        parts.headers.clone()
    } else {
        std::mem::take(&mut parts.headers)
    };
    headers.insert(http::header::HOST, host);
    *request.headers_mut() = headers;
    request
}

/// Sends a request to one of `deployment`'s instances.
pub async fn send_to_deployment(
    pool: &Pool,
    config: &ProxyConfig,
    deployment: &Deployment,
    mut parts: Parts,
    path_and_query: &PathAndQuery,
    body: Incoming,
) -> Result<Answered, SendError> {
    let mut body = body;
    let mut order = AttemptOrder::new(deployment);
    // Parts handed back on failure are only used again when another instance or a starting one
    // may take the request; a lone instance takes them without a copy.
    let reuse_parts = deployment.instances.len() > 1 || deployment.n_starting > 0;
    while let Some(index) = order.next(deployment) {
        let instance = &deployment.instances[index];
        let (request_body, handle) = RequestBody::new(body, config.max_body_size);
        let request = upstream_request(
            &mut parts,
            reuse_parts,
            instance.host_header.clone(),
            path_and_query,
            request_body,
        );
        let guard = instance.start_request();
        let sent = pool.send(&instance.authority, request);
        match tokio::time::timeout(config.response_timeout, sent).await {
            Ok(Ok((response, connection))) => {
                instance.record_response();
                if instance.is_out_of_rotation() {
                    instance.put_back_in_rotation();
                }
                return Ok(Answered {
                    response,
                    connection,
                    instance: Some(Arc::clone(instance)),
                    guard: Some(guard),
                });
            }
            Ok(Err(error)) if error.is_connect() => {
                drop(guard);
                instance.take_out_of_rotation();
                tracing::warn!(
                    deployment = %deployment.id,
                    instance = instance.number,
                    addr = %instance.addr,
                    error = %error_chain(&error),
                    "connect to instance failed; out of rotation until ready again"
                );
                body = match handle.reclaim() {
                    Some(body) => body,
                    None => {
                        return Err(SendError::Failed(ProxyError::BadGateway(format!(
                            "`{}` could not be reached",
                            deployment.id
                        ))))
                    }
                };
            }
            Ok(Err(error)) => {
                return Err(SendError::Failed(request_failed(
                    &deployment.id,
                    Some(instance),
                    &handle,
                    &error,
                )))
            }
            Err(_elapsed) => {
                tracing::warn!(
                    deployment = %deployment.id,
                    instance = instance.number,
                    timeout_ms = config.response_timeout.as_millis() as u64,
                    "instance sent no response headers in time"
                );
                return Err(SendError::Failed(ProxyError::GatewayTimeout(
                    deployment.id.clone(),
                )));
            }
        }
    }
    Err(SendError::NoInstanceAccepted { parts, body })
}

/// Sends a request to a URL outside the stack (`http` only).
pub async fn send_to_external(
    pool: &Pool,
    config: &ProxyConfig,
    scheme: &Scheme,
    authority: &Authority,
    mut parts: Parts,
    path_and_query: &PathAndQuery,
    body: Incoming,
) -> Result<Answered, ProxyError> {
    if *scheme != Scheme::HTTP {
        return Err(ProxyError::BadGateway(format!(
            "`{scheme}://{authority}` is not supported: stack proxies to http upstreams only"
        )));
    }
    let host = HeaderValue::from_str(authority.as_str())
        .expect("an authority is always a valid header value");
    let (request_body, handle) = RequestBody::new(body, config.max_body_size);
    let request = upstream_request(&mut parts, false, host, path_and_query, request_body);
    match tokio::time::timeout(config.response_timeout, pool.send(authority, request)).await {
        Ok(Ok((response, connection))) => Ok(Answered {
            response,
            connection,
            instance: None,
            guard: None,
        }),
        Ok(Err(error)) => Err(request_failed(authority.as_str(), None, &handle, &error)),
        Err(_elapsed) => Err(ProxyError::GatewayTimeout(authority.to_string())),
    }
}

fn request_failed(
    upstream: &str,
    instance: Option<&Arc<Instance>>,
    handle: &BodyHandle,
    error: &PoolError,
) -> ProxyError {
    if let Some(limit) = handle.too_large_limit() {
        return ProxyError::PayloadTooLarge { limit };
    }
    tracing::warn!(
        upstream,
        instance = instance.map(|instance| instance.number),
        connect = error.is_connect(),
        error = %error_chain(error),
        "upstream request failed; not retried"
    );
    if error.is_connect() {
        ProxyError::BadGateway(format!("`{upstream}` could not be reached"))
    } else {
        ProxyError::BadGateway(format!(
            "`{upstream}` closed the connection before answering"
        ))
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
