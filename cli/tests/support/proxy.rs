//! The proxy in process, for `proxy.rs` and `proxy_memory.rs`: `stack::proxy` serving on a
//! free loopback port, small hyper upstreams, and clients (pooled, or raw bytes on a socket).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use stack::proxy::{
    self, Backend, Deployment, HostRoute, ProxyConfig, Routing, RoutingTable, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::free_port;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A proxy serving on 127.0.0.1:<free port>, stopped on drop.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub routing: Routing,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(table: RoutingTable, config: ProxyConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let routing = Routing::new(table);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(proxy::run_with_config(
            listener,
            routing.clone(),
            config,
            shutdown.clone().cancelled_owned(),
        ));
        Self {
            addr,
            routing,
            shutdown,
            task: Some(task),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Short timeouts so failure tests finish fast.
pub fn test_config() -> ProxyConfig {
    ProxyConfig {
        header_read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_secs(5),
        starting_wait: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs(3),
        ..ProxyConfig::default()
    }
}

/// A small hyper upstream running `handler` for every request; stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, task }
}

/// An upstream that answers every request with its method, URI and headers (repeats kept) as
/// JSON: `{"method":..,"uri":..,"headers":[[name,value],..]}`.
pub async fn echo_upstream() -> Upstream {
    upstream(|request: Request<Incoming>| async move {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("?").to_owned()))
            .collect();
        let body = serde_json::json!({
            "method": request.method().as_str(),
            "uri": request.uri().to_string(),
            "headers": headers,
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body.to_string()))
            .unwrap()
    })
    .await
}

/// A table with one host served by one deployment.
pub fn one_deployment(
    host: &str,
    id: &str,
    addrs: &[SocketAddr],
) -> (RoutingTable, Arc<Deployment>) {
    let deployment = deployment(id, addrs, 0);
    let mut table = RoutingTable::new();
    table.insert(
        host,
        HostRoute::Target(Target::Deployment(Arc::clone(&deployment))),
    );
    (table, deployment)
}

pub fn deployment(id: &str, addrs: &[SocketAddr], n_starting: usize) -> Arc<Deployment> {
    let instances = addrs
        .iter()
        .enumerate()
        .map(|(index, addr)| Arc::new(Backend::new(index as u32 + 1, *addr)))
        .collect();
    let service = id.rsplit_once('-').map_or(id, |(service, _)| service);
    Arc::new(Deployment::new(id, service, instances, n_starting))
}

/// A loopback address nobody listens on.
pub fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A pooled client for tests.
pub fn client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// A parsed response.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    /// For an echo upstream's body: every value the upstream saw for `name`.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        self.json()["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap().to_owned())
            .collect()
    }
}

/// GET `path` from the proxy with `Host: host`.
pub async fn get(proxy: SocketAddr, host: &str, path: &str) -> Answer {
    send(
        proxy,
        Request::get(path)
            .header("host", host)
            .body(full(""))
            .unwrap(),
    )
    .await
}

pub async fn send(proxy: SocketAddr, mut request: Request<Body>) -> Answer {
    let uri = format!("http://{proxy}{}", request.uri());
    *request.uri_mut() = uri.parse().unwrap();
    let response = client()
        .request(request)
        .await
        .expect("request through the proxy");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Writes `raw` on a fresh connection and reads until the proxy closes it (bounded).
pub async fn raw_exchange(proxy: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("the proxy closes the connection")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}
