//! Deployments and their instances: the only part of stack that starts processes.
//!
//! [`Supervisor`] is a cloneable handle in front of one task, driven by a small [`Order`]
//! enum whose orders answer through oneshots. The task owns every deployment that runs and
//! one task per instance (see [`instance`]); after every change it publishes a [`Snapshot`]
//! on a watch channel, which is what the routing table, `stack ls` and readiness waits read.
//! It never routes requests, never parses rules and never writes `.stack/state.json`.
//!
//! - [`build`]: find services, build them (one cargo run), copy artifacts into deployments.
//! - [`process`]: spawn one process group, stop it, find the ports it listens on, clean leftovers.
//! - [`instance`]: one instance's life: port, readiness, restarts with backoff, draining.
//! - [`logs`]: instance output to files, a ring of recent lines, followers and the terminal.
//! - [`swap`]: stage a deployment beside the live one, promote it when ready, retire the old.
//!
//! It imports none of `control`, `watch` or `output`: what it does is told through snapshots,
//! answers and log lines, and printed (when at all) by the daemon.

pub mod build;
pub mod health;
pub mod instance;
pub mod logs;
pub mod process;
pub mod swap;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::model::{Condition, Health, Kind, Restart};
pub use instance::Instance;
use instance::InstanceTask;
use logs::{DeploymentLog, Redactor, Rotation};

/// The default time a process gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How many instances start at the same time; more wait for a turn.
const CONCURRENT_STARTS: usize = 4;
/// In an ordered stop, how long past its stop timeout a service may take (draining is skipped
/// at shutdown; this covers the SIGKILL and the exit) before the next one is stopped anyway.
const ORDERED_STOP_SLACK: Duration = Duration::from_secs(2);
/// How much longer than its instances' own readiness timeout a wait for a deployment goes on,
/// so the instance's own error (what its check saw, its last lines) is what gets said.
const WAIT_SLACK: Duration = Duration::from_secs(2);
/// The default time an instance gets to accept connections.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    #[error("no running service or deployment named `{target}`")]
    UnknownTarget {
        target: String,
        running: Vec<String>,
    },
    #[error(
        "`{deployment}` listens on port {port} whatever PORT says, so it can run one instance only"
    )]
    FixedPort { deployment: String, port: u16 },
    #[error("`{deployment}` crashed: {reason}")]
    Crashed { deployment: String, reason: String },
    #[error("`{deployment}` is not ready after {seconds}s ({limit}): {reason}")]
    NotReady {
        deployment: String,
        /// The time it had: the ready timeout, with its `start_period` when it has one.
        seconds: u64,
        /// Which timeout that is: `--ready-timeout`, `--ready-timeout 5s + start_period 10s`.
        limit: String,
        reason: String,
    },
    #[error("the supervisor has stopped")]
    Stopped,
}

/// What every instance shares: where things go, the environment, the timeouts.
#[derive(Debug)]
pub struct Config {
    /// `.stack/pids`: one record per running process group.
    pub pids_dir: PathBuf,
    /// `.stack/logs`: one file per deployment.
    pub logs_dir: PathBuf,
    /// The merged environment every instance gets (`PORT` is added per instance).
    pub env: BTreeMap<String, String>,
    pub redactor: Redactor,
    /// When each deployment's log file is rotated.
    pub log_rotation: Rotation,
    pub grace: Duration,
    pub ready_timeout: Duration,
    /// Print instance output on stdout with a `writer.0 |` prefix.
    pub echo_logs: bool,
    /// Cancelled when everything stops (Ctrl-C, `stack down`): instances skip draining then.
    pub shutdown: CancellationToken,
}

impl Config {
    fn shutdown_now(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// A deployment as the supervisor runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    pub id: String,
    pub service: String,
    /// `.stack/deployments/<id>`: the working directory of its instances.
    pub dir: PathBuf,
    /// Absolute path of the program, or a name found on PATH (`npm`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub created_ms: u64,
    /// How its instances run (health, environment, stop, restarts).
    pub settings: RunSettings,
}

/// How a service's instances run, from detection and `stack.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// A worker gets no `PORT` and no route.
    pub kind: Kind,
    /// Readiness and liveness; `None`: the port accepting (a worker: the process running).
    pub health: Option<Health>,
    /// Added to the stack's environment for this service only.
    pub env: BTreeMap<String, String>,
    pub stop_signal: nix::sys::signal::Signal,
    /// Between the stop signal and SIGKILL.
    pub stop_timeout: Duration,
    pub restart: Restart,
    /// Others wait for it to complete (`depends_on ... = "completed"`): a scale or restart of
    /// it is done once the new runs exited 0. Set by the daemon, which knows who waits on whom.
    pub one_shot: bool,
}

impl RunSettings {
    /// The stack's environment, then the service's own (`env`, `env_file`) over it.
    pub fn environment(&self, stack: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = stack.clone();
        env.extend(self.env.clone());
        env
    }
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            kind: Kind::Web,
            health: None,
            env: BTreeMap::new(),
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: DEFAULT_GRACE,
            restart: Restart::Always,
            one_shot: false,
        }
    }
}

impl RunSettings {
    pub fn is_worker(&self) -> bool {
        self.kind == Kind::Worker
    }
}

/// Orders to the supervisor task, each answered through its oneshot.
#[derive(Debug)]
pub enum Order {
    /// Start a deployment with this many instances; it becomes its service's current one.
    Deploy {
        spec: DeploymentSpec,
        instances: usize,
        reply: oneshot::Sender<()>,
    },
    /// Run N instances of a service's current deployment, or of a deployment. Answers with the
    /// deployment id.
    Scale {
        target: String,
        instances: usize,
        reply: oneshot::Sender<Result<String, SupervisorError>>,
    },
    /// Stop a deployment's instances and forget it.
    Remove {
        deployment_id: String,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    /// Start a deployment that does not take its service's traffic yet (see [`swap`]).
    Stage {
        spec: DeploymentSpec,
        instances: usize,
        reply: oneshot::Sender<()>,
    },
    /// Make a deployment its service's current one and retire the others; answers with the
    /// retired ids.
    Promote {
        deployment_id: String,
        reply: oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    },
    /// The environment for instances started from now on.
    SetEnv {
        env: BTreeMap<String, String>,
        reply: oneshot::Sender<()>,
    },
    /// Stop everything; answers once every process group is gone.
    /// The services of `order` stop one after another (each one's instances in parallel),
    /// then every other deployment at once.
    Stop {
        order: Vec<String>,
        reply: oneshot::Sender<()>,
    },
}

/// Sent by instance tasks; any change makes the supervisor publish a new snapshot.
#[derive(Debug)]
pub(crate) enum Event {
    InstanceChanged,
}

/// The state a deployment is in, as `stack ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentState {
    Building,
    /// A first deployment that waits for what it depends on (`depends_on`) before it starts.
    Waiting,
    Starting,
    Ready,
    Crashed,
    /// Every instance exited 0 and stays stopped (a one-shot).
    Completed,
    Stopped,
}

impl std::fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            DeploymentState::Building => "BUILDING",
            DeploymentState::Waiting => "WAITING",
            DeploymentState::Starting => "STARTING",
            DeploymentState::Ready => "READY",
            DeploymentState::Crashed => "CRASHED",
            DeploymentState::Completed => "COMPLETED",
            DeploymentState::Stopped => "STOPPED",
        };
        f.write_str(text)
    }
}

/// One running deployment in a snapshot.
#[derive(Debug, Clone)]
pub struct LiveDeployment {
    pub spec: Arc<DeploymentSpec>,
    pub wanted: usize,
    /// The service's current deployment (what `<service>.localhost` reaches).
    pub current: bool,
    /// Every instance, draining ones included (they take no traffic).
    pub instances: Vec<Arc<Instance>>,
    pub log: DeploymentLog,
    /// The port its program listens on when it ignores `PORT` (one instance only, and a new
    /// deployment of it can only start once this one has stopped).
    pub fixed_port: Option<u16>,
}

impl LiveDeployment {
    /// Instances that are not draining: what `stack ls` counts and `stack restart` restarts.
    pub fn active(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.instances
            .iter()
            .filter(|instance| !instance.draining.load(Ordering::Acquire))
    }

    /// Instances taking traffic and answering it (an unresponsive one is out of rotation).
    pub fn n_ready(&self) -> usize {
        self.instances
            .iter()
            .filter(|instance| {
                instance.takes_traffic() && !instance.unresponsive.load(Ordering::Acquire)
            })
            .count()
    }

    pub fn state(&self) -> DeploymentState {
        let active: Vec<&Arc<Instance>> = self.active().collect();
        if self.wanted == 0 || active.is_empty() {
            DeploymentState::Stopped
        } else if self.n_ready() > 0 {
            DeploymentState::Ready
        } else if active
            .iter()
            .all(|instance| instance.completed.load(Ordering::Acquire))
        {
            DeploymentState::Completed
        } else if active
            .iter()
            .all(|instance| instance.crashed.load(Ordering::Acquire))
        {
            DeploymentState::Crashed
        } else {
            DeploymentState::Starting
        }
    }

    /// The last start failure of any instance, for error messages.
    pub fn last_error(&self) -> Option<String> {
        self.instances.iter().find_map(|instance| {
            instance
                .last_error
                .lock()
                .expect("never poisoned: no panics while held")
                .clone()
        })
    }
}

/// Everything that runs, at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub deployments: Vec<LiveDeployment>,
    /// The stack's environment a new instance gets now (after a `.env` save, the new one).
    pub env: Arc<BTreeMap<String, String>>,
}

impl Snapshot {
    /// The deployment `deployment_id`, or the error naming what runs instead.
    fn running(&self, deployment_id: &str) -> Result<&LiveDeployment, SupervisorError> {
        self.deployments
            .iter()
            .find(|deployment| deployment.spec.id == deployment_id)
            .ok_or_else(|| SupervisorError::UnknownTarget {
                target: deployment_id.to_string(),
                running: self.names(),
            })
    }

    /// What a new instance of `deployment` gets, its `PORT` aside.
    pub fn environment(&self, deployment: &LiveDeployment) -> BTreeMap<String, String> {
        deployment.spec.settings.environment(&self.env)
    }

    /// A deployment id, or a service name (its current deployment).
    pub fn resolve(&self, target: &str) -> Option<&LiveDeployment> {
        let target = target.strip_suffix(".localhost").unwrap_or(target);
        self.deployments
            .iter()
            .find(|deployment| deployment.spec.id == target)
            .or_else(|| {
                self.deployments
                    .iter()
                    .find(|deployment| deployment.current && deployment.spec.service == target)
            })
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .deployments
            .iter()
            .flat_map(|deployment| [deployment.spec.service.clone(), deployment.spec.id.clone()])
            .collect();
        names.dedup();
        names
    }
}

/// The handle: clone it freely; every method talks to the one supervisor task.
#[derive(Debug, Clone)]
pub struct Supervisor {
    orders: mpsc::Sender<Order>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Supervisor {
    /// Starts the supervisor task. It runs until [`Supervisor::stop`] or until every handle is
    /// dropped (which stops everything too).
    pub fn start(config: Config) -> (Supervisor, JoinHandle<()>) {
        let (order_tx, order_rx) = mpsc::channel(32);
        let env = Arc::new(config.env.clone());
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot {
            deployments: Vec::new(),
            env: env.clone(),
        }));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let task = SupervisorTask {
            config: Arc::new(config),
            deployments: Vec::new(),
            removed: Vec::new(),
            lagging: Vec::new(),
            snapshot: snapshot_tx,
            env,
            events: event_tx,
            starts: Arc::new(Semaphore::new(CONCURRENT_STARTS)),
        };
        let handle = tokio::spawn(task.run(order_rx, event_rx));
        (
            Supervisor {
                orders: order_tx,
                snapshot: snapshot_rx,
            },
            handle,
        )
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    pub async fn deploy(
        &self,
        spec: DeploymentSpec,
        instances: usize,
    ) -> Result<(), SupervisorError> {
        self.ask(|reply| Order::Deploy {
            spec,
            instances,
            reply,
        })
        .await
    }

    pub async fn scale(&self, target: &str, instances: usize) -> Result<String, SupervisorError> {
        self.ask(|reply| Order::Scale {
            target: target.to_string(),
            instances,
            reply,
        })
        .await?
    }

    pub async fn remove(&self, deployment_id: &str) -> Result<(), SupervisorError> {
        self.ask(|reply| Order::Remove {
            deployment_id: deployment_id.to_string(),
            reply,
        })
        .await?
    }

    /// Stops every instance (in parallel, each within the grace period) and waits for it.
    pub async fn stop(&self) {
        self.stop_in_order(Vec::new()).await;
    }

    /// Stops the services of `order` one after another (dependents before what they depend
    /// on), then the rest in parallel, and waits for all of it.
    pub async fn stop_in_order(&self, order: Vec<String>) {
        let (reply, answer) = oneshot::channel();
        if self.send(Order::Stop { order, reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    /// Sends the order `order` builds around a reply channel, and waits for the reply.
    async fn ask<T>(
        &self,
        order: impl FnOnce(oneshot::Sender<T>) -> Order,
    ) -> Result<T, SupervisorError> {
        let (reply, answer) = oneshot::channel();
        self.send(order(reply)).await?;
        answer.await.map_err(|_| SupervisorError::Stopped)
    }

    async fn send(&self, order: Order) -> Result<(), SupervisorError> {
        self.orders
            .send(order)
            .await
            .map_err(|_| SupervisorError::Stopped)
    }

    /// Waits until every wanted instance of `deployment_id` takes traffic (or, a one-shot,
    /// did its work: exited 0). Fails when the deployment crashes or its instances' readiness
    /// timeout (`ready_timeout`, plus the health check's `start_period`) passes first.
    pub async fn wait_ready(
        &self,
        deployment_id: &str,
        ready_timeout: Duration,
    ) -> Result<(), SupervisorError> {
        self.wait_until(deployment_id, ready_timeout, |deployment| {
            let active: Vec<_> = deployment.active().collect();
            active.len() == deployment.wanted
                && active.iter().all(|instance| {
                    (instance.takes_traffic() && !instance.unresponsive.load(Ordering::Acquire))
                        || instance.completed.load(Ordering::Acquire)
                })
        })
        .await
    }

    /// Waits until `deployment_id` meets what a dependent waits for: a process running
    /// (`started`), ready (`healthy`), both within `ready_timeout`, or every instance exited 0
    /// (`completed`, [`Supervisor::wait_runs_done`]): that one has no time limit, a migration
    /// takes what it takes; it ends when the one-shot exits 0, any of its instances crashes (a
    /// non-zero exit under `restart = "never"`), or the supervisor stops.
    pub async fn wait_for(
        &self,
        deployment_id: &str,
        condition: Condition,
        ready_timeout: Duration,
    ) -> Result<(), SupervisorError> {
        match condition {
            Condition::Healthy => self.wait_ready(deployment_id, ready_timeout).await,
            Condition::Started => {
                self.wait_until(deployment_id, ready_timeout, |deployment| {
                    deployment.instances.iter().any(|instance| {
                        instance.pid.load(Ordering::Acquire) != 0
                            || instance.completed.load(Ordering::Acquire)
                    })
                })
                .await
            }
            Condition::Completed => self.wait_runs_done(deployment_id, None).await,
        }
    }

    /// Waits until the runs of a one-shot's instances (those numbered `numbers`, else all it
    /// wants) have ended: `Ok` once each exited 0, the error of the first that exited non-zero
    /// and is not restarted (CRASHED) otherwise. No time limit: a migration takes what it takes.
    pub async fn wait_runs_done(
        &self,
        deployment_id: &str,
        numbers: Option<&[usize]>,
    ) -> Result<(), SupervisorError> {
        let mut receiver = self.subscribe();
        loop {
            {
                let snapshot = receiver.borrow_and_update().clone();
                let deployment = snapshot.running(deployment_id)?;
                let runs: Vec<&Arc<Instance>> = deployment
                    .active()
                    .filter(|instance| {
                        numbers.is_none_or(|numbers| numbers.contains(&instance.number))
                    })
                    .collect();
                if let Some(crashed) = runs
                    .iter()
                    .find(|instance| instance.crashed.load(Ordering::Acquire))
                {
                    let reason = crashed
                        .last_error
                        .lock()
                        .expect("never poisoned: no panics while held")
                        .clone();
                    return Err(SupervisorError::Crashed {
                        deployment: deployment_id.to_string(),
                        reason: reason.unwrap_or_else(|| "it did not exit 0".into()),
                    });
                }
                let all = numbers.map_or(deployment.wanted, <[usize]>::len);
                if runs.len() >= all
                    && runs
                        .iter()
                        .all(|instance| instance.completed.load(Ordering::Acquire))
                {
                    return Ok(());
                }
            }
            if receiver.changed().await.is_err() {
                return Err(SupervisorError::Stopped);
            }
        }
    }

    /// Waits until `done` holds for the deployment; fails when it crashes or its instances'
    /// readiness timeout passes.
    async fn wait_until(
        &self,
        deployment_id: &str,
        ready_timeout: Duration,
        done: impl Fn(&LiveDeployment) -> bool,
    ) -> Result<(), SupervisorError> {
        let mut receiver = self.subscribe();
        let started = tokio::time::Instant::now();
        let mut limit: Option<(Duration, String)> = None;
        loop {
            {
                let snapshot = receiver.borrow_and_update().clone();
                let deployment = snapshot.running(deployment_id)?;
                if done(deployment) {
                    return Ok(());
                }
                if deployment.state() == DeploymentState::Crashed {
                    return Err(SupervisorError::Crashed {
                        deployment: deployment_id.to_string(),
                        reason: deployment.last_error().unwrap_or_default(),
                    });
                }
                let (applies, which) = limit.get_or_insert_with(|| {
                    readiness_limit(ready_timeout, &deployment.spec.settings)
                });
                if started.elapsed() >= *applies + WAIT_SLACK {
                    return Err(SupervisorError::NotReady {
                        deployment: deployment_id.to_string(),
                        seconds: applies.as_secs(),
                        limit: which.clone(),
                        reason: deployment
                            .last_error()
                            .unwrap_or_else(|| "still starting".into()),
                    });
                }
            }
            let (applies, _) = limit.as_ref().expect("set on the first pass");
            let deadline = started + *applies + WAIT_SLACK;
            let changed = tokio::time::timeout_at(deadline, receiver.changed())
                .await
                .unwrap_or(Ok(()));
            if changed.is_err() {
                return Err(SupervisorError::Stopped);
            }
        }
    }
}

/// The time an instance of `settings` has to be ready, and which settings make it: the ready
/// timeout, plus its health check's `start_period`.
pub fn readiness_limit(ready_timeout: Duration, settings: &RunSettings) -> (Duration, String) {
    let start_period = settings
        .health
        .as_ref()
        .map_or(Duration::ZERO, |health| health.start_period);
    if start_period.is_zero() {
        (ready_timeout, "`--ready-timeout`".to_string())
    } else {
        (
            ready_timeout + start_period,
            format!(
                "`--ready-timeout` {}s + its `start_period` {}s",
                ready_timeout.as_secs(),
                start_period.as_secs()
            ),
        )
    }
}

struct Slot {
    instance: Arc<Instance>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningDeployment {
    spec: Arc<DeploymentSpec>,
    log: DeploymentLog,
    wanted: usize,
    current: bool,
    /// Instances that run or start, by number.
    slots: Vec<Slot>,
    /// Instances being drained and stopped; kept in snapshots until their task ends.
    stopping: Vec<Slot>,
    fixed_port: Arc<Mutex<Option<u16>>>,
}

struct SupervisorTask {
    config: Arc<Config>,
    deployments: Vec<RunningDeployment>,
    /// Instances of removed deployments, still draining; awaited by a full stop.
    removed: Vec<Slot>,
    /// Instance tasks an ordered stop stopped waiting for (their stop timeout passed); awaited
    /// by `stop_all`.
    lagging: Vec<JoinHandle<()>>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// `config.env`, shared by every snapshot until a `.env` save replaces it.
    env: Arc<BTreeMap<String, String>>,
    events: mpsc::UnboundedSender<Event>,
    starts: Arc<Semaphore>,
}

impl SupervisorTask {
    async fn run(
        mut self,
        mut orders: mpsc::Receiver<Order>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            tokio::select! {
                order = orders.recv() => match order {
                    Some(Order::Stop { order, reply }) => {
                        for service in order {
                            self.stop_service(&service).await;
                        }
                        self.stop_all().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(order) => self.handle(order),
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                Some(Event::InstanceChanged) = events.recv() => {}
            }
            // Coalesce a burst of events into one snapshot.
            while events.try_recv().is_ok() {}
            self.publish();
        }
    }

    /// Applies an order and publishes the new snapshot BEFORE answering, so whoever waits on
    /// the answer sees the change.
    fn handle(&mut self, order: Order) {
        match order {
            Order::Deploy {
                spec,
                instances,
                reply,
            } => {
                self.deploy(spec, instances);
                self.publish();
                let _ = reply.send(());
            }
            Order::Scale {
                target,
                instances,
                reply,
            } => {
                let result = self.scale(&target, instances);
                self.publish();
                let _ = reply.send(result);
            }
            Order::Remove {
                deployment_id,
                reply,
            } => {
                let result = self.remove(&deployment_id);
                self.publish();
                let _ = reply.send(result);
            }
            Order::Stage {
                spec,
                instances,
                reply,
            } => {
                self.stage(spec, instances);
                self.publish();
                let _ = reply.send(());
            }
            Order::Promote {
                deployment_id,
                reply,
            } => {
                let result = self.promote(&deployment_id);
                self.publish();
                let _ = reply.send(result);
            }
            Order::SetEnv { env, reply } => {
                self.set_env(env);
                self.env = Arc::new(self.config.env.clone());
                self.publish();
                let _ = reply.send(());
            }
            Order::Stop { .. } => unreachable!("Stop is handled by the loop"),
        }
    }

    fn deploy(&mut self, spec: DeploymentSpec, instances: usize) {
        for running in &mut self.deployments {
            if running.spec.service == spec.service {
                running.current = false;
            }
        }
        let style = self
            .config
            .echo_logs
            .then(|| logs::prefix_style(&spec.service));
        // The service's own secrets (`env`, `env_file` in stack.toml) are masked in its log too.
        let redactor = self
            .config
            .redactor
            .with(crate::env::secret_values(&spec.settings.env));
        let log = match DeploymentLog::open(
            &self.config.logs_dir,
            &spec.id,
            style.clone(),
            redactor.clone(),
            self.config.log_rotation,
        ) {
            Ok(log) => log,
            Err(error) => {
                tracing::warn!(%error, deployment = spec.id, "cannot open the log file");
                DeploymentLog::open(
                    &std::env::temp_dir(),
                    &spec.id,
                    style,
                    redactor,
                    self.config.log_rotation,
                )
                .expect("the temp dir is writable")
            }
        };
        let mut running = RunningDeployment {
            spec: Arc::new(spec),
            log,
            wanted: 0,
            current: true,
            slots: Vec::new(),
            stopping: Vec::new(),
            fixed_port: Arc::new(Mutex::new(None)),
        };
        self.set_instances(&mut running, instances);
        self.deployments.push(running);
    }

    fn scale(&mut self, target: &str, instances: usize) -> Result<String, SupervisorError> {
        let target = target.strip_suffix(".localhost").unwrap_or(target);
        let index = self
            .deployments
            .iter()
            .position(|running| running.spec.id == target)
            .or_else(|| {
                self.deployments
                    .iter()
                    .position(|running| running.current && running.spec.service == target)
            })
            .ok_or_else(|| SupervisorError::UnknownTarget {
                target: target.to_string(),
                running: self.snapshot.borrow().names(),
            })?;
        let mut running = self.deployments.swap_remove(index);
        let fixed = *running
            .fixed_port
            .lock()
            .expect("never poisoned: no panics while held");
        let result = match fixed {
            Some(port) if instances > 1 => Err(SupervisorError::FixedPort {
                deployment: running.spec.id.clone(),
                port,
            }),
            _ => {
                self.set_instances(&mut running, instances);
                Ok(running.spec.id.clone())
            }
        };
        self.deployments.push(running);
        self.deployments.sort_by(|a, b| {
            a.spec
                .created_ms
                .cmp(&b.spec.created_ms)
                .then(a.spec.id.cmp(&b.spec.id))
        });
        result
    }

    fn remove(&mut self, deployment_id: &str) -> Result<(), SupervisorError> {
        let index = self
            .deployments
            .iter()
            .position(|running| running.spec.id == deployment_id)
            .ok_or_else(|| SupervisorError::UnknownTarget {
                target: deployment_id.to_string(),
                running: self.snapshot.borrow().names(),
            })?;
        let mut running = self.deployments.remove(index);
        self.set_instances(&mut running, 0);
        // Its instances drain and stop in their own tasks; nothing routes to it any more.
        self.removed.retain(|slot| !slot.task.is_finished());
        self.removed.append(&mut running.stopping);
        Ok(())
    }

    /// Starts or stops instances until `n_instances` run. New ones take the lowest free numbers;
    /// the highest numbers stop first (they drain before their process group is stopped).
    fn set_instances(&self, running: &mut RunningDeployment, n_instances: usize) {
        running.wanted = n_instances;
        running.stopping.retain(|slot| !slot.task.is_finished());
        while running.slots.len() > n_instances {
            let slot = running
                .slots
                .pop()
                .expect("more slots than wanted, so not empty");
            slot.stop.cancel();
            running.stopping.push(slot);
        }
        // The lowest free numbers, found in one pass over the numbers in use.
        let used: std::collections::BTreeSet<usize> = running
            .slots
            .iter()
            .chain(&running.stopping)
            .map(|slot| slot.instance.number)
            .collect();
        let mut free = (0..).filter(|number| !used.contains(number));
        while running.slots.len() < n_instances {
            let number = free.next().expect("some number is free");
            let instance = Arc::new(Instance::new(number));
            // Not a child of `config.shutdown`: a shutdown stops services in reverse
            // `depends_on` order, so each instance is stopped by its own token, when its turn
            // comes (`stop_service`, `stop_all`), never all at once by the shutdown.
            let stop = CancellationToken::new();
            let task = InstanceTask {
                instance: instance.clone(),
                deployment: running.spec.clone(),
                config: self.config.clone(),
                log: running.log.clone(),
                fixed_port: running.fixed_port.clone(),
                events: self.events.clone(),
                stop: stop.clone(),
                starts: self.starts.clone(),
            };
            let task = tokio::spawn(task.run());
            running.slots.push(Slot {
                instance,
                stop,
                task,
            });
        }
        running.slots.sort_by_key(|slot| slot.instance.number);
    }

    /// Stops every deployment of `service`, waits for them (at most their stop timeout and
    /// [`ORDERED_STOP_SLACK`]: a dependency is not held back for ever by a dependent that will
    /// not die; it is killed with the rest by `stop_all`), and says so in their logs.
    async fn stop_service(&mut self, service: &str) {
        let mut stopped = Vec::new();
        let mut tasks = Vec::new();
        let mut bound = Duration::ZERO;
        for running in &mut self.deployments {
            if running.spec.service != service {
                continue;
            }
            for slot in running.slots.drain(..).chain(running.stopping.drain(..)) {
                slot.stop.cancel();
                tasks.push(slot.task);
            }
            stopped.push(running.log.clone());
            bound = bound.max(running.spec.settings.stop_timeout);
        }
        let deadline = tokio::time::Instant::now() + bound + ORDERED_STOP_SLACK;
        for task in &mut tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!(service, "did not stop in time; stopping the rest");
                break;
            }
        }
        // A task that did not end in time is awaited by `stop_all`, which kills what is left.
        self.lagging
            .extend(tasks.into_iter().filter(|task| !task.is_finished()));
        for log in stopped {
            log.push(
                &format!("{service}.0"),
                &format!("[stack] {service} stopped"),
            );
        }
        self.deployments
            .retain(|running| running.spec.service != service);
        self.publish();
    }

    async fn stop_all(&mut self) {
        let mut tasks: Vec<JoinHandle<()>> = self.removed.drain(..).map(|slot| slot.task).collect();
        tasks.append(&mut self.lagging);
        for running in &mut self.deployments {
            for slot in running.slots.drain(..).chain(running.stopping.drain(..)) {
                slot.stop.cancel();
                tasks.push(slot.task);
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        self.deployments.clear();
        self.publish();
    }

    fn publish(&mut self) {
        for running in &mut self.deployments {
            running.stopping.retain(|slot| !slot.task.is_finished());
        }
        let deployments = self
            .deployments
            .iter()
            .map(|running| LiveDeployment {
                spec: running.spec.clone(),
                wanted: running.wanted,
                current: running.current,
                instances: running
                    .slots
                    .iter()
                    .chain(&running.stopping)
                    .map(|slot| slot.instance.clone())
                    .collect(),
                log: running.log.clone(),
                fixed_port: *running
                    .fixed_port
                    .lock()
                    .expect("never poisoned: no panics while held"),
            })
            .collect();
        self.snapshot.send_replace(Arc::new(Snapshot {
            deployments,
            env: self.env.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node one-liner as a deployment: `script` sees `PORT` in `process.env`.
    fn node_deployment(dir: &std::path::Path, id: &str, script: &str) -> DeploymentSpec {
        std::fs::write(dir.join(format!("{id}.js")), script).unwrap();
        DeploymentSpec {
            id: id.into(),
            service: id.split('-').next().unwrap().into(),
            dir: dir.to_path_buf(),
            program: "node".into(),
            args: vec![format!("{id}.js")],
            created_ms: 0,
            settings: RunSettings::default(),
        }
    }

    fn config(dir: &std::path::Path) -> Config {
        Config {
            pids_dir: dir.join("pids"),
            logs_dir: dir.join("logs"),
            env: [("PATH".to_string(), std::env::var("PATH").unwrap())].into(),
            redactor: Redactor::default(),
            log_rotation: Rotation::default(),
            grace: Duration::from_secs(2),
            ready_timeout: Duration::from_secs(10),
            echo_logs: false,
            shutdown: CancellationToken::new(),
        }
    }

    const LISTEN_ON_PORT: &str =
        "require('http').createServer((q, s) => s.end('ok')).listen(+process.env.PORT, '127.0.0.1')";

    #[tokio::test]
    async fn deploys_scales_and_stops_real_processes() {
        let dir = tempfile::tempdir().unwrap();
        let (supervisor, task) = Supervisor::start(config(dir.path()));
        let spec = node_deployment(dir.path(), "web-abcdefghij", LISTEN_ON_PORT);
        supervisor.deploy(spec, 1).await.unwrap();
        supervisor
            .wait_ready("web-abcdefghij", Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(supervisor.scale("web", 3).await.unwrap(), "web-abcdefghij");
        supervisor
            .wait_ready("web-abcdefghij", Duration::from_secs(10))
            .await
            .unwrap();
        let snapshot = supervisor.snapshot();
        let deployment = snapshot.resolve("web").unwrap();
        let mut ports: Vec<u16> = deployment
            .instances
            .iter()
            .map(|instance| instance.port.load(Ordering::Acquire))
            .collect();
        let pids: Vec<u32> = deployment
            .instances
            .iter()
            .map(|instance| instance.pid.load(Ordering::Acquire))
            .collect();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        supervisor.scale("web-abcdefghij", 1).await.unwrap();
        supervisor
            .wait_ready("web-abcdefghij", Duration::from_secs(10))
            .await
            .unwrap();
        // Scaling down drains, then stops the highest numbers.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !process::group_members(pids[2]).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "instance 2 never stopped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            supervisor.scale("nothing", 1).await,
            Err(SupervisorError::UnknownTarget { .. })
        ));
        supervisor.stop().await;
        task.await.unwrap();
        for pid in pids {
            assert!(process::group_members(pid).is_empty(), "{pid} survived");
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("pids")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn with_a_health_path_ready_waits_for_a_good_answer() {
        let dir = tempfile::tempdir().unwrap();
        let script = "const fs = require('fs'); require('http').createServer((q, s) => { s.statusCode = fs.existsSync('healthy') ? 200 : 503; s.end(); }).listen(+process.env.PORT, '127.0.0.1')";
        let mut spec = node_deployment(dir.path(), "web-healthzzzz", script);
        spec.settings.health = Some(Health::new(crate::config::model::Check::Http(
            "/healthz".into(),
        )));
        let (supervisor, task) = Supervisor::start(config(dir.path()));
        supervisor.deploy(spec, 1).await.unwrap();
        // It listens at once but answers 503: not ready.
        assert!(supervisor
            .wait_ready("web-healthzzzz", Duration::from_millis(800))
            .await
            .is_err());
        std::fs::write(dir.path().join("healthy"), "").unwrap();
        supervisor
            .wait_ready("web-healthzzzz", Duration::from_secs(10))
            .await
            .unwrap();
        supervisor.stop().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn finds_the_port_of_a_program_that_ignores_port_and_refuses_to_scale_it() {
        let dir = tempfile::tempdir().unwrap();
        let fixed_port = instance::free_port().unwrap();
        let script = format!(
            "console.log('starting'); require('http').createServer((q, s) => s.end('ok')).listen({fixed_port}, '127.0.0.1')"
        );
        let (supervisor, task) = Supervisor::start(config(dir.path()));
        let spec = node_deployment(dir.path(), "old-abcdefghij", &script);
        supervisor.deploy(spec, 1).await.unwrap();
        supervisor
            .wait_ready("old-abcdefghij", Duration::from_secs(10))
            .await
            .unwrap();
        let snapshot = supervisor.snapshot();
        let deployment = snapshot.resolve("old").unwrap();
        assert_eq!(
            deployment.instances[0].port.load(Ordering::Acquire),
            fixed_port
        );
        let note = deployment.log.recent(10, None);
        assert!(
            note.iter()
                .any(|line| line.text.contains(&format!("listens on {fixed_port}"))),
            "{note:?}"
        );
        assert_eq!(
            supervisor.scale("old", 2).await,
            Err(SupervisorError::FixedPort {
                deployment: "old-abcdefghij".into(),
                port: fixed_port
            })
        );
        supervisor.stop().await;
        task.await.unwrap();
    }
}
