//! The running `stack up`: one [`Daemon`] handle in front of everything it owns (the
//! supervisor, the proxy's routing table and the aliases, the Redis in use, the state), with one
//! typed async method per thing a caller can ask. The control socket ([`crate::control`]) and
//! the watcher ([`redeploy`]) are thin adapters over it.
//!
//! A daemon is in one phase: *starting* from the moment the control socket is bound (before
//! the first build) until the services are handed to the supervisor, then *running*. While
//! starting it lists the services being built, stops on [`Daemon::down`], and records alias
//! changes and the scale of a service being built in `.stack/state.json` for the start to read;
//! once the start has read that file, and for every other call, it answers
//! [`DaemonError::Starting`].
//!
//! - [`start`]: lock, socket, build alongside Redis, supervisor, proxy, deployments, watcher.
//! - [`shutdown`]: the ordered stop, each step with its named timeout.
//! - [`env`](mod@env): [`env::ServiceEnv::assemble`], the one place a service's environment is made.
//! - [`redis`]: the managed Redis, or a probe of the one `REDIS_SESSION_URL` names.
//! - [`aliases`], [`routes`]: the aliases and the routing table built from them.
//! - [`history`]: deployment records, retention (`--keep`) and rollback targets.
//! - [`builds`]: which services are being built right now (`stack ls` shows BUILDING).
//! - [`progress`]: a first build's progress: a bar on a terminal, periodic lines elsewhere.
//! - [`redeploy`]: change sets from [`crate::watch`] to builds and hot swaps.
//! - [`reconfigure`]: what a saved `stack.toml` changes in the running stack.
//! - [`report`]: what a redeploy prints, in one place.
//! - [`requests`]: the proxy's request log as `stack requests` and the dashboard show it.
//! - [`stop`]: what ends a `stack up` (Ctrl-C, SIGTERM, `stack down`).

pub mod aliases;
pub mod builds;
pub mod env;
pub mod history;
pub mod progress;
pub mod reconfigure;
pub mod redeploy;
pub mod redis;
pub mod report;
pub mod requests;
pub mod routes;
pub mod shutdown;
pub mod start;
pub mod stop;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::model::Condition;
use crate::control::api::{
    self, AliasAnswer, AliasChange, Applied, DeploymentStatus, EnvAnswer, LogsQuery, RedisAnswer,
    RemoveAnswer, RequestsAnswer, RestartAnswer, RestartRequest, RollbackAnswer, RollbackRequest,
    ScaleAnswer, ScaleRequest,
};
use crate::proxy::{LoggedRequest, RequestLog};
use crate::redis::managed::RedisStatus;
use crate::state::aliases::HostOwner;
use crate::state::{deployments, State, StateError, Store};
use crate::supervisor::logs::{self, LogLine, Redactor, Rotation};
use crate::supervisor::{self, Instance, Supervisor, SupervisorError};
use aliases::Aliases;
use builds::Builds;
use history::RollbackError;
use routes::UnresolvedDest;
use session::cookie::Secrets;

pub use env::EnvSources;
pub use start::{Launched, Start};
pub use stop::{Signals, StopReason};

/// What `stack up` was asked to run.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The project directory (made absolute by the start).
    pub project_dir: PathBuf,
    /// The services to run, by name or path; empty: every service under `services/`.
    pub services: Vec<String>,
    pub env: EnvSources,
    /// The proxy's port on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// The proxy's HTTPS port on 127.0.0.1 (0 picks a free one); `None`: no HTTPS.
    pub https_port: Option<u16>,
    pub release: bool,
    /// Redeploy on every save.
    pub watch: bool,
    /// Deployment artifacts kept per service.
    pub keep: usize,
    /// How long an instance gets to become ready.
    pub ready_timeout: Duration,
    /// How long an instance gets to send response headers (the proxy's response timeout).
    pub upstream_timeout: Duration,
    /// The most instances a scale may ask of one deployment.
    pub max_instances: usize,
    /// When each deployment's log file is rotated.
    pub log_rotation: Rotation,
}

/// The running stack; clone it freely.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    project_dir: PathBuf,
    store: Store,
    builds: Builds,
    /// Cancelled by [`Daemon::down`]: `stack up` then stops everything.
    down: CancellationToken,
    phase: Mutex<Phase>,
}

/// Where the daemon is in its life.
enum Phase {
    /// Building and starting Redis. `state_read`: the start has read `.stack/state.json`, so a
    /// change recorded now would be lost.
    Starting { state_read: bool },
    /// The services are the supervisor's.
    Running(Arc<Live>),
}

/// What a running daemon works with.
pub struct Live {
    pub supervisor: Supervisor,
    pub aliases: Arc<Aliases>,
    pub proxy_port: u16,
    /// The HTTPS port, when the proxy serves HTTPS.
    pub https_port: Option<u16>,
    /// The Redis URL the services get (managed, or `REDIS_SESSION_URL`); may carry a password.
    pub redis_url: String,
    /// The managed Redis's state, when stack manages it.
    pub redis: Option<watch::Receiver<RedisStatus>>,
    pub ready_timeout: Duration,
    pub max_instances: usize,
    /// The proxy's request log; `None` when it is off (`STACK_REQUEST_LOG=off`).
    pub requests: Option<RequestLog>,
    /// The secrets that verify session cookies (`SESSION_SECRET`), for the session column.
    pub session_secrets: Option<Secrets>,
    /// Every secret value of the services' environment, masked wherever it would show.
    pub redactor: Redactor,
    /// Session cookies the request log's readers verified already.
    pub session_cache: requests::SessionCache,
    /// First deployments that wait for what they depend on before they start (shared with
    /// the aliases: their hosts answer 503 meanwhile).
    pub waiting: Arc<WaitingStarts>,
}

/// First deployments not yet started because they wait for their `depends_on`, by id
/// (`stack ls` shows them WAITING).
pub type WaitingStarts = Mutex<BTreeMap<String, WaitingStart>>;

/// A first deployment that waits for its `depends_on`.
#[derive(Debug, Clone)]
pub struct WaitingStart {
    pub service: String,
    /// What it starts with (`stack scale` meanwhile changes it).
    pub instances: usize,
    /// What it still waits for, and for what of it.
    pub waits_on: Vec<(String, Condition)>,
    /// A worker has no host.
    pub worker: bool,
}

impl WaitingStart {
    /// What it still waits for, as said: `db healthy, migrate completed`.
    pub fn on(&self) -> String {
        self.waits_on
            .iter()
            .map(|(dependency, condition)| {
                let condition = match condition {
                    Condition::Started => "started",
                    Condition::Healthy => "healthy",
                    Condition::Completed => "completed",
                };
                format!("{dependency} {condition}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Live {
    /// A [`DaemonError::WaitedOn`] when a waiting first deployment waits for the service
    /// `target` names (its own name, or its current deployment's id).
    pub fn refuse_waited_on(&self, target: &str) -> Result<(), DaemonError> {
        let snapshot = self.supervisor.snapshot();
        let Some(running) = snapshot.resolve(target).filter(|running| running.current) else {
            return Ok(());
        };
        let service = &running.spec.service;
        let waiting = self
            .waiting
            .lock()
            .expect("never poisoned: no panics while held");
        match waiting
            .values()
            .find(|start| start.waits_on.iter().any(|(waited, _)| waited == service))
        {
            Some(start) => Err(DaemonError::WaitedOn {
                service: service.clone(),
                dependent: start.service.clone(),
                on: start.on(),
            }),
            None => Ok(()),
        }
    }

    /// A [`DaemonError::Waiting`] when `target` names a waiting first deployment.
    pub fn refuse_waiting(&self, target: &str) -> Result<(), DaemonError> {
        match self.waiting(target) {
            Some((_, start)) => Err(DaemonError::Waiting {
                target: target.to_string(),
                on: start.on(),
            }),
            None => Ok(()),
        }
    }

    /// The waiting first deployment that `target` names (its id or its service, or one
    /// instance of either: `api.0`), with its id.
    pub fn waiting(&self, target: &str) -> Option<(String, WaitingStart)> {
        let waiting = self
            .waiting
            .lock()
            .expect("never poisoned: no panics while held");
        let named = |target: &str| {
            waiting
                .iter()
                .find(|(id, start)| *id == target || start.service == target)
                .map(|(id, start)| (id.clone(), start.clone()))
        };
        named(target).or_else(|| match api::split_instance(target) {
            (base, Some(_)) => named(base),
            (_, None) => None,
        })
    }
}

/// Why a call was refused, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the `stack up` in `{dir}` is still starting ({doing})")]
    Starting { dir: String, doing: String },
    #[error("`stack up` is stopping, so {what} did not finish")]
    Stopping { what: &'static str },
    #[error("no service or deployment named `{target}`")]
    UnknownTarget { target: String },
    #[error("`{target}` has not started yet: it waits for {on}")]
    Waiting { target: String, on: String },
    #[error("`{service}` cannot stop now: `{dependent}` waits for it to start ({on})")]
    WaitedOn {
        service: String,
        dependent: String,
        on: String,
    },
    #[error("no deployment `{id}`")]
    UnknownDeployment { id: String },
    #[error("{asked} instances is more than the {cap} a deployment may run")]
    TooManyInstances { asked: usize, cap: usize },
    #[error("`{id}` is the current deployment of `{service}` and is running")]
    LiveDeployment { id: String, service: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    UnresolvedAlias(Vec<UnresolvedDest>),
    #[error("{0}; an alias cannot take it over")]
    HostTaken(HostOwner),
    #[error("`{service}` has no instance {number}")]
    UnknownInstance {
        service: String,
        number: usize,
        /// The instances it runs, by name.
        running: Vec<String>,
    },
    #[error("`{deployment}` runs no instance to restart")]
    NothingToRestart { deployment: String },
    #[error("{instance} did not restart: {reason}")]
    RestartFailed {
        instance: String,
        reason: String,
        /// The instances restarted before it.
        restarted: Vec<String>,
    },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Rollback(#[from] RollbackError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl DaemonError {
    /// What the person can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            DaemonError::Starting { .. } => "Run this again once it prints `> Ready!`; `stack ls` shows its progress, `stack down` stops it.".into(),
            DaemonError::Stopping { .. } => "Everything it started is being stopped; run `stack up` again to go on.".into(),
            DaemonError::UnknownTarget { .. } | DaemonError::UnknownDeployment { .. } => {
                "See `stack ls` for the deployments.".into()
            }
            DaemonError::Waiting { .. } => "It starts once what it depends on is there (`depends_on` in `stack.toml`); run this again when `stack ls` shows it running.".into(),
            DaemonError::WaitedOn { dependent, .. } => format!("Scale it down once `{dependent}` runs, or stop everything with `stack down`. Nothing was changed."),
            DaemonError::LiveDeployment { id, .. } => {
                format!("Stop it first with `stack scale {id} 0`, then run `stack rm {id}` again.")
            }
            DaemonError::TooManyInstances { cap, .. } => format!(
                "Ask for {cap} or fewer, or start `stack up --max-instances N`. Nothing was started."
            ),
            DaemonError::UnknownInstance {
                service, running, ..
            } => match running.as_slice() {
                [] => format!("It runs none; `stack scale {service} 1` starts one."),
                _ => format!("It runs {}; `stack ls` shows them.", running.join(", ")),
            },
            DaemonError::NothingToRestart { deployment } => {
                format!("Start it with `stack scale {deployment} 1`.")
            }
            DaemonError::RestartFailed { restarted, .. } => {
                let done = if restarted.is_empty() {
                    String::new()
                } else {
                    format!("{} restarted before it. ", restarted.join(", "))
                };
                format!("{done}A process it replaced keeps serving; see `stack logs` for the new one's output.")
            }
            DaemonError::HostTaken(_) => "Pick another host name (such as `counter-demo.localhost`). Nothing was changed.".into(),
            DaemonError::UnresolvedAlias(_) => "Point each `dest` at a running service or deployment, an alias, or a URL. Nothing was changed.".into(),
            DaemonError::Supervisor(error) => return supervisor_hint(error),
            DaemonError::Rollback(error) => error.hint(),
            DaemonError::State(_) => return None,
        })
    }
}

fn supervisor_hint(error: &SupervisorError) -> Option<String> {
    match error {
        SupervisorError::UnknownTarget { running, .. } if running.is_empty() => {
            Some("Nothing is running.".into())
        }
        SupervisorError::UnknownTarget { running, .. } => {
            Some(format!("Running: {}.", running.join(", ")))
        }
        SupervisorError::FixedPort { port, .. } => Some(format!(
            "Two processes cannot listen on port {port}. Make the service listen on `process.env.PORT` (or `PORT`) to run more than one instance."
        )),
        SupervisorError::Crashed { .. } | SupervisorError::NotReady { .. } => {
            Some("See `stack logs` for its output.".into())
        }
        SupervisorError::Stopped => None,
    }
}

/// A logs answer: the stored lines, then (when following) the live ones.
pub struct LogFeed {
    pub stored: Vec<LogLine>,
    /// Subscribed before the file was read, so no line falls between the two.
    pub live: Option<broadcast::Receiver<LogLine>>,
    /// Which live lines to send.
    pub filter: LiveFilter,
}

/// The live lines a logs answer sends on: those of the instance asked for (all when none
/// was) that are not older than the last stored line sent.
#[derive(Debug, Clone, Copy)]
pub struct LiveFilter {
    /// Older lines were sent from the file already, or were not asked for.
    pub from_ms: u64,
    pub instance: Option<usize>,
}

impl LiveFilter {
    pub fn keeps(&self, line: &LogLine) -> bool {
        line.time_ms >= self.from_ms && line.is_of(self.instance)
    }
}

impl Daemon {
    /// A starting daemon: `builds` lists what its first build builds.
    fn starting(project_dir: &Path, builds: Builds) -> Daemon {
        Daemon {
            inner: Arc::new(Inner {
                project_dir: project_dir.to_path_buf(),
                store: Store::new(project_dir),
                builds,
                down: CancellationToken::new(),
                phase: Mutex::new(Phase::Starting { state_read: false }),
            }),
        }
    }

    pub fn project_dir(&self) -> &Path {
        &self.inner.project_dir
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Cancelled once `stack down` asked the daemon to stop.
    pub fn down_requested(&self) -> &CancellationToken {
        &self.inner.down
    }

    /// Stops everything (`stack down`): `stack up` sees it and shuts down in order.
    pub fn down(&self) {
        self.inner.down.cancel();
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.inner
            .phase
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// The running parts, or why there are none yet.
    fn live(&self) -> Result<Arc<Live>, DaemonError> {
        match &*self.phase() {
            Phase::Running(live) => Ok(live.clone()),
            Phase::Starting { .. } => Err(self.still_starting()),
        }
    }

    /// The running parts (the dashboard reads aliases, the request log and the environment
    /// from them), `None` while starting.
    pub fn live_parts(&self) -> Option<Arc<Live>> {
        self.live().ok()
    }

    fn still_starting(&self) -> DaemonError {
        let building: Vec<String> = self
            .inner
            .builds
            .in_progress()
            .into_iter()
            .map(|(service, _)| service)
            .collect();
        DaemonError::Starting {
            dir: self.inner.project_dir.display().to_string(),
            doing: if building.is_empty() {
                "starting its services".into()
            } else {
                format!("building {}", building.join(", "))
            },
        }
    }

    /// Records `change` in the state the start is about to read, or refuses when it has read
    /// it already. `Ok(None)` when running: the caller applies the change live.
    fn record_at_start(
        &self,
        change: impl FnOnce(&mut State),
    ) -> Result<Option<Arc<Live>>, DaemonError> {
        let phase = self.phase();
        match &*phase {
            Phase::Running(live) => Ok(Some(live.clone())),
            Phase::Starting { state_read: true } => Err(self.still_starting()),
            Phase::Starting { state_read: false } => {
                self.inner.store.update(change)?;
                Ok(None)
            }
        }
    }

    /// The start reads `.stack/state.json`: alias and scale changes recorded while building
    /// are in it; from now until [`Daemon::run`] they are refused as "still starting".
    fn read_state_for_start(&self) -> Result<State, StateError> {
        let mut phase = self.phase();
        *phase = Phase::Starting { state_read: true };
        self.inner.store.load()
    }

    /// The services are the supervisor's: every call is served from now on.
    fn run(&self, live: Arc<Live>) {
        *self.phase() = Phase::Running(live);
    }

    /// Every running deployment, every service being built, and the kept deployments that do
    /// not run (`stack ls`, the dashboard).
    pub async fn deployments(&self) -> Vec<DeploymentStatus> {
        let building = self.inner.builds.in_progress();
        let Ok(live) = self.live() else {
            // The first build: every service it builds, with the instances it will start.
            let state = self.inner.store.load().unwrap_or_default();
            return building
                .into_iter()
                .map(|(service, started_ms)| {
                    let wanted = state.scale_of(&service);
                    DeploymentStatus::building(service, started_ms, wanted)
                })
                .collect();
        };
        let snapshot = live.supervisor.snapshot();
        let mut deployments =
            DeploymentStatus::all_live(&snapshot, live.proxy_port, live.https_port);
        deployments.extend(building.into_iter().map(|(service, started_ms)| {
            let wanted = snapshot.resolve(&service).map_or(1, |live| live.wanted);
            DeploymentStatus::building(service, started_ms, wanted)
        }));
        // Kept deployments that do not run: what a rollback can return to, from the history.
        if let Ok(state) = self.inner.store.load() {
            let mut kept = DeploymentStatus::all_stored(&state, live.proxy_port);
            kept.retain(|stored| !deployments.iter().any(|shown| shown.id == stored.id));
            let waiting = live
                .waiting
                .lock()
                .expect("never poisoned: no panics while held")
                .clone();
            deployments.extend(
                kept.into_iter()
                    .map(|stored| match waiting.get(&stored.id) {
                        Some(start) => DeploymentStatus {
                            state: supervisor::DeploymentState::Waiting,
                            current: true,
                            wanted: start.instances,
                            waiting_for: Some(start.on()),
                            ..stored
                        },
                        None => DeploymentStatus {
                            current: false,
                            wanted: 0,
                            ..stored
                        },
                    }),
            );
        }
        deployments
    }

    /// Runs `request.instances` of a service's live deployment or of a deployment, and answers
    /// once they take traffic. The count is remembered for the service's next start.
    pub async fn scale(&self, request: ScaleRequest) -> Result<ScaleAnswer, DaemonError> {
        let target = request
            .target
            .strip_suffix(".localhost")
            .unwrap_or(&request.target)
            .to_string();
        // While starting, only a service being built can be scaled: a deployment id names
        // no deployment yet.
        let being_built = self
            .inner
            .builds
            .in_progress()
            .iter()
            .any(|(service, _)| *service == target);
        let live = match self.live() {
            Ok(live) if request.instances > live.max_instances => {
                return Err(DaemonError::TooManyInstances {
                    asked: request.instances,
                    cap: live.max_instances,
                })
            }
            Ok(live) => live,
            Err(starting) if !being_built => return Err(starting),
            Err(_) => {
                match self.record_at_start(|state| state.set_scale(&target, request.instances))? {
                    Some(live) => live,
                    None => {
                        return Ok(ScaleAnswer {
                            deployment: target,
                            ready: 0,
                            wanted: request.instances,
                            at_start: true,
                            waiting_for: None,
                        })
                    }
                }
            }
        };
        if let Some(answer) = self.scale_waiting(&live, &target, request.instances)? {
            return Ok(answer);
        }
        if request.instances == 0 {
            live.refuse_waited_on(&target)?;
        }
        let (before, one_shot) = live
            .supervisor
            .snapshot()
            .resolve(&target)
            .map_or((0, false), |running| {
                (running.wanted, running.spec.settings.one_shot)
            });
        let deployment = live.supervisor.scale(&target, request.instances).await?;
        if let Some(running) = live.supervisor.snapshot().resolve(&deployment) {
            let service = running.spec.service.clone();
            if let Err(error) = self
                .inner
                .store
                .update(|state| state.set_scale(&service, request.instances))
            {
                tracing::warn!(%error, "cannot record the scale");
            }
        }
        // Only new instances are waited for: a scale-down answers at once, whatever the
        // remaining ones are doing.
        if request.instances > before {
            live.supervisor
                .wait_ready(&deployment, live.ready_timeout)
                .await?;
            // A one-shot's new runs are done once they exited 0.
            if one_shot {
                live.supervisor.wait_runs_done(&deployment, None).await?;
            }
        }
        let ready = live
            .supervisor
            .snapshot()
            .resolve(&deployment)
            .map_or(0, |running| running.n_ready());
        Ok(ScaleAnswer {
            deployment,
            ready,
            wanted: request.instances,
            at_start: false,
            waiting_for: None,
        })
    }

    /// A scale of a first deployment that waits for its `depends_on`: it starts with that
    /// many instances, recorded as a running one's scale is.
    fn scale_waiting(
        &self,
        live: &Live,
        target: &str,
        instances: usize,
    ) -> Result<Option<ScaleAnswer>, DaemonError> {
        let mut waiting = live
            .waiting
            .lock()
            .expect("never poisoned: no panics while held");
        // Under the lock: the start takes the count from here when it deploys.
        let Some((id, start)) = waiting
            .iter_mut()
            .find(|(id, start)| *id == target || start.service == target)
        else {
            return Ok(None);
        };
        start.instances = instances;
        let (id, service, on) = (id.clone(), start.service.clone(), start.on());
        drop(waiting);
        self.inner
            .store
            .update(|state| state.set_scale(&service, instances))?;
        Ok(Some(ScaleAnswer {
            deployment: id,
            ready: 0,
            wanted: instances,
            at_start: true,
            waiting_for: Some(on),
        }))
    }

    /// Stops a deployment that is not its service's running live one and forgets it: record
    /// and artifact (`stack rm`).
    pub async fn remove(&self, id: &str) -> Result<RemoveAnswer, DaemonError> {
        let live = self.live()?;
        live.refuse_waiting(id)?;
        let running = live
            .supervisor
            .snapshot()
            .resolve(id)
            .filter(|running| running.spec.id == id)
            .map(|running| {
                (
                    running.current && running.wanted > 0,
                    running.spec.service.clone(),
                )
            });
        if let Some((is_live, service)) = running {
            if is_live {
                return Err(DaemonError::LiveDeployment {
                    id: id.into(),
                    service,
                });
            }
            live.supervisor.remove(id).await?;
        }
        if !self
            .inner
            .store
            .update(|state| state.forget_deployment(id))?
        {
            return Err(DaemonError::UnknownDeployment { id: id.into() });
        }
        deployments::remove_artifact(&self.inner.project_dir, id);
        Ok(RemoveAnswer { removed: id.into() })
    }

    /// New processes for the instances of a service's live deployment or of a deployment
    /// (`stack restart`, the dashboard's restart action), one instance at a time, each ready
    /// again before the next one restarts (see [`Instance::request_restart`]); answers once
    /// the last one is, or with the first one that fails.
    pub async fn restart(&self, request: RestartRequest) -> Result<RestartAnswer, DaemonError> {
        let live = self.live()?;
        live.refuse_waiting(&request.target)?;
        let snapshot = live.supervisor.snapshot();
        let running =
            snapshot
                .resolve(&request.target)
                .ok_or_else(|| DaemonError::UnknownTarget {
                    target: request.target.clone(),
                })?;
        let service = &running.spec.service;
        let active: Vec<&Arc<Instance>> = running.active().collect();
        let instances: Vec<&Arc<Instance>> = active
            .iter()
            .copied()
            .filter(|instance| {
                request
                    .instance
                    .is_none_or(|number| instance.number == number)
            })
            .collect();
        if instances.is_empty() {
            return Err(match request.instance {
                Some(number) => DaemonError::UnknownInstance {
                    service: service.clone(),
                    number,
                    running: active
                        .iter()
                        .map(|instance| format!("{service}.{}", instance.number))
                        .collect(),
                },
                None => DaemonError::NothingToRestart {
                    deployment: running.spec.id.clone(),
                },
            });
        }
        let settings = &running.spec.settings;
        let start_period = settings
            .health
            .as_ref()
            .map_or(Duration::ZERO, |health| health.start_period);
        // Its new process's start, then the old one's drain and stop, and some slack.
        let limit = live.ready_timeout
            + start_period
            + supervisor::DEFAULT_GRACE
            + settings.stop_timeout
            + Duration::from_secs(5);
        // A one-shot runs again: done once it exited 0 again, one instance after the other.
        let one_shot = settings.one_shot;
        let mut restarted = Vec::new();
        for instance in instances {
            let reason = match tokio::time::timeout(limit, instance.request_restart()).await {
                Ok(Ok(Ok(()))) if one_shot => {
                    let completed = live
                        .supervisor
                        .wait_runs_done(&running.spec.id, Some(&[instance.number]))
                        .await;
                    match completed {
                        Ok(()) => {
                            restarted.push(instance.number);
                            continue;
                        }
                        Err(error) => error.to_string(),
                    }
                }
                Ok(Ok(Ok(()))) => {
                    restarted.push(instance.number);
                    continue;
                }
                Ok(Ok(Err(reason))) => reason,
                Ok(Err(_)) => "it stopped, or another restart was asked for meanwhile".into(),
                Err(_) => format!("not ready again within {}s", limit.as_secs()),
            };
            return Err(DaemonError::RestartFailed {
                instance: format!("{service}.{}", instance.number),
                reason,
                restarted: restarted
                    .iter()
                    .map(|number| format!("{service}.{number}"))
                    .collect(),
            });
        }
        Ok(RestartAnswer {
            deployment: running.spec.id.clone(),
            service: service.clone(),
            instances: restarted,
        })
    }

    /// What stack adds to the environment of a service's live deployment or of a deployment
    /// (`stack exec`): every variable its next instance gets that this process's own
    /// environment (the one `stack up` was started in) lacks or has otherwise, `PORT` aside.
    pub async fn environment(&self, target: &str) -> Result<EnvAnswer, DaemonError> {
        let live = self.live()?;
        live.refuse_waiting(target)?;
        let snapshot = live.supervisor.snapshot();
        // Every instance gets the same: `reader.1` is `reader`.
        let Ok(found) = api::find_with_instance(target, |target| {
            Ok::<_, std::convert::Infallible>(snapshot.resolve(target))
        });
        let (running, _) = found.ok_or_else(|| DaemonError::UnknownTarget {
            target: target.into(),
        })?;
        let inherited: BTreeMap<String, String> =
            crate::env::caller_environment().into_iter().collect();
        let env = snapshot
            .environment(running)
            .into_iter()
            .filter(|(key, value)| key != "PORT" && inherited.get(key) != Some(value))
            .collect();
        Ok(EnvAnswer {
            deployment: running.spec.id.clone(),
            service: running.spec.service.clone(),
            env,
        })
    }

    /// Swaps a kept deployment back in (`stack rollback`); no build.
    pub async fn rollback(&self, request: RollbackRequest) -> Result<RollbackAnswer, DaemonError> {
        let live = self.live()?;
        Ok(history::rollback(&live, &self.inner.store, &request).await?)
    }

    /// Sets or removes an alias: live (validated against what runs, saved, swapped in, all or
    /// nothing), or recorded for the start while the first build runs.
    pub async fn change_alias(&self, change: AliasChange) -> Result<AliasAnswer, DaemonError> {
        let Some(live) = self.record_at_start(|state| change.apply_to(state))? else {
            return Ok(AliasAnswer {
                applied: Applied::AtStart,
            });
        };
        live.aliases
            .apply(&change, &live.supervisor.snapshot(), &self.inner.store)?;
        // Old counts would be read as the new rules' hits.
        if let Some(log) = &live.requests {
            log.reset_hits(change.host());
        }
        Ok(AliasAnswer {
            applied: Applied::Live,
        })
    }

    /// The stored lines of a service's live deployment or of a deployment (running or kept),
    /// and the live ones when following.
    pub async fn logs(&self, query: &LogsQuery) -> Result<LogFeed, DaemonError> {
        let live = self.live()?;
        if query.follow {
            // As during the first build: a follow waits for the start, then follows.
            let mut changes = live.supervisor.subscribe();
            while live.waiting(&query.target).is_some() {
                if changes.changed().await.is_err() {
                    return Err(DaemonError::Stopping { what: "the follow" });
                }
            }
        }
        let snapshot = live.supervisor.snapshot();
        // A service or deployment (running, else kept), else one instance of it (`reader.1`).
        let find = |target: &str| -> Result<_, DaemonError> {
            if let Some(running) = snapshot.resolve(target) {
                return Ok(Some((running.spec.id.clone(), Some(running))));
            }
            let kept = self.inner.store.load()?.resolve_deployment(target);
            let failed = || logs::unkept_with_log(&logs::logs_dir(&self.inner.project_dir), target);
            Ok(kept.or_else(failed).map(|id| (id, None)))
        };
        let ((deployment_id, running), instance) = api::find_with_instance(&query.target, find)?
            .ok_or_else(|| DaemonError::UnknownTarget {
                target: query.target.clone(),
            })?;
        let log = running.map(|running| running.log.clone());
        let live_lines = log.filter(|_| query.follow).map(|log| log.follow());
        let logs_dir = logs::logs_dir(&self.inner.project_dir);
        let stored = logs::read_stored(
            &logs_dir,
            &deployment_id,
            query.lines,
            query.since_ms,
            instance,
        )
        .unwrap_or_default();
        // `reader.9` that neither runs nor ever wrote a line is a typo, not a quiet instance.
        if let Some(number) = instance.filter(|_| stored.is_empty()) {
            let active: Vec<usize> = running
                .into_iter()
                .flat_map(|running| running.active().map(|instance| instance.number))
                .collect();
            if !active.contains(&number) && !logs::has_lines_of(&logs_dir, &deployment_id, number) {
                let service = running.map_or_else(
                    || api::split_instance(&query.target).0.to_string(),
                    |running| running.spec.service.clone(),
                );
                return Err(DaemonError::UnknownInstance {
                    running: active
                        .iter()
                        .map(|number| format!("{service}.{number}"))
                        .collect(),
                    service,
                    number,
                });
            }
        }
        let from_ms = stored.last().map_or(query.since_ms, |line| line.time_ms);
        Ok(LogFeed {
            stored,
            live: live_lines,
            filter: LiveFilter { from_ms, instance },
        })
    }

    /// The requests the proxy logged after `since` (`stack requests`), nothing secret in them.
    pub async fn requests(&self, since: u64) -> Result<RequestsAnswer, DaemonError> {
        self.read_requests(since, |log| log.since(since))
    }

    /// As [`Daemon::requests`], without the headers and at most the last `at_most`: what the
    /// dashboard's listing shows (it asks for one request's headers with [`Daemon::request`]).
    pub async fn requests_brief(
        &self,
        since: u64,
        at_most: usize,
    ) -> Result<RequestsAnswer, DaemonError> {
        self.read_requests(since, |log| log.since_brief(since, at_most))
    }

    /// One logged request with its (masked) headers in `requests`, if it is still kept;
    /// `enabled` says whether the proxy logs requests at all.
    pub async fn request(&self, seq: u64) -> Result<RequestsAnswer, DaemonError> {
        self.read_requests(seq, |log| log.get(seq).into_iter().collect())
    }

    fn read_requests(
        &self,
        since: u64,
        read: impl FnOnce(&RequestLog) -> Vec<LoggedRequest>,
    ) -> Result<RequestsAnswer, DaemonError> {
        let live = self.live()?;
        let Some(log) = &live.requests else {
            return Ok(RequestsAnswer {
                last_seq: 0,
                enabled: false,
                requests: Vec::new(),
            });
        };
        let last_seq = log.last_seq();
        let logged = read(log);
        let aliases = live.aliases.all();
        let renderer = requests::Renderer {
            secrets: live.session_secrets.as_ref(),
            redactor: &live.redactor,
            aliases: &aliases,
            sessions: &live.session_cache,
        };
        Ok(RequestsAnswer {
            // Read before the entries: one logged in between comes again next time, never lost.
            last_seq: logged
                .last()
                .map_or(last_seq.max(since), |entry| entry.seq.max(since)),
            enabled: true,
            requests: logged.iter().map(|entry| renderer.record(entry)).collect(),
        })
    }

    /// The Redis the services get (`stack redis`, `stack ls`): its URL and, when stack
    /// manages it, its state.
    pub async fn redis(&self) -> Result<RedisAnswer, DaemonError> {
        let live = self.live()?;
        Ok(RedisAnswer {
            url: live.redis_url.clone(),
            managed: live.redis.as_ref().map(|status| status.borrow().clone()),
            // The environment now: after a `.env` save, the new deployments' secret.
            session_secret: live
                .supervisor
                .snapshot()
                .env
                .get(crate::env::SESSION_SECRET)
                .cloned(),
        })
    }
}

#[cfg(test)]
mod tests;
