//! Every save becomes a deployment: [`Redeployer`] takes the change sets of
//! [`crate::watch`], builds the changed services (one cargo run), turns each good build into a
//! new deployment (new id, artifact kept under `.stack/deployments/<id>/`) and hot swaps it in
//! ([`crate::supervisor::Supervisor::swap_in`]), then records it as its service's current deployment.
//!
//! A failed build, a bad `.env` or a new deployment that does not start is reported
//! ([`super::report`]) and changes nothing: the live deployment keeps serving. A change that
//! arrives during a build queues exactly one follow-up build, which includes everything that
//! changed meanwhile. A `.env` save assembles the environment exactly as the start did
//! ([`ServiceEnv::assemble`]) and redeploys every service with it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::builds::Builds;
use super::env::{EnvSources, ServiceEnv};
use super::history::{self, spec_for};
use super::report::{self, Redeploy};
use super::Live;
use crate::config;
use crate::control::api::deployment_urls;
use crate::output::{self, CliError};
use crate::state::deployments::deployments_dir;
use crate::state::{Store, STATE_DIR};
use crate::supervisor::build::{self, Built, Service};
use crate::supervisor::logs::now_ms;
use crate::watch::{self, ChangeSet, WatchConfig, Watcher};

/// What a running `stack up` redeploys with.
pub struct Redeployer {
    pub live: Arc<Live>,
    pub store: Store,
    /// Every service `stack up` started.
    pub services: Vec<Service>,
    pub release: bool,
    /// Artifacts kept per service.
    pub keep: usize,
    /// Read again after a dotenv save.
    pub env: EnvSources,
    /// The managed Redis's URL, which a reloaded environment gets as the first one did.
    pub managed_redis: Option<String>,
    /// Shared with the daemon, for `stack ls`.
    pub builds: Builds,
}

/// Watches the services (and the dotenv file) and redeploys on change until `shutdown`.
/// Returns the watcher (watching stops when it is dropped) and the redeploy task.
pub fn start_watching(
    redeployer: Redeployer,
    shutdown: CancellationToken,
) -> Result<(Watcher, JoinHandle<()>), CliError> {
    let project_dir = redeployer.store.project_dir();
    let services = watch::watched_dirs(project_dir, &redeployer.services).map_err(|error| {
        CliError::new(error.to_string())
            .hint("Run `stack up --no-watch` to start without watching.")
    })?;
    let (watcher, changes) = Watcher::start(WatchConfig {
        services,
        dotenv: redeployer.env.dotenv.clone(),
        config: Some(project_dir.join(config::FILE)),
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
        // The stack.toml last seen (`None`: no file); a save that changes nothing says nothing.
        let mut config_seen = read_config(&self.project_dir());
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
            if std::mem::take(&mut next.config) {
                self.config_saved(&mut config_seen);
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

    /// A saved `stack.toml` is checked with the start's parser and reported, never applied
    /// while running: a bad one prints its errors as `stack up` does, and a good one that
    /// changed says it takes effect at the next `stack up`. Either way the stack keeps running
    /// with the settings it started with.
    fn config_saved(&self, seen: &mut Option<String>) {
        let project_dir = self.project_dir();
        let text = read_config(&project_dir);
        if text == *seen {
            return;
        }
        *seen = text;
        match config::load_resolved(&project_dir) {
            Err(errors) => output::print_error(&errors.to_cli(
                "Fix the file and save it again. Nothing was applied: the stack keeps running with the settings it started with.",
            )),
            Ok(_) => output::warn(format!(
                "`{}` changed: changes to it take effect at the next `stack up` (the running stack keeps the settings it started with). Stop it and run `stack up` again to apply them.",
                config::FILE
            )),
        }
    }

    fn project_dir(&self) -> PathBuf {
        self.store.project_dir().to_path_buf()
    }

    async fn redeploy(&self, changes: ChangeSet) {
        let started = Instant::now();
        let mut names: BTreeSet<String> = changes.services.clone();
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
        report::print(Redeploy::Building {
            services: names.iter().cloned().collect(),
            changed,
        });
        let building = self.builds.start(&services);
        let built = build::build(&project_dir, &services, self.release, &|_| {}).await;
        drop(building);
        let built = match built {
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
        let build_time = started.elapsed();
        for build in &built {
            self.swap_in_build(build, build_time, changes.dotenv).await;
        }
    }

    /// Turns one build into a deployment and swaps it in.
    async fn swap_in_build(&self, built: &Built, build_time: Duration, new_env: bool) {
        let swap_started = Instant::now();
        let name = built.service.name.clone();
        let deployments_dir = deployments_dir(self.store.project_dir());
        let prepared = self
            .store
            .load()
            .map_err(|error| error.to_string())
            .and_then(|state| {
                let mut history = state.deployments.get(&name).cloned().unwrap_or_default();
                if new_env {
                    // Same code, new environment: still a new deployment.
                    history.current = None;
                }
                build::prepare_deployment(&deployments_dir, built, &history, self.release, now_ms())
                    .map_err(|error| error.to_string())
            });
        let record = match prepared {
            Ok((_, false)) => return report::print(Redeploy::Unchanged { service: name }),
            Ok((record, true)) => record,
            Err(reason) => {
                return report::print(Redeploy::NotPrepared {
                    service: name,
                    reason,
                })
            }
        };
        let instances = self.instances_of(&name);
        let spec = spec_for(&deployments_dir, &record, built.service.settings.clone());
        let swapped = self
            .live
            .supervisor
            .swap_in(spec, instances, self.live.ready_timeout)
            .await;
        match swapped {
            Ok(_retired) => {
                if let Err(error) = history::record_live(&self.store, &record, self.keep) {
                    report::print(Redeploy::NotRecorded {
                        service: name,
                        error,
                    });
                }
                report::print(Redeploy::Ready {
                    url: deployment_urls(&record.id, self.live.proxy_port, self.live.https_port),
                    build: build_time,
                    swap: swap_started.elapsed(),
                });
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(deployments_dir.join(&record.id));
                report::print(Redeploy::StartFailed {
                    service: name,
                    deployment: record.id,
                    error,
                });
            }
        }
    }

    /// The live deployment's instance count, else the recorded scale, else 1.
    fn instances_of(&self, service: &str) -> usize {
        let live = self
            .live
            .supervisor
            .snapshot()
            .resolve(service)
            .map(|deployment| deployment.wanted)
            .filter(|wanted| *wanted > 0);
        live.or_else(|| self.store.load().ok().map(|state| state.scale_of(service)))
            .unwrap_or(1)
    }
}

/// The project's `stack.toml` as it is now (`None`: no file, or unreadable).
fn read_config(project_dir: &Path) -> Option<String> {
    std::fs::read_to_string(project_dir.join(config::FILE)).ok()
}
