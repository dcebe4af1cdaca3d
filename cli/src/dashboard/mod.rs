//! The dashboard and request inspector at `stack.localhost[:port]`: a page (HTML, JS and CSS
//! embedded in the binary, no build step, nothing from the network), one batched event stream,
//! a few reads, and actions that go through the same [`Daemon`] calls as the CLI.
//!
//! Owns the axum router ([`app`]) and the rules that keep it safe: the proxy hands it only
//! requests with `Host: stack.localhost[:port]` from loopback ([`reserved_host`]), so a
//! DNS-rebinding page never reads it; every action is a `POST` that must carry the per-run
//! token embedded in the page (`x-stack-token`) and an `Origin` of the dashboard itself, or it
//! gets 403 JSON and changes nothing; nothing it sends holds a secret value, a full session id
//! or a cookie value. It never talks to the supervisor or the proxy except through the daemon.
//!
//! - `events`: the event stream (requests, deployments and aliases, batched) and the log feed.
//! - `views`: the reads (route explainer, sessions, environment) and the actions.

mod events;
mod views;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::daemon::Daemon;
use crate::proxy::{host_key, ReservedBody, ReservedHost};
use crate::state::aliases::RESERVED_HOST;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// What every dashboard request shares.
#[derive(Clone)]
pub struct Dashboard {
    daemon: Daemon,
    /// Made once per `stack up`, embedded in the page, required on every action.
    token: Arc<str>,
    /// The proxy's HTTP port: the dashboard's own origin is `http://stack.localhost:<port>`.
    port: u16,
    /// Cancelled when `stack up` stops: the event streams end, so no open page holds the
    /// proxy's shutdown for its grace period.
    stopping: CancellationToken,
}

/// The reserved host the proxy serves with the dashboard.
pub fn reserved_host(daemon: Daemon, port: u16, stopping: CancellationToken) -> ReservedHost {
    let router = app(Dashboard {
        daemon,
        token: new_token().into(),
        port,
        stopping,
    });
    ReservedHost::new(RESERVED_HOST, move |request| {
        let router = router.clone();
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            response
                .map(|body| -> ReservedBody { body.map_err(std::io::Error::other).boxed_unsync() })
        }
    })
}

/// The router (driven without a socket in tests).
pub fn app(dashboard: Dashboard) -> Router {
    let actions = Router::new()
        .route("/api/scale", post(views::scale))
        .route("/api/rollback", post(views::rollback))
        .route("/api/remove", post(views::remove))
        .route("/api/restart", post(views::restart))
        .route("/api/delete-session", post(views::delete_session))
        .route_layer(middleware::from_fn_with_state(
            dashboard.clone(),
            require_token_and_origin,
        ));
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/events", get(events::stream))
        .route("/api/logs", get(events::logs))
        .route("/api/requests/{seq}", get(views::request))
        .route("/api/route", get(views::explain_route))
        .route("/api/sessions", get(views::sessions))
        .route("/api/env", get(views::environment))
        .merge(actions)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(dashboard)
}

async fn page(State(dashboard): State<Dashboard>) -> Response {
    let page = PAGE.replace("{{TOKEN}}", &dashboard.token);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page),
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "no such page on the dashboard")
}

/// A JSON error answer, `{"error": "..."}`.
pub(crate) fn refusal(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// No framing by another page, no script or style from anywhere but the dashboard itself.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Actions need the page's token and the dashboard's own `Origin`: a page elsewhere can send a
/// `POST` here, but it can neither read the token nor forge the `Origin` a browser sets.
async fn require_token_and_origin(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(reason) = dashboard.check_action(request.headers()) {
        return refusal(StatusCode::FORBIDDEN, reason);
    }
    next.run(request).await
}

impl Dashboard {
    fn check_action(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let token = headers
            .get("x-stack-token")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(token, self.token.as_bytes()) {
            return Err("this action needs the dashboard's token (reload the page)");
        }
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .unwrap_or("");
        if !is_own_origin(origin, self.port) {
            return Err("this action must come from the dashboard's own page");
        }
        Ok(())
    }
}

/// `http://stack.localhost:<port>` (this proxy's port), or the same host over HTTPS.
fn is_own_origin(origin: &str, port: u16) -> bool {
    let (secure, authority) = match origin.split_once("://") {
        Some(("http", authority)) => (false, authority),
        Some(("https", authority)) => (true, authority),
        _ => return false,
    };
    if authority.contains(['/', '@']) || host_key(authority) != RESERVED_HOST {
        return false;
    }
    let origin_port = authority.rsplit_once(':').map(|(_, port)| port);
    secure
        || origin_port == Some(port.to_string().as_str())
        || (port == 80 && origin_port.is_none())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 hex digits (128 bits) from the OS's CSPRNG.
fn new_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dashboards_own_origin_passes() {
        for (origin, own) in [
            ("http://stack.localhost:3000", true),
            ("https://stack.localhost:3443", true),
            ("http://stack.localhost:3001", false),
            ("http://stack.localhost", false),
            ("http://evil.example", false),
            ("http://stack.localhost.evil.example:3000", false),
            ("http://evil@stack.localhost:3000", false),
            ("null", false),
            ("", false),
        ] {
            assert_eq!(is_own_origin(origin, 3000), own, "{origin}");
        }
    }
}
