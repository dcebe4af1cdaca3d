//! The reserved host (`stack.localhost`): one host whose requests the proxy hands to a service
//! of the daemon's (the dashboard) instead of routing them, on every port the shared request
//! handler serves.
//!
//! Owns which requests qualify: a `Host` naming the reserved host (any port) and a client on
//! loopback. Everything else, `Host: evil.example` from a DNS-rebinding page included, is
//! routed as usual and never reaches the service. It never looks inside the service's answers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use super::body::ReservedBody;
use super::routing::host_key;

type Serve = dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<ReservedBody>> + Send>>
    + Send
    + Sync;

/// A host the proxy serves itself, through `serve`.
#[derive(Clone)]
pub struct ReservedHost {
    host: &'static str,
    serve: Arc<Serve>,
}

impl std::fmt::Debug for ReservedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReservedHost({})", self.host)
    }
}

impl ReservedHost {
    /// `host` (lower case, no port) served by `serve`.
    pub fn new<F, Fut>(host: &'static str, serve: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ReservedBody>> + Send + 'static,
    {
        Self {
            host,
            serve: Arc::new(move |request| Box::pin(serve(request))),
        }
    }

    /// Whether a request with `headers` from `client` is the reserved host's.
    pub fn takes(&self, headers: &HeaderMap, client: &SocketAddr) -> bool {
        let Some(host) = headers.get(HOST).and_then(|host| host.to_str().ok()) else {
            return false;
        };
        host_key(host) == self.host && is_loopback(client)
    }

    pub fn serve(
        &self,
        request: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<ReservedBody>> + Send>> {
        (self.serve)(request)
    }
}

fn is_loopback(client: &SocketAddr) -> bool {
    match client {
        SocketAddr::V4(v4) => v4.ip().is_loopback(),
        SocketAddr::V6(v6) => {
            v6.ip().is_loopback() || v6.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
