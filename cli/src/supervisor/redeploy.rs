//! Every save becomes a deployment: [`Redeployer`] takes the change sets of
//! [`watch`](crate::watch), builds the changed services (one cargo run), turns each good build
//! into a new deployment (new id, artifact kept under `.stack/deployments/<id>/`) and hot swaps
//! it in (see [`swap`](super::swap)); [`rollback`] swaps a kept artifact back in without a
//! build. Both record the service's current deployment in `.stack/state.json` and keep the
//! newest `--keep` artifacts per service ([`retain_recent`]).
//!
//! A failed build, a bad `.env` or a new deployment that does not start is printed and
//! changes nothing: the live deployment keeps serving. A change that arrives during a build
//! queues exactly one follow-up build, which includes everything that changed meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::build::{self, BuildError, Service};
use super::logs::now_ms;
use super::{DeploymentSpec, Supervisor, SupervisorError};
use crate::control::deployment_url;
use crate::env;
use crate::output::{self, CliError};
use crate::state::deployments::{DeploymentRecord, ServiceHistory, DEPLOYMENTS_DIR};
use crate::state::{self, State, StateError};
use crate::watch::{self, ChangeSet, WatchConfig, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum RedeployError {
    #[error("`{service}` has no recorded deployments")]
    NoHistory { service: String, known: Vec<String> },
    #[error("`{deployment}` is not a kept deployment of `{service}`")]
    UnknownDeployment {
        service: String,
        deployment: String,
        kept: Vec<String>,
    },
    #[error("`{service}` has no deployment before `{current}` to roll back to")]
    NothingBefore { service: String, current: String },
    #[error("`{deployment}` is already live")]
    AlreadyLive { deployment: String },
    #[error("the artifact of `{deployment}` is gone from `.stack/deployments/`")]
    ArtifactGone { deployment: String },
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl RedeployError {
    /// What the person can do about it.
    pub fn hint(&self) -> String {
        match self {
            RedeployError::NoHistory { known, .. } if !known.is_empty() => {
                format!("Services with deployments: {}.", known.join(", "))
            }
            RedeployError::NoHistory { .. } => "Run `stack up` first.".into(),
            RedeployError::UnknownDeployment { service, kept, .. } => format!(
                "Kept deployments of `{service}`: {}. See `stack ls`.",
                kept.join(", ")
            ),
            RedeployError::NothingBefore { .. } | RedeployError::AlreadyLive { .. } => {
                "See `stack ls` for the kept deployments; name one: `stack rollback <service> <deployment>`.".into()
            }
            RedeployError::ArtifactGone { .. } => {
                "Pick another deployment (`stack ls`), or raise `stack up --keep`.".into()
            }
            RedeployError::Supervisor(_) => {
                "The live deployment keeps serving; see `stack logs <deployment>`.".into()
            }
            RedeployError::State(_) | RedeployError::Build(_) => {
                "Nothing was changed; check `.stack/` and try again.".into()
            }
        }
    }
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub service: String,
    #[serde(default)]
    pub deployment: Option<String>,
}

/// The answer to a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackAnswer {
    /// Now live.
    pub deployment: String,
    /// Live before, now stopped.
    pub previous: Option<String>,
    pub url: String,
    pub elapsed_ms: u64,
}

/// `<project>/.stack/deployments`.
pub fn deployments_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(state::STATE_DIR).join(DEPLOYMENTS_DIR)
}

/// How to start a recorded deployment.
pub fn spec_for(deployments_dir: &Path, record: &DeploymentRecord) -> DeploymentSpec {
    let dir = deployments_dir.join(&record.id);
    let program = if record.kind == "cargo" {
        dir.join(&record.program)
    } else {
        PathBuf::from(&record.program)
    };
    DeploymentSpec {
        id: record.id.clone(),
        service: record.service.clone(),
        dir,
        program,
        args: record.args.clone(),
        created_ms: record.created_ms,
        health: record.health.clone(),
    }
}

/// Keeps the newest `keep` deployments of a service and always the current one, deleting the
/// artifacts of the others.
pub fn retain_recent(deployments_dir: &Path, history: &mut ServiceHistory, keep: usize) {
    let keep = keep.max(1);
    while history.deployments.len() > keep {
        let Some(index) = history
            .deployments
            .iter()
            .position(|record| Some(&record.id) != history.current.as_ref())
        else {
            break;
        };
        let record = history.deployments.remove(index);
        let dir = deployments_dir.join(&record.id);
        if let Err(error) = std::fs::remove_dir_all(&dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, dir = %dir.display(), "cannot remove an old artifact");
            }
        }
    }
}

/// The environment again after a dotenv change: caller < dotenv < `-e`, plus the managed
/// Redis URL when none is set. Errors name file:line and never a value.
pub fn reload_environment(
    dotenv: &Path,
    assignments: &[String],
    managed_redis_url: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut errors = Vec::new();
    let pairs = env::read_dotenv(dotenv).unwrap_or_else(|env::EnvErrors(found)| {
        errors.extend(found);
        Vec::new()
    });
    let extra = env::parse_assignments(assignments).unwrap_or_else(|env::EnvErrors(found)| {
        errors.extend(found);
        Vec::new()
    });
    if !errors.is_empty() {
        return Err(format!(
            "the new environment has errors (values are never printed):\n{}",
            env::EnvErrors(errors)
        ));
    }
    let mut merged = env::merge(env::caller_environment(), [&pairs, &extra]);
    if let Some(url) = managed_redis_url {
        merged
            .entry(env::REDIS_SESSION_URL.to_string())
            .or_insert_with(|| url.to_string());
    }
    Ok(merged)
}

/// The services a redeploy is building right now, and since when (ms since the Unix epoch):
/// `stack ls` shows them as BUILDING next to the deployment that keeps serving.
#[derive(Clone, Default)]
pub struct Builds {
    building: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Builds {
    /// Marks `services` as building until the returned guard is dropped (build over, failed,
    /// or abandoned at shutdown).
    pub fn start(&self, services: &[Service]) -> BuildsGuard {
        let started_ms = now_ms();
        let names: Vec<String> = services
            .iter()
            .map(|service| service.name.clone())
            .collect();
        let mut building = self.lock();
        for name in &names {
            building.insert(name.clone(), started_ms);
        }
        BuildsGuard {
            builds: self.clone(),
            names,
        }
    }

    /// Each service being built, with when its build started.
    pub fn in_progress(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .map(|(name, started_ms)| (name.clone(), *started_ms))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.building
            .lock()
            .expect("never poisoned: no panics while held")
    }
}

#[must_use = "the services show as building only while the guard lives"]
pub struct BuildsGuard {
    builds: Builds,
    names: Vec<String>,
}

impl Drop for BuildsGuard {
    fn drop(&mut self) {
        let mut building = self.builds.lock();
        for name in &self.names {
            building.remove(name);
        }
    }
}

/// Reads the environment again after a dotenv change: the new one, or why it cannot be used.
pub type ReloadEnv = Box<dyn Fn() -> Result<BTreeMap<String, String>, String> + Send + Sync>;

/// What a running `stack up` redeploys with.
pub struct Redeployer {
    pub project_dir: PathBuf,
    /// Every service `stack up` started.
    pub services: Vec<Service>,
    pub supervisor: Supervisor,
    pub release: bool,
    /// Artifacts kept per service.
    pub keep: usize,
    pub proxy_port: u16,
    pub ready_timeout: Duration,
    /// Serialises read-modify-write of `.stack/state.json` within this process.
    pub state_lock: Arc<Mutex<()>>,
    /// The environment after a dotenv change, or why it cannot be used (`None`: no dotenv).
    pub reload_env: Option<ReloadEnv>,
    /// Shared with the control server, for `stack ls`.
    pub builds: Builds,
}

/// Watches the services (and the dotenv file) and redeploys on change until `shutdown`.
/// Returns the watcher (watching stops when it is dropped) and the redeploy task.
pub fn start_watching(
    redeployer: Redeployer,
    dotenv: Option<PathBuf>,
    shutdown: CancellationToken,
) -> Result<(Watcher, JoinHandle<()>), CliError> {
    let services =
        watch::watched_dirs(&redeployer.project_dir, &redeployer.services).map_err(|error| {
            CliError::new(error.to_string())
                .hint("Run `stack up --no-watch` to start without watching.")
        })?;
    let (watcher, changes) = Watcher::start(WatchConfig {
        services,
        dotenv,
        quiet: watch::DEFAULT_QUIET,
    })
    .map_err(|error| {
        CliError::new(error.to_string()).hint(
            "Raise the inotify limits (fs.inotify.max_user_watches), or run `stack up --no-watch`.",
        )
    })?;
    let task = tokio::spawn(redeployer.run(changes, shutdown));
    Ok((watcher, task))
}

impl Redeployer {
    /// One redeploy at a time; whatever changed meanwhile becomes ONE follow-up.
    pub async fn run(
        self,
        mut changes: mpsc::UnboundedReceiver<ChangeSet>,
        shutdown: CancellationToken,
    ) {
        loop {
            let mut next = tokio::select! {
                next = changes.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
                () = shutdown.cancelled() => return,
            };
            while let Ok(more) = changes.try_recv() {
                next.merge(more);
            }
            if next.is_empty() {
                continue;
            }
            tokio::select! {
                () = self.redeploy(next) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn redeploy(&self, changes: ChangeSet) {
        let started = Instant::now();
        let mut names: BTreeSet<String> = changes.services.clone();
        if changes.dotenv {
            if let Some(reload) = &self.reload_env {
                match reload() {
                    Ok(env) => {
                        if self.supervisor.set_env(env).await.is_err() {
                            return;
                        }
                        names.extend(self.services.iter().map(|service| service.name.clone()));
                    }
                    Err(message) => output::print_error(&CliError::new(message).hint(
                        "Fix the file and save it again; every service keeps its current environment.",
                    )),
                }
            }
        }
        let services: Vec<Service> = self
            .services
            .iter()
            .filter(|service| names.contains(&service.name))
            .cloned()
            .collect();
        if services.is_empty() {
            return;
        }
        let changed: Vec<String> = changes
            .paths
            .iter()
            .take(3)
            .map(|path| {
                path.strip_prefix(&self.project_dir)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            })
            .collect();
        output::info(format!(
            "Building {} ({} changed)",
            names.iter().cloned().collect::<Vec<_>>().join(", "),
            changed.join(", ")
        ));
        let building = self.builds.start(&services);
        let built = build::build(&self.project_dir, &services, self.release, &|_| {}).await;
        drop(building);
        let built = match built {
            Ok(built) => built,
            Err(error) => {
                self.report_build_failure(&services, error);
                return;
            }
        };
        let build_time = started.elapsed();
        for build in &built {
            self.swap_in_build(build, build_time, changes.dotenv).await;
        }
    }

    fn report_build_failure(&self, services: &[Service], error: BuildError) {
        let snapshot = self.supervisor.snapshot();
        let live: Vec<String> = services
            .iter()
            .filter_map(|service| snapshot.resolve(&service.name))
            .map(|deployment| format!("`{}`", deployment.spec.id))
            .collect();
        let serving = if live.is_empty() {
            "nothing was deployed".to_string()
        } else {
            format!("{} keeps serving", live.join(", "))
        };
        let message = match &error {
            BuildError::CargoFailed { output } | BuildError::NpmFailed { output, .. } => {
                eprint!("{output}");
                format!("the build failed (the compiler's output is above); {serving}")
            }
            other => format!("{other}; {serving}"),
        };
        output::print_error(&CliError::new(message).hint("Fix the errors and save again."));
    }

    /// Turns one build into a deployment and swaps it in; prints the outcome.
    async fn swap_in_build(&self, built: &build::Built, build_time: Duration, new_env: bool) {
        let swap_started = Instant::now();
        let name = built.service.name.clone();
        let deployments_dir = deployments_dir(&self.project_dir);
        let prepared = {
            let _guard = self
                .state_lock
                .lock()
                .expect("never poisoned: no panics while held");
            State::load(&self.project_dir)
                .map_err(RedeployError::from)
                .and_then(|state| {
                    let mut history = state.deployments.get(&name).cloned().unwrap_or_default();
                    if new_env {
                        // Same code, new environment: still a new deployment.
                        history.current = None;
                    }
                    build::prepare_deployment(
                        &deployments_dir,
                        built,
                        &history,
                        self.release,
                        now_ms(),
                    )
                    .map_err(RedeployError::from)
                })
        };
        let record = match prepared {
            Ok((_, false)) => {
                output::info(format!("{name}: the build output did not change"));
                return;
            }
            Ok((record, true)) => record,
            Err(error) => {
                output::print_error(&CliError::new(format!("{name}: {error}")).hint(error.hint()));
                return;
            }
        };
        let instances = self.instances_of(&name);
        let spec = spec_for(&deployments_dir, &record);
        match self
            .supervisor
            .swap_in(spec, instances, self.ready_timeout)
            .await
        {
            Ok(_retired) => {
                if let Err(error) = self.record_live(&record) {
                    output::warn(format!("{name}: {error}"));
                }
                output::ready(format!(
                    "{} [build {:.1}s, swap {}ms]",
                    deployment_url(&record.id, self.proxy_port),
                    build_time.as_secs_f64(),
                    swap_started.elapsed().as_millis()
                ));
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(deployments_dir.join(&record.id));
                output::print_error(
                    &CliError::new(format!("{name}: the new deployment did not start: {error}"))
                        .hint(format!(
                            "The live deployment keeps serving. See `stack logs {}`.",
                            record.id
                        )),
                );
            }
        }
    }

    /// The live deployment's instance count, else the recorded scale, else 1.
    fn instances_of(&self, service: &str) -> usize {
        let live = self
            .supervisor
            .snapshot()
            .resolve(service)
            .map(|deployment| deployment.wanted)
            .filter(|wanted| *wanted > 0);
        live.or_else(|| {
            State::load(&self.project_dir)
                .ok()
                .and_then(|state| state.scale.get(service).copied())
        })
        .unwrap_or(1)
    }

    fn record_live(&self, record: &DeploymentRecord) -> Result<(), StateError> {
        let _guard = self
            .state_lock
            .lock()
            .expect("never poisoned: no panics while held");
        let mut state = State::load(&self.project_dir)?;
        let history = state.deployments.entry(record.service.clone()).or_default();
        history.deployments.push(record.clone());
        history.current = Some(record.id.clone());
        retain_recent(&deployments_dir(&self.project_dir), history, self.keep);
        state.save(&self.project_dir)
    }
}

/// Points a service back at a kept deployment (the one before the live one, or `deployment`):
/// starts its artifact with the live instance count and swaps it in. No build.
pub async fn rollback(
    supervisor: &Supervisor,
    project_dir: &Path,
    state_lock: &Mutex<()>,
    request: &RollbackRequest,
    ready_timeout: Duration,
    proxy_port: u16,
) -> Result<RollbackAnswer, RedeployError> {
    let started = Instant::now();
    let service = request
        .service
        .strip_suffix(".localhost")
        .unwrap_or(&request.service)
        .to_string();
    let (record, previous, scale) = {
        let _guard = state_lock
            .lock()
            .expect("never poisoned: no panics while held");
        let state = State::load(project_dir)?;
        let history = state
            .deployments
            .get(&service)
            .filter(|history| !history.deployments.is_empty())
            .ok_or_else(|| RedeployError::NoHistory {
                service: service.clone(),
                known: state.deployments.keys().cloned().collect(),
            })?;
        let current = history.current.clone();
        let record = pick_rollback_target(&service, history, request.deployment.as_deref())?;
        (record, current, state.scale.get(&service).copied())
    };
    if !deployments_dir(project_dir).join(&record.id).is_dir() {
        return Err(RedeployError::ArtifactGone {
            deployment: record.id,
        });
    }
    let instances = supervisor
        .snapshot()
        .resolve(&service)
        .map(|deployment| deployment.wanted)
        .filter(|wanted| *wanted > 0)
        .or(scale)
        .unwrap_or(1);
    let spec = spec_for(&deployments_dir(project_dir), &record);
    supervisor.swap_in(spec, instances, ready_timeout).await?;
    {
        let _guard = state_lock
            .lock()
            .expect("never poisoned: no panics while held");
        let mut state = State::load(project_dir)?;
        state.deployments.entry(service).or_default().current = Some(record.id.clone());
        state.save(project_dir)?;
    }
    Ok(RollbackAnswer {
        url: deployment_url(&record.id, proxy_port),
        deployment: record.id,
        previous,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The named deployment (id, or its 10 letters), else the one recorded before the current one.
fn pick_rollback_target(
    service: &str,
    history: &ServiceHistory,
    named: Option<&str>,
) -> Result<DeploymentRecord, RedeployError> {
    let current = history.current.clone().unwrap_or_default();
    let record = match named {
        Some(named) => {
            let named = named.strip_suffix(".localhost").unwrap_or(named);
            history
                .deployments
                .iter()
                .find(|record| record.id == named || record.id == format!("{service}-{named}"))
                .cloned()
                .ok_or_else(|| RedeployError::UnknownDeployment {
                    service: service.to_string(),
                    deployment: named.to_string(),
                    kept: history
                        .deployments
                        .iter()
                        .map(|record| record.id.clone())
                        .collect(),
                })?
        }
        None => {
            let position = history
                .deployments
                .iter()
                .position(|record| record.id == current)
                .unwrap_or(history.deployments.len());
            position
                .checked_sub(1)
                .and_then(|index| history.deployments.get(index))
                .cloned()
                .ok_or_else(|| RedeployError::NothingBefore {
                    service: service.to_string(),
                    current: current.clone(),
                })?
        }
    };
    if record.id == current {
        return Err(RedeployError::AlreadyLive {
            deployment: record.id,
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> DeploymentRecord {
        DeploymentRecord {
            id: id.into(),
            service: "reader".into(),
            created_ms: 0,
            kind: "cargo".into(),
            program: "reader".into(),
            args: Vec::new(),
            fingerprint: id.into(),
            release: false,
            health: None,
        }
    }

    fn history(ids: &[&str], current: &str) -> ServiceHistory {
        ServiceHistory {
            current: Some(current.into()),
            deployments: ids.iter().map(|id| record(id)).collect(),
        }
    }

    #[test]
    fn rollback_picks_the_one_before_the_live_one_or_the_named_one() {
        let kept = history(&["reader-a", "reader-b", "reader-c"], "reader-c");
        let pick = |named| pick_rollback_target("reader", &kept, named).map(|record| record.id);
        assert_eq!(pick(None).unwrap(), "reader-b");
        assert_eq!(pick(Some("reader-a")).unwrap(), "reader-a");
        assert_eq!(pick(Some("a")).unwrap(), "reader-a");
        assert!(matches!(
            pick(Some("reader-c")),
            Err(RedeployError::AlreadyLive { .. })
        ));
        assert!(matches!(
            pick(Some("reader-zzz")),
            Err(RedeployError::UnknownDeployment { .. })
        ));
        let back = history(&["reader-a", "reader-b", "reader-c"], "reader-b");
        assert_eq!(
            pick_rollback_target("reader", &back, None).unwrap().id,
            "reader-a"
        );
        let first = history(&["reader-a"], "reader-a");
        assert!(matches!(
            pick_rollback_target("reader", &first, None),
            Err(RedeployError::NothingBefore { .. })
        ));
    }

    #[test]
    fn retention_keeps_the_newest_and_always_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["reader-a", "reader-b", "reader-c", "reader-d"];
        for id in ids {
            std::fs::create_dir_all(dir.path().join(id)).unwrap();
        }
        let mut kept = history(&ids, "reader-a");
        retain_recent(dir.path(), &mut kept, 2);
        let left: Vec<&str> = kept.deployments.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(left, ["reader-a", "reader-d"]);
        assert!(dir.path().join("reader-a").is_dir());
        assert!(!dir.path().join("reader-b").exists());
        assert!(!dir.path().join("reader-c").exists());
        assert!(dir.path().join("reader-d").is_dir());
    }
}
