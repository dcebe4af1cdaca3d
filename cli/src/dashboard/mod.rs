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

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::control::api;
use crate::daemon::Daemon;
use crate::proxy::{ReservedBody, ReservedHost};
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
    /// The proxy's HTTPS port, if it serves one: `https://stack.localhost:<https_port>` too.
    https_port: Option<u16>,
    /// Cancelled when `stack up` stops: the event streams end, so no open page holds the
    /// proxy's shutdown for its grace period.
    stopping: CancellationToken,
}

/// The reserved host the proxy serves with the dashboard.
pub fn reserved_host(
    daemon: Daemon,
    port: u16,
    https_port: Option<u16>,
    stopping: CancellationToken,
) -> ReservedHost {
    let router = app(Dashboard {
        daemon,
        token: new_token().into(),
        port,
        https_port,
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
        .route("/api/scale", action(&dashboard, views::scale))
        .route("/api/rollback", action(&dashboard, views::rollback))
        .route("/api/remove", action(&dashboard, views::remove))
        .route("/api/restart", action(&dashboard, views::restart))
        .route(
            "/api/delete-session",
            action(&dashboard, views::delete_session),
        )
        .method_not_allowed_fallback(method_not_allowed)
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

/// A `POST` action: the token and `Origin` check runs for the `POST` only (another method gets
/// 405, not a 403 about a token it could never have needed).
fn action<H, T>(dashboard: &Dashboard, handler: H) -> MethodRouter<Dashboard>
where
    H: Handler<T, Dashboard>,
    T: 'static,
{
    post(handler).route_layer(middleware::from_fn_with_state(
        dashboard.clone(),
        require_token_and_origin,
    ))
}

async fn method_not_allowed(method: Method) -> Response {
    refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "`{method}` is not allowed here: the dashboard's actions are `POST`s, its reads `GET`s"
        ),
    )
}

/// Most characters of what a request sent that an error repeats.
const ECHOED_AT_MOST: usize = 200;

/// A JSON error answer, `{"error": "..."}`, the message cut to a readable length (it may
/// repeat what the request sent, a megabyte of service name, say).
pub(crate) fn refusal(status: StatusCode, message: impl Into<String>) -> Response {
    let message = api::cut_echoed(message.into(), ECHOED_AT_MOST * 2);
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// An action's body: a JSON object with the action's fields (`Content-Type:
/// application/json`), else a refusal in the dashboard's JSON like every other: 415 without the
/// content type, 400 for what is not JSON, 422 for JSON of the wrong shape (an array, a field
/// missing or of the wrong type).
pub(crate) struct ActionBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ActionBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "an action's body is JSON: send `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| refusal(rejection.status(), "the body could not be read"))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| {
            refusal(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {error}"),
            )
        })?;
        if !value.is_object() {
            return Err(refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object of the action's fields",
            ));
        }
        T::deserialize(value).map(ActionBody).map_err(|error| {
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the body's fields are wrong: {}",
                    api::cut_echoed(error.to_string(), ECHOED_AT_MOST)
                ),
            )
        })
    }
}

/// A read's query parameters, else a 400 in the dashboard's JSON saying what is wrong.
pub(crate) struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(QueryParams(params)),
            Err(rejection) => {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                Err(refusal(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the query string is wrong: {}",
                        api::cut_echoed(detail.to_owned(), ECHOED_AT_MOST)
                    ),
                ))
            }
        }
    }
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
        if !is_own_origin(origin, self.port, self.https_port) {
            return Err("this action must come from the dashboard's own page");
        }
        Ok(())
    }
}

/// `http://stack.localhost:<port>` (this proxy's port), or `https://stack.localhost:<port>` on
/// the HTTPS port it serves: the scheme, the host (in any case, no trailing dot) and the port
/// as a browser writes them (a default port left out).
fn is_own_origin(origin: &str, port: u16, https_port: Option<u16>) -> bool {
    let (own_port, default_port, authority) = match origin.split_once("://") {
        Some(("http", authority)) => (Some(port), 80, authority),
        Some(("https", authority)) => (https_port, 443, authority),
        _ => return false,
    };
    let Some(own_port) = own_port else {
        return false;
    };
    let (host, origin_port) = match authority.rsplit_once(':') {
        Some((host, origin_port)) => (host, origin_port.to_string()),
        None => (authority, default_port.to_string()),
    };
    host.eq_ignore_ascii_case(RESERVED_HOST) && origin_port == own_port.to_string()
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
            ("http://STACK.localhost:3000", true),
            ("http://stack.localhost:3001", false),
            ("https://stack.localhost:1", false),
            ("https://stack.localhost:3000", false),
            ("http://stack.localhost:3443", false),
            ("https://stack.localhost", false),
            ("http://stack.localhost.:3000", false),
            ("http://stack.localhost:03000", false),
            ("http://stack.localhost:3000/", false),
            ("http://stack.localhost", false),
            ("http://evil.example", false),
            ("http://stack.localhost.evil.example:3000", false),
            ("http://evil@stack.localhost:3000", false),
            ("null", false),
            ("", false),
        ] {
            assert_eq!(is_own_origin(origin, 3000, Some(3443)), own, "{origin}");
        }
        assert!(!is_own_origin("https://stack.localhost:3443", 3000, None));
        assert!(is_own_origin("http://stack.localhost", 80, None));
        assert!(is_own_origin("https://stack.localhost", 3000, Some(443)));
    }
}
