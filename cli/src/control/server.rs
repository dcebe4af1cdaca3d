//! The control socket's server: HTTP/1 on `.stack/stack.sock`, one router for both phases of
//! the daemon. Each request is parsed into an [`api::Request`] and handed to the matching
//! [`Daemon`] method, which decides what a starting daemon can answer; its refusals become
//! [`ErrorBody`]s with a status saying what kind they are. A connection that fails is logged
//! and the loop goes on.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::api::{self, DownAnswer, ErrorBody};
use crate::daemon::history::RollbackError;
use crate::daemon::{Daemon, DaemonError, LogFeed};
use crate::supervisor::logs::LogLine;
use crate::supervisor::SupervisorError;

type Body = BoxBody<Bytes, Infallible>;

/// The largest request body read (an alias change carries a rules file).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Requests still open at shutdown get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Binds the socket (replacing a stale one; the caller holds the project lock) with mode 0600.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves until `shutdown`, then lets open requests finish (follows end at shutdown).
pub async fn serve(listener: UnixListener, daemon: Daemon, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control socket accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let daemon = daemon.clone();
        let shutdown = shutdown.clone();
        let service = service_fn(move |request| {
            let daemon = daemon.clone();
            let shutdown = shutdown.clone();
            async move { Ok::<_, Infallible>(route(request, &daemon, shutdown).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "control connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

async fn route(
    request: Request<Incoming>,
    daemon: &Daemon,
    shutdown: CancellationToken,
) -> Response<Body> {
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_string();
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(failure) => return refusal(StatusCode::BAD_REQUEST, failure.to_string(), None),
    };
    let request = match api::Request::parse(&method, &target, &body) {
        Ok(request) => request,
        Err(bad @ api::BadRequest::NoRoute { .. }) => {
            return refusal(StatusCode::NOT_FOUND, bad.to_string(), None)
        }
        Err(bad) => return refusal(StatusCode::BAD_REQUEST, bad.to_string(), None),
    };
    match request {
        api::Request::Deployments => json(StatusCode::OK, &daemon.deployments().await),
        api::Request::Scale(scale) => {
            answer(until_stopped(&shutdown, "the scale", daemon.scale(scale)).await)
        }
        api::Request::Remove { deployment } => {
            answer(until_stopped(&shutdown, "the removal", daemon.remove(&deployment)).await)
        }
        api::Request::Logs(query) => match daemon.logs(&query).await {
            Ok(feed) => ndjson(feed, shutdown),
            Err(error) => daemon_error(error),
        },
        api::Request::Alias(change) => answer(daemon.change_alias(change).await),
        api::Request::Rollback(rollback) => {
            answer(until_stopped(&shutdown, "the rollback", daemon.rollback(rollback)).await)
        }
        api::Request::Restart(restart) => {
            answer(until_stopped(&shutdown, "the restart", daemon.restart(restart)).await)
        }
        api::Request::Env { target } => answer(daemon.environment(&target).await),
        api::Request::Redis => answer(daemon.redis().await),
        api::Request::Requests { since } => answer(daemon.requests(since).await),
        api::Request::Down => {
            daemon.down();
            json(StatusCode::OK, &DownAnswer { stopping: true })
        }
    }
}

/// A call that `stack up`'s stop cuts short (`stack down` during `stack scale` or `stack
/// restart`) answers that at once, rather than with what the stop did to it (its deployment
/// gone) or not at all (the socket closing under it).
async fn until_stopped<T>(
    shutdown: &CancellationToken,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, DaemonError>>,
) -> Result<T, DaemonError> {
    let result = tokio::select! {
        result = call => result,
        () = shutdown.cancelled() => return Err(DaemonError::Stopping { what }),
    };
    match result {
        Err(_) if shutdown.is_cancelled() => Err(DaemonError::Stopping { what }),
        result => result,
    }
}

/// Most characters of a refusal's message: one may repeat what the request sent.
const MAX_ERROR_CHARS: usize = 400;

fn answer<T: Serialize>(result: Result<T, DaemonError>) -> Response<Body> {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(error) => daemon_error(error),
    }
}

/// A refusal as a status and an [`ErrorBody`]: what kind of refusal it is decides the status.
fn daemon_error(error: DaemonError) -> Response<Body> {
    json(
        status_of(&error),
        &ErrorBody {
            error: api::cut_echoed(error.to_string(), MAX_ERROR_CHARS),
            hint: error.hint(),
            starting: matches!(error, DaemonError::Starting { .. }),
        },
    )
}

/// The HTTP status of a refusal (the control socket's and the dashboard's).
pub fn status_of(error: &DaemonError) -> StatusCode {
    match error {
        DaemonError::Starting { .. } | DaemonError::Stopping { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DaemonError::UnknownTarget { .. }
        | DaemonError::UnknownDeployment { .. }
        | DaemonError::UnknownInstance { .. } => StatusCode::NOT_FOUND,
        DaemonError::LiveDeployment { .. }
        | DaemonError::Waiting { .. }
        | DaemonError::WaitedOn { .. }
        | DaemonError::HostTaken(_)
        | DaemonError::NothingToRestart { .. } => StatusCode::CONFLICT,
        DaemonError::RestartFailed { .. } => StatusCode::GATEWAY_TIMEOUT,
        DaemonError::TooManyInstances { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        DaemonError::UnresolvedAlias(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DaemonError::Supervisor(failure)
        | DaemonError::Rollback(RollbackError::Supervisor(failure)) => match failure {
            SupervisorError::UnknownTarget { .. } => StatusCode::NOT_FOUND,
            SupervisorError::FixedPort { .. } => StatusCode::CONFLICT,
            SupervisorError::Crashed { .. } | SupervisorError::NotReady { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            SupervisorError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        },
        DaemonError::Rollback(
            RollbackError::NoHistory { .. } | RollbackError::UnknownDeployment { .. },
        ) => StatusCode::NOT_FOUND,
        DaemonError::Rollback(
            RollbackError::NothingBefore { .. }
            | RollbackError::AlreadyLive { .. }
            | RollbackError::ArtifactGone { .. },
        ) => StatusCode::CONFLICT,
        DaemonError::Rollback(RollbackError::State(_)) | DaemonError::State(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The stored lines, then the live ones (until the follower lags out or `shutdown`), as NDJSON.
fn ndjson(feed: LogFeed, shutdown: CancellationToken) -> Response<Body> {
    let filter = feed.filter;
    let stored = stream::iter(
        feed.stored
            .into_iter()
            .map(|line| Ok::<_, Infallible>(Frame::data(ndjson_line(&line)))),
    );
    let live = stream::unfold(
        (feed.live, shutdown),
        move |(receiver, shutdown)| async move {
            let mut receiver = receiver?;
            loop {
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    () = shutdown.cancelled() => return None,
                };
                match next {
                    Ok(line) if !filter.keeps(&line) => continue,
                    Ok(line) => {
                        let frame = Ok(Frame::data(ndjson_line(&line)));
                        return Some((frame, (Some(receiver), shutdown)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(stored.chain(live))))
        .expect("a fixed status and header make a valid response")
}

fn ndjson_line(line: &LogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).expect("a log line is plain data and serialises");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn refusal(status: StatusCode, message: String, hint: Option<String>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: api::cut_echoed(message, MAX_ERROR_CHARS),
            hint,
            starting: false,
        },
    )
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("control answers are plain data and serialise");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("a fixed status and header make a valid response")
}
