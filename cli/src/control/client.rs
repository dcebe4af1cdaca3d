//! The control socket's client: one typed method per route ([`api`]), each one HTTP/1
//! request over `.stack/stack.sock`. A missing socket or one nobody listens on means "no
//! `stack up` runs here" ([`ControlError::NotRunning`]), never a crash; a refusal comes back
//! with the daemon's own message and hint.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::api::{
    self, AliasAnswer, AliasChange, DeploymentStatus, DownAnswer, EnvAnswer, ErrorBody, LogsQuery,
    RedisAnswer, RemoveAnswer, RequestsAnswer, RestartAnswer, RestartRequest, RollbackAnswer,
    RollbackRequest, ScaleAnswer, ScaleRequest,
};
use super::{socket_path, ControlError};
use crate::supervisor::logs::LogLine;

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

    /// Runs one of the methods below for a synchronous caller (a command), on a small
    /// runtime of its own.
    pub fn blocking<T>(
        &self,
        call: impl Future<Output = Result<T, ControlError>>,
    ) -> Result<T, ControlError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| self.transport(error))?
            .block_on(call)
    }

    pub async fn deployments(&self) -> Result<Vec<DeploymentStatus>, ControlError> {
        self.call(&api::Request::Deployments).await
    }

    pub async fn scale(&self, request: ScaleRequest) -> Result<ScaleAnswer, ControlError> {
        self.call(&api::Request::Scale(request)).await
    }

    pub async fn remove(&self, deployment: &str) -> Result<RemoveAnswer, ControlError> {
        let request = api::Request::Remove {
            deployment: deployment.to_string(),
        };
        self.call(&request).await
    }

    pub async fn change_alias(&self, change: AliasChange) -> Result<AliasAnswer, ControlError> {
        self.call(&api::Request::Alias(change)).await
    }

    pub async fn rollback(&self, request: RollbackRequest) -> Result<RollbackAnswer, ControlError> {
        self.call(&api::Request::Rollback(request)).await
    }

    pub async fn environment(&self, target: &str) -> Result<EnvAnswer, ControlError> {
        let request = api::Request::Env {
            target: target.to_string(),
        };
        self.call(&request).await
    }

    pub async fn restart(&self, request: RestartRequest) -> Result<RestartAnswer, ControlError> {
        self.call(&api::Request::Restart(request)).await
    }

    pub async fn redis(&self) -> Result<RedisAnswer, ControlError> {
        self.call(&api::Request::Redis).await
    }

    pub async fn requests(&self, since: u64) -> Result<RequestsAnswer, ControlError> {
        self.call(&api::Request::Requests { since }).await
    }

    pub async fn down(&self) -> Result<DownAnswer, ControlError> {
        self.call(&api::Request::Down).await
    }

    /// The stored lines, then (with `follow`) live ones until `stack up` stops.
    pub async fn logs(&self, query: LogsQuery) -> Result<LogStream, ControlError> {
        let response = self.send(&api::Request::Logs(query)).await?;
        if !response.status().is_success() {
            return Err(self.refused(response).await);
        }
        Ok(LogStream {
            body: response.into_body(),
            pending: Vec::new(),
        })
    }

    /// Sends the request and reads its JSON answer; a non-2xx answer is the daemon's refusal.
    async fn call<T: DeserializeOwned>(&self, request: &api::Request) -> Result<T, ControlError> {
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.refused(response).await);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| self.transport(error))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|error| self.transport(error))
    }

    async fn send(&self, request: &api::Request) -> Result<Response<Incoming>, ControlError> {
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
        let http_request = http::Request::builder()
            .method(request.method())
            .uri(request.path())
            .header(http::header::HOST, "stack")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(request.body())))
            .expect("api::Request builds a valid method and an encoded path");
        sender
            .send_request(http_request)
            .await
            .map_err(|error| self.transport(error))
    }

    async fn refused(&self, response: Response<Incoming>) -> ControlError {
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        refused(status, &bytes)
    }

    fn transport(&self, error: impl std::fmt::Display) -> ControlError {
        ControlError::Transport {
            socket: self.socket.display().to_string(),
            reason: error.to_string(),
        }
    }
}

/// A logs answer, line by line.
pub struct LogStream {
    body: Incoming,
    pending: Vec<u8>,
}

impl LogStream {
    /// The next line; `None` at the end (or when the connection breaks).
    pub async fn next_line(&mut self) -> Option<LogLine> {
        loop {
            while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if let Ok(line) = serde_json::from_slice(&line) {
                    return Some(line);
                }
            }
            let frame = self.body.frame().await?.ok()?;
            if let Some(data) = frame.data_ref() {
                self.pending.extend_from_slice(data);
            }
        }
    }
}

/// A non-2xx answer as an error: the daemon's own message when it sent one.
fn refused(status: StatusCode, bytes: &[u8]) -> ControlError {
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
