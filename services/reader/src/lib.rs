//! reader: the app service of the counter demo. `GET /` shows the logged-in user and the count
//! the writer keeps; anyone else is told to log in (403), with the 2017 demo's bodies.
//!
//! Owns that one route; sessions belong to the `session` crate. It never writes to the store
//! (a read extends the session's TTL inside the same round trip) and never answers 403 for a
//! store failure (that is a 503).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::value::RawValue;
use session::{Session, SessionError, Sessions};

/// The port when `PORT` is unset, as in the demo.
pub const DEFAULT_PORT: u16 = 8080;

/// The 403 body, byte for byte the demo's.
pub const LOGIN_FIRST: &str =
    r#"{"message":"Please go \"log in!\" (set up your session)","login":"/login"}"#;

/// The reader's routes, with the session middleware.
pub fn app(sessions: Sessions) -> axum::Router {
    axum::Router::new()
        .route("/", get(home))
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            session::middleware,
        ))
}

#[derive(serde::Serialize)]
struct Home<'a> {
    user: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<&'a RawValue>,
}

async fn home(session: Session) -> Result<Response, SessionError> {
    let data = session.data().await?;
    let user = data
        .as_ref()
        .and_then(|data| Some((data.get_truthy("user")?, data)));
    let Some((user, data)) = user else {
        return Ok(json(StatusCode::FORBIDDEN, LOGIN_FIRST.to_owned()));
    };
    // `count: undefined` vanishes from JSON.stringify; any stored value is shown as stored.
    let count = data.get_raw("count");
    let body =
        serde_json::to_string(&Home { user, count }).expect("raw JSON values always serialise");
    Ok(json(StatusCode::OK, body))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
