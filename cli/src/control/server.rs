//! The control routes, served by `stack up` on `.stack/stack.sock`:
//!
//! | route | does |
//! |---|---|
//! | `GET /v1/deployments` | every running deployment, and the services being built (`stack ls`) |
//! | `POST /v1/scale` | run N instances; answers once they are ready (or failed) |
//! | `DELETE /v1/deployments/<id>` | stop a deployment and remove it (`stack rm`) |
//! | `GET /v1/logs?target=T&lines=N&since=MS&follow=1` | stored lines (the last N from MS, ms since the epoch, on), then live ones as NDJSON |
//! | `POST /v1/aliases` | an [`AliasChange`], applied atomically or refused |
//! | `POST /v1/down` | stop everything (`stack down`) |
//! | `GET /v1/redis` | `{"url": ...}`: the Redis URL the services get (`stack redis`) |
//! | `POST /v1/rollback` | swap a kept deployment back in (`stack rollback`) |
//!
//! Errors are JSON [`ErrorBody`]s with a 4xx/5xx status; the connection loop logs and goes on.
//!
//! The socket is bound as soon as `stack up` holds the project's lock, before its first build.
//! While it is starting (building, starting Redis) it serves `GET /v1/deployments` (the services
//! being built, as BUILDING) and `POST /v1/down`, and records `POST /v1/aliases` and `POST
//! /v1/scale` of a service in `.stack/state.json` for the start to pick up (answered with
//! `"at_start": true`), as long as the start has not read that file yet
//! ([`Control::load_state`]). Every other route, and those two after that point, answers 503
//! with [`ErrorBody::starting`] set, so a command can say "still starting" instead of "not
//! running" or falling back to what is on disk. [`Control::started`] hands in the full context.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode};
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

use super::{AliasChange, DeploymentStatus, ErrorBody, ScaleAnswer, ScaleRequest};
use crate::state::{self, State};
use crate::supervisor::logs::{self, LogLine};
use crate::supervisor::redeploy::{self, Builds, RedeployError, RollbackRequest};
use crate::supervisor::{Supervisor, SupervisorError};

type Body = BoxBody<Bytes, Infallible>;

/// Applies an alias change to the running stack (validate every `dest` against the running
/// deployments, save the state, swap the routing table), or says why not. Provided by `stack up`,
/// which owns the proxy; the `Ok` string is a summary for the client.
pub type AliasApplier = Arc<dyn Fn(&AliasChange) -> Result<String, ErrorBody> + Send + Sync>;

/// What the routes work on.
#[derive(Clone)]
pub struct ControlContext {
    pub supervisor: Supervisor,
    pub project_dir: PathBuf,
    pub proxy_port: u16,
    pub ready_timeout: Duration,
    /// Cancelled by `POST /v1/down`: `stack up` then stops everything.
    pub down: CancellationToken,
    pub aliases: AliasApplier,
    /// Serialises read-modify-write of `.stack/state.json` within this process.
    pub state_lock: Arc<Mutex<()>>,
    /// The Redis URL the services get (managed, or `REDIS_SESSION_URL`), for `stack redis`.
    /// It may carry a password: answered only over the 0600 socket, never logged.
    pub redis_url: String,
    /// Services a redeploy is building (`stack ls` shows them as BUILDING).
    pub builds: Builds,
}

/// What the control socket serves: a starting `stack up` until [`Control::started`], then the
/// running one.
#[derive(Clone)]
pub struct Control {
    project_dir: PathBuf,
    down: CancellationToken,
    builds: Builds,
    /// Whether the start has read `.stack/state.json`; held while a change is recorded in it.
    state_read: Arc<Mutex<bool>>,
    running: Arc<OnceLock<ControlContext>>,
}

impl Control {
    /// A starting `stack up`: `builds` lists what its first build is building; `down` stops it.
    pub fn starting(project_dir: PathBuf, down: CancellationToken, builds: Builds) -> Self {
        Control {
            project_dir,
            down,
            builds,
            state_read: Arc::new(Mutex::new(false)),
            running: Arc::new(OnceLock::new()),
        }
    }

    /// Reads `.stack/state.json` for the start: alias and scale changes recorded while
    /// building are in it; from now until [`Control::started`] they are refused as "still
    /// starting" (one more write would be lost).
    pub fn load_state(&self) -> Result<State, state::StateError> {
        let mut read = self.lock_state();
        *read = true;
        State::load(&self.project_dir)
    }

    /// Records `change` in the state the start is about to read. `None` when done, else the
    /// answer saying why not: the start has read it already ("still starting"), or the file
    /// cannot be read or written.
    fn record_at_start(&self, change: impl FnOnce(&mut State)) -> Option<Response<Body>> {
        let read = self.lock_state();
        if *read {
            return Some(self.still_starting());
        }
        let recorded = State::load(&self.project_dir).and_then(|mut state| {
            change(&mut state);
            state.save(&self.project_dir)
        });
        recorded
            .err()
            .map(|failure| error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string(), None))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, bool> {
        self.state_read
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// The services are handed to the supervisor: every route is served from now on.
    pub fn started(&self, context: ControlContext) {
        if self.running.set(context).is_err() {
            tracing::warn!("the control context was handed in twice; the first one stays");
        }
    }

    /// The 503 every route but `stack ls` and `stack down` gets while starting.
    fn still_starting(&self) -> Response<Body> {
        let building: Vec<String> = self
            .builds
            .in_progress()
            .into_iter()
            .map(|(service, _)| service)
            .collect();
        let doing = if building.is_empty() {
            "starting its services".to_string()
        } else {
            format!("building {}", building.join(", "))
        };
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorBody {
                error: format!(
                    "the `stack up` in `{}` is still starting ({doing})",
                    self.project_dir.display()
                ),
                hint: Some(
                    "Run this again once it prints `> Ready!`; `stack ls` shows its progress, `stack down` stops it."
                        .into(),
                ),
                starting: true,
            },
        )
    }
}

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
pub async fn serve(listener: UnixListener, control: Control, shutdown: CancellationToken) {
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
        let control = control.clone();
        let shutdown = shutdown.clone();
        let service = service_fn(move |request| {
            let control = control.clone();
            let shutdown = shutdown.clone();
            async move {
                let response = match control.running.get() {
                    Some(context) => route(request, context.clone(), shutdown).await,
                    None => starting_route(request, &control).await,
                };
                Ok::<_, Infallible>(response)
            }
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
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

/// The routes of a starting `stack up`: what is being built, stopping it, and alias and scale
/// changes recorded for the start.
async fn starting_route(request: Request<Incoming>, control: &Control) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/aliases") => match read_json::<AliasChange>(request).await {
            Ok(change) => match control.record_at_start(|state| change.apply_to(state)) {
                None => json(
                    StatusCode::OK,
                    &serde_json::json!({ "summary": "recorded for the start", "at_start": true }),
                ),
                Some(refusal) => refusal,
            },
            Err(response) => response,
        },
        (&Method::POST, "/v1/scale") => match read_json::<ScaleRequest>(request).await {
            Ok(scale) => {
                let target = scale
                    .target
                    .strip_suffix(".localhost")
                    .unwrap_or(&scale.target);
                // Only a service being built: a deployment id names no deployment yet.
                let building = control.builds.in_progress();
                if !building.iter().any(|(service, _)| service == target) {
                    return control.still_starting();
                }
                let service = target.to_string();
                let recorded =
                    control.record_at_start(|state| state.set_scale(&service, scale.instances));
                match recorded {
                    None => json(
                        StatusCode::OK,
                        &ScaleAnswer {
                            deployment: service,
                            ready: 0,
                            wanted: scale.instances,
                            at_start: true,
                        },
                    ),
                    Some(refusal) => refusal,
                }
            }
            Err(response) => response,
        },
        (&Method::GET, "/v1/deployments") => {
            // The first build: every service it builds, with the instances it will start.
            let scale = State::load(&control.project_dir)
                .map(|state| state.scale)
                .unwrap_or_default();
            let building: Vec<DeploymentStatus> = control
                .builds
                .in_progress()
                .into_iter()
                .map(|(service, started_ms)| {
                    let wanted = scale.get(&service).copied().unwrap_or(1);
                    DeploymentStatus::building(service, started_ms, wanted)
                })
                .collect();
            json(StatusCode::OK, &building)
        }
        (&Method::POST, "/v1/down") => down_route(&control.down),
        _ => control.still_starting(),
    }
}

fn down_route(down: &CancellationToken) -> Response<Body> {
    down.cancel();
    json(StatusCode::OK, &serde_json::json!({ "stopping": true }))
}

async fn route(
    request: Request<Incoming>,
    context: ControlContext,
    shutdown: CancellationToken,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    match (method, path.as_str()) {
        (Method::GET, "/v1/deployments") => {
            let snapshot = context.supervisor.snapshot();
            let mut deployments = DeploymentStatus::all_live(&snapshot, context.proxy_port);
            deployments.extend(context.builds.in_progress().into_iter().map(
                |(service, started_ms)| {
                    let wanted = snapshot.resolve(&service).map_or(1, |live| live.wanted);
                    DeploymentStatus::building(service, started_ms, wanted)
                },
            ));
            json(StatusCode::OK, &deployments)
        }
        (Method::POST, "/v1/scale") => match read_json::<ScaleRequest>(request).await {
            Ok(scale) => scale_route(&context, scale).await,
            Err(response) => response,
        },
        (Method::DELETE, path) if path.starts_with("/v1/deployments/") => {
            let id = path.trim_start_matches("/v1/deployments/").to_string();
            remove_route(&context, &id).await
        }
        (Method::GET, "/v1/logs") => logs_route(&context, &query, shutdown),
        (Method::POST, "/v1/aliases") => match read_json::<AliasChange>(request).await {
            Ok(change) => match (context.aliases)(&change) {
                Ok(summary) => json(StatusCode::OK, &serde_json::json!({ "summary": summary })),
                Err(body) => json(StatusCode::UNPROCESSABLE_ENTITY, &body),
            },
            Err(response) => response,
        },
        (Method::GET, "/v1/redis") => json(
            StatusCode::OK,
            &serde_json::json!({ "url": context.redis_url }),
        ),
        (Method::POST, "/v1/rollback") => match read_json::<RollbackRequest>(request).await {
            Ok(rollback) => rollback_route(&context, rollback).await,
            Err(response) => response,
        },
        (Method::POST, "/v1/down") => down_route(&context.down),
        _ => error(StatusCode::NOT_FOUND, format!("no route `{path}`"), None),
    }
}

async fn rollback_route(context: &ControlContext, request: RollbackRequest) -> Response<Body> {
    match redeploy::rollback(
        &context.supervisor,
        &context.project_dir,
        &context.state_lock,
        &request,
        context.ready_timeout,
        context.proxy_port,
    )
    .await
    {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(failure) => {
            let status = match failure {
                RedeployError::NoHistory { .. } | RedeployError::UnknownDeployment { .. } => {
                    StatusCode::NOT_FOUND
                }
                RedeployError::NothingBefore { .. }
                | RedeployError::AlreadyLive { .. }
                | RedeployError::ArtifactGone { .. } => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, failure.to_string(), Some(failure.hint()))
        }
    }
}

async fn scale_route(context: &ControlContext, scale: ScaleRequest) -> Response<Body> {
    let deployment = match context
        .supervisor
        .scale(&scale.target, scale.instances)
        .await
    {
        Ok(deployment) => deployment,
        Err(failure) => return supervisor_error(failure),
    };
    // Remembered for the next `stack up` (per service).
    if let Some(live) = context.supervisor.snapshot().resolve(&deployment) {
        let service = live.spec.service.clone();
        let _guard = context
            .state_lock
            .lock()
            .expect("never poisoned: no panics while held");
        let saved = State::load(&context.project_dir).and_then(|mut state| {
            state.set_scale(&service, scale.instances);
            state.save(&context.project_dir)
        });
        if let Err(failure) = saved {
            tracing::warn!(error = %failure, "cannot record the scale");
        }
    }
    if let Err(failure) = context
        .supervisor
        .wait_ready(&deployment, context.ready_timeout)
        .await
    {
        return supervisor_error(failure);
    }
    let snapshot = context.supervisor.snapshot();
    let ready = snapshot
        .resolve(&deployment)
        .map_or(0, |live| live.n_ready());
    json(
        StatusCode::OK,
        &ScaleAnswer {
            deployment,
            ready,
            wanted: scale.instances,
            at_start: false,
        },
    )
}

async fn remove_route(context: &ControlContext, id: &str) -> Response<Body> {
    let snapshot = context.supervisor.snapshot();
    if let Some(live) = snapshot.resolve(id).filter(|live| live.spec.id == id) {
        if live.current && live.wanted > 0 {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "`{id}` is the current deployment of `{}` and is running",
                    live.spec.service
                ),
                Some(format!(
                    "Stop it first with `stack scale {id} 0`, then run `stack rm {id}` again."
                )),
            );
        }
        if let Err(failure) = context.supervisor.remove(id).await {
            return supervisor_error(failure);
        }
    }
    let _guard = context
        .state_lock
        .lock()
        .expect("never poisoned: no panics while held");
    match state::deployments::forget(&context.project_dir, id) {
        Ok(true) => json(StatusCode::OK, &serde_json::json!({ "removed": id })),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no deployment `{id}`"),
            Some("See `stack ls` for the deployments.".into()),
        ),
        Err(failure) => error(StatusCode::INTERNAL_SERVER_ERROR, failure.to_string(), None),
    }
}

fn logs_route(
    context: &ControlContext,
    query: &str,
    shutdown: CancellationToken,
) -> Response<Body> {
    let mut target = None;
    let mut lines = 100usize;
    let mut since_ms = 0u64;
    let mut follow = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("target", value)) => target = Some(value.to_string()),
            Some(("lines", value)) => lines = value.parse().unwrap_or(100),
            Some(("since", value)) => since_ms = value.parse().unwrap_or(0),
            Some(("follow", value)) => follow = value == "1" || value == "true",
            _ => {}
        }
    }
    let Some(target) = target else {
        return error(StatusCode::BAD_REQUEST, "`target` is missing".into(), None);
    };
    let snapshot = context.supervisor.snapshot();
    let (deployment_id, live_log) = match snapshot.resolve(&target) {
        Some(live) => (live.spec.id.clone(), Some(live.log.clone())),
        None => match stored_deployment(&context.project_dir, &target) {
            Some(id) => (id, None),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no service or deployment named `{target}`"),
                    Some("See `stack ls` for the deployments.".into()),
                )
            }
        },
    };
    // Subscribe before reading the file, so no line falls between the two.
    let receiver = live_log.filter(|_| follow).map(|log| log.follow());
    let logs_dir = context.project_dir.join(state::STATE_DIR).join("logs");
    let stored = logs::read_stored(&logs_dir, &deployment_id, lines, since_ms).unwrap_or_default();
    let last_stored_ms = stored.last().map_or(since_ms, |line| line.time_ms);
    let stored_frames = stream::iter(
        stored
            .into_iter()
            .map(|line| Ok::<_, Infallible>(Frame::data(ndjson(&line)))),
    );
    let live_frames = stream::unfold(
        (receiver, shutdown),
        move |(receiver, shutdown)| async move {
            let mut receiver = receiver?;
            loop {
                let next = tokio::select! {
                    next = receiver.recv() => next,
                    () = shutdown.cancelled() => return None,
                };
                match next {
                    Ok(line) if line.time_ms < last_stored_ms => continue,
                    Ok(line) => {
                        return Some((Ok(Frame::data(ndjson(&line))), (Some(receiver), shutdown)))
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    use futures_util::StreamExt;
    let body = StreamBody::new(stored_frames.chain(live_frames));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(BodyExt::boxed(body))
        .expect("a fixed status and header make a valid response")
}

/// A service's current deployment or a deployment id, from the state on disk.
pub fn stored_deployment(project_dir: &Path, target: &str) -> Option<String> {
    let state = State::load(project_dir).ok()?;
    let target = target.strip_suffix(".localhost").unwrap_or(target);
    if let Some(history) = state.deployments.get(target) {
        return history.current.clone();
    }
    state
        .deployments
        .values()
        .flat_map(|history| &history.deployments)
        .find(|record| record.id == target)
        .map(|record| record.id.clone())
}

fn ndjson(line: &LogLine) -> Bytes {
    let mut bytes = serde_json::to_vec(line).expect("a log line is plain data and serialises");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(failure) => return Err(error(StatusCode::BAD_REQUEST, failure.to_string(), None)),
    };
    serde_json::from_slice(&bytes).map_err(|failure| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {failure}"),
            None,
        )
    })
}

fn supervisor_error(failure: SupervisorError) -> Response<Body> {
    let (status, hint) = match &failure {
        SupervisorError::UnknownTarget { running, .. } => (
            StatusCode::NOT_FOUND,
            Some(if running.is_empty() {
                "Nothing is running.".to_string()
            } else {
                format!("Running: {}.", running.join(", "))
            }),
        ),
        SupervisorError::FixedPort { port, .. } => (
            StatusCode::CONFLICT,
            Some(format!(
                "Two processes cannot listen on port {port}. Make the service listen on `process.env.PORT` (or `PORT`) to run more than one instance."
            )),
        ),
        SupervisorError::Crashed { .. } | SupervisorError::NotReady { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            Some("See `stack logs` for its output.".to_string()),
        ),
        SupervisorError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, None),
    };
    error(status, failure.to_string(), hint)
}

fn error(status: StatusCode, message: String, hint: Option<String>) -> Response<Body> {
    json(status, &ErrorBody::new(message, hint))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("control answers are plain data and serialise");
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("a fixed status and header make a valid response")
}
