//! Header surgery between client and upstream, and the tunnel behind an `Upgrade`.
//!
//! Owns hop-by-hop removal (both directions), the `X-Forwarded-*` / `X-Real-IP` headers, the
//! upstream `Host`, the `x-stack-*` response headers, and joining two upgraded streams. Hop-by-hop
//! headers go first, and only then are the forwarding headers set, so a client cannot delete or
//! forge them by naming them in `Connection`. It never chooses where a request goes.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, FORWARDED, HOST, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::client::UpgradedIo;
use super::routing::InFlightGuard;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_STACK_DEPLOYMENT: HeaderName = HeaderName::from_static("x-stack-deployment");
pub(crate) static X_STACK_INSTANCE: HeaderName = HeaderName::from_static("x-stack-instance");

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `TE` (unless it is just `trailers`), `Trailer`, `Transfer-Encoding` and
/// `Upgrade`. Returns the `Upgrade` value when `Connection` asked for an upgrade, so the caller
/// can pass the handshake on deliberately.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Most messages carry none of them: one pass over the names (standard ones compare as
    // numbers) costs less than the eight hashed removals below.
    if !headers.keys().any(is_hop_by_hop) {
        return None;
    }
    let mut wants_upgrade = false;
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|token| {
                let token = token.trim();
                if token.eq_ignore_ascii_case("upgrade") {
                    // Kept until the end: its value is the protocol to pass on.
                    wants_upgrade = true;
                    return None;
                }
                HeaderName::from_bytes(token.as_bytes()).ok()
            })
            .collect();
        for name in named {
            headers.remove(&name);
        }
        headers.remove(CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    let te_is_trailers = {
        let mut values = headers.get_all(TE).iter();
        matches!((values.next(), values.next()), (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"trailers"))
    };
    if !te_is_trailers {
        headers.remove(TE);
    }
    headers.remove(TRAILER);
    headers.remove(TRANSFER_ENCODING);
    let upgrade = headers.remove(UPGRADE);
    if wants_upgrade {
        upgrade
    } else {
        None
    }
}

/// Whether `name` is one of the fixed hop-by-hop headers (those `Connection` names aside, which
/// only matter when `Connection` itself is present).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Puts an upgrade handshake back after [`strip_hop_by_hop`].
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// Whether `head` is a WebSocket over HTTP/2 (RFC 8441: `CONNECT` with `:protocol websocket`).
/// If so, it becomes the HTTP/1.1 handshake the upstream expects: `GET` with a fresh
/// `Sec-WebSocket-Key` (the client's `Sec-WebSocket-Version`, `-Protocol` and `-Extensions`
/// go on as they are); the caller adds `Upgrade: websocket` after the hop-by-hop removal.
pub fn websocket_over_http2(head: &mut http::request::Parts) -> bool {
    let is_websocket = head.version == http::Version::HTTP_2
        && head.method == http::Method::CONNECT
        && head
            .extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|protocol| protocol.as_str().eq_ignore_ascii_case("websocket"));
    if is_websocket {
        use base64::Engine as _;
        head.method = http::Method::GET;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let key = HeaderValue::from_str(&key).expect("base64 is a valid header value");
        head.headers.insert(SEC_WEBSOCKET_KEY.clone(), key);
    }
    is_websocket
}

/// The upstream's `101 Switching Protocols` as the `200` that accepts a WebSocket over HTTP/2
/// (RFC 8441, 5): no `Sec-WebSocket-Accept`, which answered the key the proxy made up.
pub fn accept_websocket_over_http2(response: &mut http::response::Parts) {
    response.status = http::StatusCode::OK;
    response.headers.remove(&SEC_WEBSOCKET_ACCEPT);
}

/// Who asked, for the headers an upstream uses to see the real client.
pub struct Forwarding<'a> {
    /// The client's IP as a header value.
    pub client_ip: &'a HeaderValue,
    /// The `Host` the client asked for.
    pub requested_host: Option<&'a HeaderValue>,
    /// How it came: `http` or `https` (whatever `X-Forwarded-Proto` it sent is replaced).
    pub proto: &'static [u8],
}

/// Writes a request's headers as they go upstream (`name: value` lines): the client's own,
/// except `Host` (the caller writes the upstream's) and the forwarding headers, which are set
/// here: `X-Forwarded-For` (the client's address appended to any value it sent),
/// `X-Forwarded-Host` (the `Host` it asked for), `X-Forwarded-Proto`, `X-Real-IP`. Never passed
/// on: `Proxy-Authorization` (meant for a proxy, which stack is, so it stops here), `Forwarded`
/// (a client could forge it, and stack speaks `X-Forwarded-*` instead of keeping both in
/// step) and any `X-Stack-*` (stack's own names). Written straight into the request head, so
/// the client's header map is never regrown.
pub fn push_request_headers(buf: &mut Vec<u8>, headers: &HeaderMap, forwarding: &Forwarding<'_>) {
    let mut forwarded_before = false;
    for (name, value) in headers {
        if name == HOST
            || name == X_FORWARDED_HOST
            || name == X_FORWARDED_PROTO
            || name == X_REAL_IP
            || name == PROXY_AUTHORIZATION
            || name == FORWARDED
            || name.as_str().starts_with("x-stack-")
        {
            continue;
        }
        if name == X_FORWARDED_FOR {
            forwarded_before = true;
            continue;
        }
        push_header(buf, name.as_str(), value.as_bytes());
    }
    buf.extend_from_slice(b"x-forwarded-for: ");
    if forwarded_before {
        for value in headers.get_all(&X_FORWARDED_FOR) {
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b", ");
        }
    }
    buf.extend_from_slice(forwarding.client_ip.as_bytes());
    buf.extend_from_slice(b"\r\n");
    if let Some(host) = forwarding.requested_host {
        push_header(buf, X_FORWARDED_HOST.as_str(), host.as_bytes());
    }
    push_header(buf, X_FORWARDED_PROTO.as_str(), forwarding.proto);
    push_header(buf, X_REAL_IP.as_str(), forwarding.client_ip.as_bytes());
}

/// One `name: value` line of an HTTP/1.1 head.
pub fn push_header(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Joins the client's and the upstream's upgraded connections until either side closes (or
/// the proxy shuts down). The in-flight guard keeps the instance busy while the tunnel lives.
pub fn spawn_tunnel(
    client: OnUpgrade,
    mut upstream: UpgradedIo,
    guard: Option<InFlightGuard>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    tracker.spawn(async move {
        let _guard = guard;
        let client = match client.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(error) = copied {
                    tracing::debug!(%error, "upgraded connection ended with an error");
                }
            }
            () = shutdown.cancelled() => {
                tracing::debug!("upgraded connection closed by shutdown");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn strips_connection_and_the_headers_it_names() {
        let mut map = headers(&[
            ("connection", "close, X-Forwarded-For, x-secret"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut map), None);
        let left: Vec<&str> = map.keys().map(|name| name.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn keeps_te_trailers_and_reports_an_upgrade() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
        ]);
        assert_eq!(
            strip_hop_by_hop(&mut map),
            Some(HeaderValue::from_static("websocket"))
        );
        assert!(map.get(UPGRADE).is_none());
        assert_eq!(map.get(TE).unwrap(), "trailers");
    }

    #[test]
    fn appends_the_client_to_forwarded_for_and_replaces_the_rest() {
        let map = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("host", "app.localhost:3000"),
            ("accept", "*/*"),
        ]);
        let host = map.get(HOST).cloned();
        let mut buf = Vec::new();
        let forwarding = Forwarding {
            client_ip: &HeaderValue::from_static("127.0.0.1"),
            requested_host: host.as_ref(),
            proto: b"http",
        };
        push_request_headers(&mut buf, &map, &forwarding);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "accept: */*\r\n\
             x-forwarded-for: 1.1.1.1, 2.2.2.2, 127.0.0.1\r\n\
             x-forwarded-host: app.localhost:3000\r\n\
             x-forwarded-proto: http\r\n\
             x-real-ip: 127.0.0.1\r\n"
        );
    }

    #[test]
    fn a_tls_client_is_forwarded_as_https_whatever_it_claims() {
        let map = headers(&[("x-forwarded-proto", "http"), ("host", "app.localhost")]);
        let mut buf = Vec::new();
        let forwarding = Forwarding {
            client_ip: &HeaderValue::from_static("127.0.0.1"),
            requested_host: None,
            proto: b"https",
        };
        push_request_headers(&mut buf, &map, &forwarding);
        let head = String::from_utf8(buf).unwrap();
        assert_eq!(head.matches("x-forwarded-proto").count(), 1, "{head}");
        assert!(head.contains("x-forwarded-proto: https\r\n"), "{head}");
    }
}
