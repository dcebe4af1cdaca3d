//! The axum glue: `Sessions` (what a service shares across requests), the middleware that gives
//! each request its `Session` and adds `Set-Cookie` when one was created or rotated, the
//! `Session` extractor, and the 503 answer when the store cannot be reached.
//!
//! Owns the HTTP side only: which cookie names the session (a signature that verifies, or
//! nothing) and what goes back in headers. It never adds `Set-Cookie` to an error answer and
//! never reads the store itself (the `Session` does, when a handler asks).

use crate::cookie::{find_session_cookie, CookieOptions, Secrets};
use crate::handle::{Session, SessionError, SessionLocks};
use crate::id::SessionId;
use crate::store::RedisStore;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use std::sync::Arc;

/// What every request of a service shares: the store, the secrets, the cookie attributes.
#[derive(Clone)]
pub struct Sessions {
    store: RedisStore,
    secrets: Secrets,
    cookie: CookieOptions,
    /// `cookie.stored_json_for(..)`, rendered once for a plain and for a `Secure` cookie: every
    /// new session starts with one of them.
    new_session_cookie: Arc<str>,
    new_secure_session_cookie: Arc<str>,
    locks: Arc<SessionLocks>,
}

impl Sessions {
    pub fn new(store: RedisStore, secrets: Secrets, cookie: CookieOptions) -> Self {
        Self {
            store,
            secrets,
            new_session_cookie: cookie.stored_json_for(false).into(),
            new_secure_session_cookie: cookie.stored_json_for(true).into(),
            cookie,
            locks: Arc::default(),
        }
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    /// The verified session id of a request's `Cookie` headers, if any.
    pub fn verified_id(&self, headers: &http::HeaderMap) -> Option<SessionId> {
        let signed = find_session_cookie(
            headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok()),
        )?;
        self.secrets.unsign(&signed).map(SessionId::from_verified)
    }

    /// A `Session` for a request with these headers (the middleware's job; public for tests
    /// and for services that want no middleware).
    pub fn session_for(&self, headers: &http::HeaderMap) -> Session {
        self.session_with_cookie(headers, false)
    }

    fn session_with_cookie(&self, headers: &http::HeaderMap, secure: bool) -> Session {
        let new_session_cookie = if secure {
            &self.new_secure_session_cookie
        } else {
            &self.new_session_cookie
        };
        Session::new(
            self.store.clone(),
            Arc::clone(&self.locks),
            Arc::clone(new_session_cookie),
            self.verified_id(headers),
        )
    }
}

/// Whether a request came over HTTPS as express's `trust proxy` (`loopback`) reads it: the
/// first `X-Forwarded-Proto` is `https` and the peer is on loopback (or unknown: a service
/// driven in process, as tests do). A client elsewhere cannot claim HTTPS.
fn came_over_https(request: &Request) -> bool {
    let trusted_peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_none_or(|peer| peer.0.ip().is_loopback());
    trusted_peer
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Middleware: `.layer(axum::middleware::from_fn_with_state(sessions, session::middleware))`.
pub async fn middleware(
    State(sessions): State<Sessions>,
    mut request: Request,
    next: Next,
) -> Response {
    let secure = sessions.cookie.is_secure(came_over_https(&request));
    let session = sessions.session_with_cookie(request.headers(), secure);
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;
    if let Some(id) = session.take_new_cookie_id() {
        if response.status().is_success() || response.status().is_redirection() {
            let value = sessions
                .cookie
                .set_cookie_for(&sessions.secrets, id.as_str(), secure);
            match HeaderValue::from_str(&value) {
                Ok(value) => {
                    response.headers_mut().append(SET_COOKIE, value);
                }
                Err(error) => tracing::error!(%error, "session cookie is not a valid header value"),
            }
        }
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session middleware is not installed on this route",
        ))
    }
}

/// The session store could not be reached: 503, `Retry-After: 1`, a JSON body naming the store.
/// The detail goes to the log, never to the client.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "answering 503: session store unavailable");
        let body = r#"{"error":"session store unavailable","message":"The session store (Redis) cannot be reached; try again shortly."}"#;
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (RETRY_AFTER, HeaderValue::from_static("1")),
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body,
        )
            .into_response()
    }
}
