//! Every save becomes a deployment: [`Redeployer`] takes the change sets of
//! [`crate::watch`], builds the changed services (one cargo run), turns each good build into a
//! new deployment (new id, artifact kept under `.stack/deployments/<id>/`) and hot swaps it in
//! ([`crate::supervisor::Supervisor::swap_in`]), then records it as its service's current deployment.
//!
//! A failed build, a bad `.env` or a new deployment that does not start is reported
//! ([`super::report`]) and changes nothing: the live deployment keeps serving. A change that
//! arrives during a build queues exactly one follow-up build, which includes everything that
//! changed meanwhile. A `.env` save assembles the environment exactly as the start did
//! ([`ServiceEnv::assemble`]) and redeploys every service with it. A good `stack.toml` save is
//! applied as [`super::reconfigure`] plans it; a bad one changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::builds::Builds;
use super::env::{EnvSources, ServiceEnv};
use super::history::{self, spec_for};
use super::reconfigure::{self, Plan, StopOrder};
use super::report::{self, Redeploy};
use super::start::{check_prerequisites, check_programs, dependency_failed};
use super::Live;
use crate::config::{self, model::Condition, ServicesError};
use crate::control::api::deployment_urls;
use crate::output::{self, CliError};
use crate::state::deployments::deployments_dir;
use crate::state::{Store, STATE_DIR};
use crate::supervisor::build::{self, Built, Service};
use crate::supervisor::logs::now_ms;
use crate::supervisor::SupervisorError;
use crate::watch::{self, ChangeSet, WatchConfig, Watcher};

/// What a `stack.toml` error or a missing program asks for, while the stack runs.
const SAVE_AGAIN: &str = "save `stack.toml` again";
const NOTHING_APPLIED: &str = "Fix the file and save it again. Nothing was applied: the stack keeps running with the settings it had.";

/// What a running `stack up` redeploys with.
pub struct Redeployer {
    pub live: Arc<Live>,
    pub store: Store,
    /// Every service that runs: those `stack up` started, as `stack.toml` saves changed them.
    pub services: Vec<Service>,
    /// The services named on `stack up`'s command line (empty: all), for reading `stack.toml`
    /// again.
    pub requested: Vec<String>,
    /// Shared with the shutdown, which stops in this order.
    pub stop_order: StopOrder,
    /// Cancelled once the start has handed every first deployment to the supervisor: changes
    /// wait for it.
    pub first_deploys: CancellationToken,
    pub release: bool,
    /// Artifacts kept per service.
    pub keep: usize,
    /// Read again after a dotenv save.
    pub env: EnvSources,
    /// The managed Redis's URL, which a reloaded environment gets as the first one did.
    pub managed_redis: Option<String>,
    /// Shared with the daemon, for `stack ls`.
    pub builds: Builds,
    /// What each service's directory held right after its last build here ([`BuiltTrees`]).
    pub built_trees: BuiltTrees,
}

/// Each built service's directory (canonical) and its files' fingerprints right after its
/// last build by a redeploy. A `build` that writes into its own directory (`dist/`, a stamp)
/// makes the watcher see its output: a change set whose every path still is as the build
/// left it is the build's own and builds nothing, else every save would build again forever.
/// A save made during a build that the build's copy already holds is not built again either.
#[derive(Debug, Default)]
pub struct BuiltTrees(std::sync::Mutex<BTreeMap<String, BuiltTree>>);

/// A service's directory (canonical) and each file's size and mtime in it.
type BuiltTree = (PathBuf, BTreeMap<PathBuf, String>);

impl BuiltTrees {
    /// After a build of `services`, good or failed (a failed one may have written too).
    fn record(&self, services: &[Service]) {
        let mut trees = self.0.lock().expect("never poisoned: no panics while held");
        for service in services {
            // A cargo build writes into `target/`, which is never watched.
            if matches!(service.kind, build::ServiceKind::Cargo { .. }) {
                continue;
            }
            let dir = service.dir.canonicalize().unwrap_or(service.dir.clone());
            let files = build::tree_files(&dir);
            trees.insert(service.name.clone(), (dir, files));
        }
    }

    /// Whether `path` is as a build of a service whose directory holds it left it (the same
    /// size and mtime, or absent then and now).
    fn left_by_a_build(&self, path: &Path) -> bool {
        let trees = self.0.lock().expect("never poisoned: no panics while held");
        trees.values().any(|(dir, files)| {
            // A directory is what its files are: they have events of their own.
            path.starts_with(dir)
                && (path.is_dir() || files.get(path).cloned() == build::file_fingerprint(path).ok())
        })
    }

    /// Whether every path of `changes` is as a build left it.
    fn explain(&self, changes: &ChangeSet) -> bool {
        !changes.paths.is_empty() && changes.paths.iter().all(|path| self.left_by_a_build(path))
    }
}

/// Watches the services (and the dotenv file, and `stack.toml`) and redeploys on change until
/// `shutdown`. Returns the redeploy task; watching stops when it ends.
pub fn start_watching(
    redeployer: Redeployer,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, CliError> {
    let (watcher, changes) = redeployer.watch(&redeployer.services)?;
    Ok(tokio::spawn(redeployer.run(watcher, changes, shutdown)))
}

type Changes = mpsc::UnboundedReceiver<ChangeSet>;

/// What applying a saved configuration did.
#[derive(Default)]
struct Applied {
    /// A watcher of the new set of paths, when it changed.
    rewatched: Option<(Watcher, Changes)>,
    /// The services it built (new deployments and new services).
    built: BTreeSet<String>,
}

impl Redeployer {
    /// A watcher of `services`, the dotenv file and `stack.toml`.
    fn watch(&self, services: &[Service]) -> Result<(Watcher, Changes), CliError> {
        let project_dir = self.store.project_dir();
        let watched = watch::watched_dirs(project_dir, services).map_err(|error| {
            CliError::new(error.to_string())
                .hint("Run `stack up --no-watch` to start without watching.")
        })?;
        let mut config_files = vec![
            project_dir.join(config::FILE),
            project_dir.join(config::procfile::FILE),
        ];
        config_files.extend(services_env_files(services));
        Watcher::start(WatchConfig {
            services: watched,
            dotenv: self.env.dotenv.clone(),
            config: config_files,
            quiet: watch::DEFAULT_QUIET,
        })
        .map_err(|error| {
            CliError::new(error.to_string()).hint(
                "Raise the inotify limits (fs.inotify.max_user_watches), or run `stack up --no-watch`.",
            )
        })
    }

    /// One redeploy at a time; whatever changed meanwhile becomes ONE follow-up.
    async fn run(mut self, watcher: Watcher, mut changes: Changes, shutdown: CancellationToken) {
        // Dropped (watching stops) when this task ends, or replaced when the watched paths change.
        let mut _watcher = watcher;
        loop {
            let mut next = tokio::select! {
                next = changes.recv() => match next {
                    Some(next) => next,
                    None => return,
                },
                () = shutdown.cancelled() => return,
            };
            tokio::select! {
                () = self.first_deploys.cancelled() => {}
                () = shutdown.cancelled() => return,
            }
            while let Ok(more) = changes.try_recv() {
                next.merge(more);
            }
            // A save of the configuration during its own apply is applied next, in this loop.
            while std::mem::take(&mut next.config) {
                let files = self.config_files_in(&next);
                let applied = tokio::select! {
                    applied = self.config_saved(&files) => applied,
                    () = shutdown.cancelled() => return,
                };
                // Built after every save of this burst: they need no build of their own.
                next.services
                    .retain(|service| !applied.built.contains(service));
                // Saves the old watcher saw meanwhile still count.
                while let Ok(more) = changes.try_recv() {
                    next.merge(more);
                }
                if let Some((watcher, new_changes)) = applied.rewatched {
                    _watcher = watcher;
                    changes = new_changes;
                }
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

    /// A saved `stack.toml` (or `env_file`), checked with the start's parser: a bad one prints
    /// its errors as `stack up` does and changes nothing; a good one is applied as
    /// [`reconfigure::plan`] says (a save that changes nothing says nothing). Answers with a
    /// new watcher when the watched paths changed, and the services it built.
    async fn config_saved(&mut self, files: &[String]) -> Applied {
        let project_dir = self.project_dir();
        let declared = match declared_services(&project_dir, &self.requested) {
            Ok(declared) => declared,
            Err(error) => {
                output::print_error(&error);
                return Applied::default();
            }
        };
        let plan = reconfigure::plan(&self.services, &declared);
        if plan.is_empty() {
            return Applied::default();
        }
        let starting: Vec<Service> = declared
            .iter()
            .filter(|service| plan.builds(&service.name))
            .cloned()
            .collect();
        // The environment now: a `.env` save may have changed `PATH`.
        let vars = self.live.supervisor.snapshot().env.clone();
        if let Err(error) = check_prerequisites(&starting, &vars, SAVE_AGAIN)
            .and_then(|()| check_programs(&starting, &vars, SAVE_AGAIN))
        {
            output::print_error(&error);
            return Applied::default();
        }
        let rewatched = if plan.rewatch {
            match self.watch(&declared) {
                Ok(watching) => Some(watching),
                Err(error) => {
                    output::print_error(&error);
                    return Applied::default();
                }
            }
        } else {
            None
        };
        let quoted: Vec<String> = files.iter().map(|file| format!("`{file}`")).collect();
        output::info(format!("{} changed: {}", quoted.join(", "), plan.summary()));
        *self.stop_order.lock().expect("never poisoned") = reconfigure::stop_order(&declared);
        self.services = declared;
        let built = starting
            .iter()
            .map(|service| service.name.clone())
            .collect();
        self.apply(&plan, starting, files.to_vec()).await;
        Applied { rewatched, built }
    }

    /// The configuration files among a burst's paths, relative to the project, for saying
    /// what changed: `stack.toml`, `services/stats/stats.env`.
    fn config_files_in(&self, changes: &ChangeSet) -> Vec<String> {
        let project_dir = self.project_dir();
        let mut files = services_env_files(&self.services);
        files.push(project_dir.join(config::FILE));
        files.push(project_dir.join(config::procfile::FILE));
        let named: Vec<String> = changes
            .paths
            .iter()
            .filter(|path| files.contains(path))
            .map(|path| {
                let shown = path.strip_prefix(&project_dir).unwrap_or(path);
                shown.display().to_string()
            })
            .collect();
        if named.is_empty() {
            vec![config::FILE.to_string()]
        } else {
            named
        }
    }

    /// Stops what is no longer declared, scales, then builds `starting` (the new deployments
    /// and the new services) and swaps each in, in start order (a new service once what it
    /// depends on is there). `changed`: the saved files, for the build's line.
    async fn apply(&self, plan: &Plan, starting: Vec<Service>, changed: Vec<String>) {
        let supervisor = &self.live.supervisor;
        // Dependents first, as `stack down` stops them.
        for service in plan.removed.iter().rev() {
            let ids: Vec<String> = supervisor
                .snapshot()
                .deployments
                .iter()
                .filter(|deployment| deployment.spec.service == *service)
                .map(|deployment| deployment.spec.id.clone())
                .collect();
            for id in &ids {
                let _ = supervisor.remove(id).await;
            }
            output::info(format!(
                "Stopped `{service}` ({}): it is no longer declared",
                ids.join(", ")
            ));
        }
        for (service, instances) in &plan.rescale {
            // The file says how many again: a scale `stack scale` recorded gives way to it.
            if let Err(error) = self.store.update(|state| state.forget_scale(service)) {
                tracing::warn!(%error, "cannot record the scale");
            }
            if plan.builds(service) {
                continue;
            }
            match supervisor.scale(service, *instances).await {
                Ok(deployment) => output::info(format!(
                    "Scaled `{deployment}` to {instances} (`{}`)",
                    config::FILE
                )),
                Err(error) => output::print_error(&CliError::new(format!(
                    "cannot scale `{service}` to {instances}: {error}"
                ))),
            }
        }
        if starting.is_empty() {
            return;
        }
        let fresh = plan.added.iter().cloned().collect();
        self.build_and_swap(starting, changed, true, fresh, &plan.rescale)
            .await;
    }

    fn project_dir(&self) -> PathBuf {
        self.store.project_dir().to_path_buf()
    }

    async fn redeploy(&self, changes: ChangeSet) {
        let mut names: BTreeSet<String> = changes.services.clone();
        if !changes.dotenv && self.built_trees.explain(&changes) {
            tracing::debug!(paths = ?changes.paths, "only what a build wrote changed");
            return;
        }
        if changes.dotenv {
            let stack_dir = self.project_dir().join(STATE_DIR);
            match ServiceEnv::assemble(&stack_dir, &self.env, self.managed_redis.as_deref()) {
                Ok(env) => {
                    if self.live.supervisor.set_env(env.vars).await.is_err() {
                        return;
                    }
                    names.extend(self.services.iter().map(|service| service.name.clone()));
                }
                Err(error) => report::print(Redeploy::EnvInvalid(error)),
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
        let project_dir = self.project_dir();
        let changed = changes
            .paths
            .iter()
            .take(3)
            .map(|path| {
                path.strip_prefix(&project_dir)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            })
            .collect();
        self.build_and_swap(
            services,
            changed,
            changes.dotenv,
            BTreeSet::new(),
            &BTreeMap::new(),
        )
        .await;
    }

    /// Builds `services` (one cargo run) and swaps each good build in, in their order. `renew`:
    /// a new deployment even where the build output did not change (a new environment or new
    /// settings). A service of `fresh` has no deployment yet: it first waits for what it
    /// depends on, as at the start. One of `rescale` starts with that many instances.
    async fn build_and_swap(
        &self,
        services: Vec<Service>,
        changed: Vec<String>,
        renew: bool,
        fresh: BTreeSet<String>,
        rescale: &BTreeMap<String, usize>,
    ) {
        let started = Instant::now();
        report::print(Redeploy::Building {
            services: services
                .iter()
                .map(|service| service.name.clone())
                .collect(),
            changed,
        });
        let building = self.builds.start(&services);
        let built = build::build(&self.project_dir(), &services, self.release, &|_| {}).await;
        drop(building);
        self.built_trees.record(&services);
        let mut built = match built {
            Ok(built) => built,
            Err(error) => {
                let snapshot = self.live.supervisor.snapshot();
                let serving = services
                    .iter()
                    .filter_map(|service| snapshot.resolve(&service.name))
                    .map(|deployment| deployment.spec.id.clone())
                    .collect();
                report::print(Redeploy::BuildFailed { error, serving });
                return;
            }
        };
        // Start order: what a service depends on is swapped in before it.
        built.sort_by_key(|build| {
            self.services
                .iter()
                .chain(&services)
                .position(|service| service.name == build.service.name)
        });
        let in_batch: BTreeSet<String> = built
            .iter()
            .map(|build| build.service.name.clone())
            .collect();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let build_time = started.elapsed();
        for build in &built {
            let service = &build.service;
            let is_fresh = fresh.contains(&service.name);
            // New code waits for what this save changes beside it (its migration) as a new
            // service waits for all it depends on.
            let waits_for: Vec<&String> = service
                .depends_on
                .keys()
                .filter(|dependency| is_fresh || in_batch.contains(*dependency))
                .collect();
            if let Some(dependency) = waits_for.iter().find(|d| failed.contains(**d)) {
                output::print_error(
                    &CliError::new(format!(
                        "`{}` depends on `{dependency}`, whose new deployment failed, so {}",
                        service.name,
                        not_started(&service.name, is_fresh)
                    ))
                    .hint(format!("Fix `{dependency}` and save again.")),
                );
                failed.insert(service.name.clone());
                continue;
            }
            if !self.dependencies_ready(service, &waits_for, is_fresh).await {
                failed.insert(service.name.clone());
                continue;
            }
            let scale = rescale.get(&service.name).copied();
            if !self.swap_in_build(build, build_time, renew, scale).await {
                failed.insert(service.name.clone());
            }
        }
    }

    /// Waits, as the start does, for each of `dependencies` of a service that starts now or
    /// whose new deployment does (`is_fresh`: it has none yet).
    async fn dependencies_ready(
        &self,
        service: &Service,
        dependencies: &[&String],
        is_fresh: bool,
    ) -> bool {
        let supervisor = &self.live.supervisor;
        let timeout = self.live.ready_timeout;
        for (dependency, condition) in service
            .depends_on
            .iter()
            .filter(|(dependency, _)| dependencies.contains(dependency))
        {
            let Some(id) = supervisor
                .snapshot()
                .resolve(dependency)
                .map(|deployment| deployment.spec.id.clone())
            else {
                output::print_error(
                    &CliError::new(format!(
                        "`{}` waits for `{dependency}`, which does not run",
                        service.name
                    ))
                    .hint(format!(
                        "{}; the rest keeps running. Fix `{dependency}`, then save `{}` again.",
                        not_started(&service.name, is_fresh),
                        config::FILE
                    )),
                );
                return false;
            };
            if let Err(error) = supervisor.wait_for(&id, *condition, timeout).await {
                output::print_error(
                    &dependency_failed(
                        &self.live,
                        &service.name,
                        dependency,
                        &id,
                        *condition,
                        &error,
                    )
                    .hint(format!(
                    "{}; the rest keeps running. See `stack logs {dependency}`, then save again.",
                    not_started(&service.name, is_fresh),
                )),
                );
                return false;
            }
        }
        true
    }

    /// Turns one build into a deployment and swaps it in.
    /// `scale`: how many instances it starts with, when not as many as the live one has.
    async fn swap_in_build(
        &self,
        built: &Built,
        build_time: Duration,
        renew: bool,
        scale: Option<usize>,
    ) -> bool {
        let swap_started = Instant::now();
        let name = built.service.name.clone();
        let deployments_dir = deployments_dir(self.store.project_dir());
        let prepared = self
            .store
            .load()
            .map_err(|error| error.to_string())
            .and_then(|state| {
                let mut history = state.deployments.get(&name).cloned().unwrap_or_default();
                if renew {
                    // Same code, new environment or settings: still a new deployment.
                    history.current = None;
                }
                build::prepare_deployment(&deployments_dir, built, &history, self.release, now_ms())
                    .map_err(|error| error.to_string())
            });
        let record = match prepared {
            Ok((_, false)) => {
                report::print(Redeploy::Unchanged { service: name });
                return true;
            }
            Ok((record, true)) => record,
            Err(reason) => {
                report::print(Redeploy::NotPrepared {
                    service: name,
                    reason,
                });
                return false;
            }
        };
        let instances = scale.unwrap_or_else(|| self.instances_of(&built.service));
        let mut spec = spec_for(&deployments_dir, &record, built.service.settings.clone());
        spec.settings.one_shot = self.is_one_shot(&name);
        let swapped = self
            .live
            .supervisor
            .swap_in(spec, instances, self.live.ready_timeout)
            .await;
        match swapped {
            Ok(_retired) => {
                if let Err(error) = history::record_live(&self.store, &record, self.keep) {
                    report::print(Redeploy::NotRecorded {
                        service: name.clone(),
                        error,
                    });
                }
                if self.is_one_shot(&name) {
                    // Said once it exited 0, or why not; later saves do not wait for it.
                    tokio::spawn(say_when_completed(
                        self.live.clone(),
                        record.id,
                        name,
                        build_time,
                        swap_started,
                    ));
                    return true;
                }
                // A worker has no URL: its id and service, as the start says it.
                let url = if built.service.settings.is_worker() {
                    format!("{} (worker `{}`)", record.id, built.service.name)
                } else {
                    deployment_urls(&record.id, self.live.proxy_port, self.live.https_port)
                };
                report::print(Redeploy::Ready {
                    url,
                    build: build_time,
                    swap: swap_started.elapsed(),
                });
                true
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(deployments_dir.join(&record.id));
                // A one-shot that exits non-zero at once did not start, as a server that
                // crashes does; for a one-shot that is: it did not complete.
                let failed = if self.is_one_shot(&name) {
                    Redeploy::NotCompleted {
                        service: name,
                        deployment: record.id,
                        error,
                    }
                } else {
                    Redeploy::StartFailed {
                        service: name,
                        deployment: record.id,
                        error,
                    }
                };
                report::print(failed);
                false
            }
        }
    }

    /// Whether others wait for `service` to complete (`depends_on ... = "completed"`).
    fn is_one_shot(&self, service: &str) -> bool {
        self.services
            .iter()
            .any(|other| other.depends_on.get(service) == Some(&Condition::Completed))
    }

    /// The live deployment's instance count, else the recorded scale, else `instances` of
    /// `stack.toml`, else 1.
    fn instances_of(&self, service: &Service) -> usize {
        let live = self
            .live
            .supervisor
            .snapshot()
            .resolve(&service.name)
            .map(|deployment| deployment.wanted)
            .filter(|wanted| *wanted > 0);
        live.or_else(|| {
            self.store
                .load()
                .ok()
                .and_then(|state| state.recorded_scale(&service.name))
        })
        .or(service.instances)
        .unwrap_or(1)
    }
}

/// What did not happen to `service` when what it depends on failed: it has no deployment yet
/// (`is_fresh`), or its live one stays.
fn not_started(service: &str, is_fresh: bool) -> String {
    if is_fresh {
        format!("`{service}` was not started")
    } else {
        format!("the new deployment of `{service}` was not swapped in: the live one keeps serving")
    }
}

/// Says `> Success!` once a new deployment of a one-shot exited 0, or why it did not; nothing
/// when the stack stops or a newer deployment replaced it first.
async fn say_when_completed(
    live: Arc<Live>,
    deployment: String,
    service: String,
    build: Duration,
    started: Instant,
) {
    let completed = live
        .supervisor
        .wait_for(&deployment, Condition::Completed, live.ready_timeout)
        .await;
    match completed {
        Ok(()) => report::print(Redeploy::Completed {
            deployment,
            service,
            build,
            ran: started.elapsed(),
        }),
        Err(SupervisorError::Stopped | SupervisorError::UnknownTarget { .. }) => {}
        Err(error) => report::print(Redeploy::NotCompleted {
            service,
            deployment,
            error,
        }),
    }
}

/// The `env_file`s of `services`, each once.
fn services_env_files(services: &[Service]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = services
        .iter()
        .filter_map(|service| service.env_file.clone())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// The services a saved `stack.toml` declares (with what discovery finds), or its errors.
fn declared_services(project_dir: &Path, requested: &[String]) -> Result<Vec<Service>, CliError> {
    let resolved =
        config::load_resolved(project_dir).map_err(|errors| errors.to_cli(NOTHING_APPLIED))?;
    config::services(project_dir, &resolved, requested).map_err(|error| match error {
        ServicesError::Config(errors) => errors.to_cli(NOTHING_APPLIED),
        other => CliError::new(other.to_string()).hint(NOTHING_APPLIED),
    })
}
