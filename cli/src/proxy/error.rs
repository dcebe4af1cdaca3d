//! The proxy's own answers: every failure becomes a JSON body with a stable `error` code.
//!
//! Owns [`ProxyError`] and its mapping to a status and a body. It never puts internals
//! (socket errors, addresses of instances) in a body: those go to the log where the error is
//! raised. A dead upstream is 502, a slow one 504, never 400 or 500.

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::body::ResponseBody;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no deployment or alias answers for host `{host}`")]
    NoRoute { host: String, hosts: Vec<String> },
    #[error("no rule of `{host}` matches `{method} {path}`")]
    NoRuleMatches {
        host: String,
        method: http::Method,
        path: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("`CONNECT` is not supported: stack is a reverse proxy, not a forward proxy")]
    MethodNotAllowed,
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the request's headers are larger than the limit of {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("{0}")]
    BadGateway(String),
    #[error("`{0}` did not answer in time")]
    GatewayTimeout(String),
    #[error("{0}")]
    ServiceUnavailable(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute { .. } | Self::NoRuleMatches { .. } => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoRoute { .. } | Self::NoRuleMatches { .. } => "no_route",
            Self::BadRequest(_) => "bad_request",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::HeadersTooLarge { .. } => "request_header_fields_too_large",
            Self::BadGateway(_) => "bad_gateway",
            Self::GatewayTimeout(_) => "gateway_timeout",
            Self::ServiceUnavailable(_) => "service_unavailable",
        }
    }

    /// The error a configured "unavailable" target answers with.
    pub fn unavailable(status: StatusCode, message: &str) -> Self {
        match status {
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable(message.to_owned()),
            StatusCode::GATEWAY_TIMEOUT => Self::GatewayTimeout(message.to_owned()),
            _ => Self::BadGateway(message.to_owned()),
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.to_string(),
        });
        if let Self::NoRoute { hosts, .. } = &self {
            body["hosts"] = serde_json::json!(hosts);
        }
        let mut bytes = serde_json::to_vec(&body).expect("a JSON value always serialises");
        bytes.push(b'\n');
        let mut response = Response::new(ResponseBody::full(Bytes::from(bytes)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Self::ServiceUnavailable(_)) {
            // A deployment starting (or waiting for what it depends on) is worth asking again.
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::MethodNotAllowed) {
            // A CONNECT client expects a tunnel on this connection; it gets none.
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
            headers.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE"),
            );
        }
        response
    }
}
