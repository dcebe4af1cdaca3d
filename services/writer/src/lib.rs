//! writer: the auth service of the counter demo. It logs a session in (with a new id), counts,
//! and logs out, answering the 2017 demo's bodies byte for byte (SESSION-FORMAT.md).
//!
//! Owns the three routes; sessions, cookies and the store belong to the `session` crate. It
//! never answers 403 for a store failure: that is a 503 from `session::SessionError`.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Json;
use serde_json::value::RawValue;
use session::data::SessionData;
use session::{Session, SessionError, Sessions};

/// The port when `PORT` is unset, as in the demo.
pub const DEFAULT_PORT: u16 = 8090;

/// The writer's routes, with the session middleware.
pub fn app(sessions: Sessions) -> axum::Router {
    axum::Router::new()
        .route("/login", get(login))
        .route("/increment", get(increment))
        .route("/logout", get(logout))
        .layer(axum::middleware::from_fn_with_state(
            sessions,
            session::middleware,
        ))
}

/// Logs the session in: a session without `user` gets `{"id": <random in [0,1)>}` and a new id
/// (an id planted before login is dead after it); a logged-in session is left as it is.
async fn login(session: Session) -> Result<impl IntoResponse, SessionError> {
    let user = session
        .update(|data: &mut SessionData| {
            if let Some(user) = data.get_truthy("user") {
                return user.to_owned();
            }
            let user = serde_json::json!({ "id": rand::random::<f64>() });
            data.set("user", &user);
            data.rotate_id();
            serde_json::value::to_raw_value(&user).expect("a JSON object always serialises")
        })
        .await?;
    Ok(Json(LoginAnswer {
        message: "you are now logged in",
        user,
    }))
}

#[derive(serde::Serialize)]
struct LoginAnswer {
    message: &'static str,
    user: Box<RawValue>,
}

/// `count` + 1, starting at 1 (a session is created if there is none, as in the demo).
async fn increment(session: Session) -> Result<impl IntoResponse, SessionError> {
    let count = session
        .update(|data: &mut SessionData| {
            let count = data.get::<f64>("count").unwrap_or(0.0) + 1.0;
            data.set("count", &JsNumber(count));
            JsNumber(count)
        })
        .await?;
    Ok(Json(
        serde_json::json!({ "message": "Incremented Count", "count": count }),
    ))
}

/// Destroys the session.
async fn logout(session: Session) -> Result<impl IntoResponse, SessionError> {
    session.destroy().await?;
    Ok(Json(
        serde_json::json!({ "message": "logged out : count reset" }),
    ))
}

/// A number written as JavaScript writes it: integers without a fraction (`2`, not `2.0`).
#[derive(Clone, Copy)]
struct JsNumber(f64);

impl serde::Serialize for JsNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;
        if self.0.fract() == 0.0 && self.0.abs() <= MAX_SAFE_INTEGER {
            #[allow(clippy::cast_possible_truncation)] // integral and within ±2^53: exact
            serializer.serialize_i64(self.0 as i64)
        } else {
            serializer.serialize_f64(self.0)
        }
    }
}
