//! One HTTP/1 request over `.stack/stack.sock`. A missing socket or one nobody listens on means
//! "no `stack up` runs here" ([`ControlError::NotRunning`]), never a crash.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::{socket_path, ControlError, ErrorBody};

/// Talks to the `stack up` of one project directory.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    project_dir: PathBuf,
}

impl Client {
    pub fn new(project_dir: &Path) -> Self {
        Client {
            socket: socket_path(project_dir),
            project_dir: project_dir.to_path_buf(),
        }
    }

    /// Sends one request; any status comes back (errors are for the transport).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ControlError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|error| match error.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                        ControlError::NotRunning {
                            dir: self.project_dir.display().to_string(),
                        }
                    }
                    _ => self.transport(error),
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| self.transport(error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "control connection ended");
            }
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "stack")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("method and path are fixed strings of this module's callers");
        sender
            .send_request(request)
            .await
            .map_err(|error| self.transport(error))
    }

    /// Sends `body` as JSON and reads a JSON answer; a non-2xx answer is
    /// [`ControlError::Refused`] with the server's message and hint.
    pub async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ControlError> {
        let body = body.map(|body| {
            serde_json::to_vec(body).expect("control requests are plain data and serialise")
        });
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| self.transport(error))?
            .to_bytes();
        if !status.is_success() {
            return Err(refused(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| self.transport(error))
    }

    /// [`Client::json`] for synchronous callers (the commands), on a small runtime of its own.
    pub fn blocking_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ControlError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| self.transport(error))?;
        runtime.block_on(self.json(method, path, body))
    }

    fn transport(&self, error: impl std::fmt::Display) -> ControlError {
        ControlError::Transport {
            socket: self.socket.display().to_string(),
            reason: error.to_string(),
        }
    }
}

/// A non-2xx answer as an error: the server's own message when it sent one.
pub fn refused(status: StatusCode, bytes: &[u8]) -> ControlError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) if body.starting => ControlError::Starting {
            message: body.error,
            hint: body.hint,
        },
        Ok(body) => ControlError::Refused {
            status: status.as_u16(),
            message: body.error,
            hint: body.hint,
        },
        Err(_) => ControlError::Refused {
            status: status.as_u16(),
            message: format!("`stack up` answered {status}"),
            hint: None,
        },
    }
}
