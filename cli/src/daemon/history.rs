//! Deployment history: each build becomes a recorded deployment (a new one, or the current one
//! when the build output did not change), the service's current deployment moves with every
//! start, swap and rollback, and only the newest `--keep` artifacts per service stay on disk
//! ([`retain_recent`]). Every change goes through [`Store`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Live;
use crate::control::api::{deployment_url, RollbackAnswer, RollbackRequest};
use crate::state::deployments::{deployments_dir, DeploymentRecord, ServiceHistory};
use crate::state::{StateError, Store};
use crate::supervisor::build::{self, BuildError, Built};
use crate::supervisor::logs::now_ms;
use crate::supervisor::{DeploymentSpec, RunSettings, SupervisorError};

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
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
}

impl RollbackError {
    /// What the person can do about it.
    pub fn hint(&self) -> String {
        match self {
            RollbackError::NoHistory { known, .. } if !known.is_empty() => {
                format!("Services with deployments: {}.", known.join(", "))
            }
            RollbackError::NoHistory { .. } => "Run `stack up` first.".into(),
            RollbackError::UnknownDeployment { service, kept, .. } => format!(
                "Kept deployments of `{service}`: {}. See `stack ls`.",
                kept.join(", ")
            ),
            RollbackError::NothingBefore { .. } | RollbackError::AlreadyLive { .. } => {
                "See `stack ls` for the kept deployments; name one: `stack rollback <service> <deployment>`.".into()
            }
            RollbackError::ArtifactGone { .. } => {
                "Pick another deployment (`stack ls`), or raise `stack up --keep`.".into()
            }
            RollbackError::Supervisor(_) => {
                "The live deployment keeps serving; see `stack logs <deployment>`.".into()
            }
            RollbackError::State(_) => "Nothing was changed; check `.stack/` and try again.".into(),
        }
    }
}

/// Why the start could not record its builds.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the start records beside its deployments.
pub struct StartRecord {
    pub release: bool,
    /// Artifacts kept per service.
    pub keep: usize,
    /// The proxy's port, for the URLs `stack ls` shows once this `stack up` is gone.
    pub proxy_port: u16,
    pub https_port: Option<u16>,
}

/// How to start a recorded deployment.
pub fn spec_for(
    deployments_dir: &Path,
    record: &DeploymentRecord,
    settings: RunSettings,
) -> DeploymentSpec {
    let dir = deployments_dir.join(&record.id);
    // A copied artifact, or a declared `run` naming a file of the service (`./server`,
    // `.venv/bin/python`): both are found in the deployment's own directory.
    let copied =
        record.kind == "cargo" || (record.kind == "command" && record.program.contains('/'));
    let program = if copied {
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
        settings,
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

/// The start's builds as deployments (reusing a service's current one when its build output
/// did not change), each made its service's current one, old artifacts pruned; returns what to
/// start with how many instances. All recorded, or none.
pub fn record_start(
    store: &Store,
    built: &[Built],
    start: &StartRecord,
) -> Result<Vec<(DeploymentSpec, usize)>, RecordError> {
    let deployments_dir = deployments_dir(store.project_dir());
    let now = now_ms();
    let StartRecord {
        release,
        keep,
        proxy_port,
        https_port,
    } = *start;
    store.try_update(|state| {
        state.proxy_port = Some(proxy_port);
        state.https_port = https_port;
        let mut specs = Vec::new();
        for build in built {
            let name = build.service.name.clone();
            let history = state.deployments.entry(name.clone()).or_default();
            let (record, is_new) =
                build::prepare_deployment(&deployments_dir, build, history, release, now)?;
            if is_new {
                history.deployments.push(record.clone());
            }
            history.current = Some(record.id.clone());
            retain_recent(&deployments_dir, history, keep);
            let instances = state
                .recorded_scale(&name)
                .or(build.service.instances)
                .unwrap_or(1);
            let spec = spec_for(&deployments_dir, &record, build.service.settings.clone());
            specs.push((spec, instances));
        }
        Ok(specs)
    })
}

/// A deployment swapped in by a redeploy: recorded, made current, old artifacts pruned.
pub fn record_live(
    store: &Store,
    record: &DeploymentRecord,
    keep: usize,
) -> Result<(), StateError> {
    let deployments_dir = deployments_dir(store.project_dir());
    store.update(|state| {
        let history = state.deployments.entry(record.service.clone()).or_default();
        history.deployments.push(record.clone());
        history.current = Some(record.id.clone());
        retain_recent(&deployments_dir, history, keep);
    })
}

/// Points a service back at a kept deployment (the one before the live one, or the one
/// named): starts its artifact with the live instance count and swaps it in. No build.
pub async fn rollback(
    live: &Live,
    store: &Store,
    request: &RollbackRequest,
) -> Result<RollbackAnswer, RollbackError> {
    let started = Instant::now();
    let service = request
        .service
        .strip_suffix(".localhost")
        .unwrap_or(&request.service)
        .to_string();
    let state = store.load()?;
    let history = state
        .deployments
        .get(&service)
        .filter(|history| !history.deployments.is_empty())
        .ok_or_else(|| RollbackError::NoHistory {
            service: service.clone(),
            known: state.deployments.keys().cloned().collect(),
        })?;
    let previous = history.current.clone();
    let record = pick_target(&service, history, request.deployment.as_deref())?;
    let deployments_dir = deployments_dir(store.project_dir());
    if !deployments_dir.join(&record.id).is_dir() {
        return Err(RollbackError::ArtifactGone {
            deployment: record.id,
        });
    }
    let instances = live
        .supervisor
        .snapshot()
        .resolve(&service)
        .map(|deployment| deployment.wanted)
        .filter(|wanted| *wanted > 0)
        .unwrap_or_else(|| state.scale_of(&service));
    // The settings the service runs with now (`stack.toml` and detection), not the record's.
    let settings = live
        .supervisor
        .snapshot()
        .resolve(&service)
        .map(|deployment| deployment.spec.settings.clone())
        .unwrap_or_default();
    let (is_worker, one_shot) = (settings.is_worker(), settings.one_shot);
    let spec = spec_for(&deployments_dir, &record, settings);
    live.supervisor
        .swap_in(spec, instances, live.ready_timeout)
        .await?;
    store.update(|state| {
        state.deployments.entry(service).or_default().current = Some(record.id.clone());
    })?;
    // A one-shot rolled back runs that deployment again: done once it exited 0.
    if one_shot {
        live.supervisor.wait_runs_done(&record.id, None).await?;
    }
    Ok(RollbackAnswer {
        url: (!is_worker).then(|| deployment_url(&record.id, live.proxy_port)),
        deployment: record.id,
        previous,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// The named deployment (id, or its 10 letters), else the one recorded before the current one.
fn pick_target(
    service: &str,
    history: &ServiceHistory,
    named: Option<&str>,
) -> Result<DeploymentRecord, RollbackError> {
    let current = history.current.clone().unwrap_or_default();
    let record = match named {
        Some(named) => {
            let named = named.strip_suffix(".localhost").unwrap_or(named);
            history
                .deployments
                .iter()
                .find(|record| record.id == named || record.id == format!("{service}-{named}"))
                .cloned()
                .ok_or_else(|| RollbackError::UnknownDeployment {
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
                .ok_or_else(|| RollbackError::NothingBefore {
                    service: service.to_string(),
                    current: current.clone(),
                })?
        }
    };
    if record.id == current {
        return Err(RollbackError::AlreadyLive {
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
            worker: false,
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
        let pick = |named| pick_target("reader", &kept, named).map(|record| record.id);
        assert_eq!(pick(None).unwrap(), "reader-b");
        assert_eq!(pick(Some("reader-a")).unwrap(), "reader-a");
        assert_eq!(pick(Some("a")).unwrap(), "reader-a");
        assert!(matches!(
            pick(Some("reader-c")),
            Err(RollbackError::AlreadyLive { .. })
        ));
        assert!(matches!(
            pick(Some("reader-zzz")),
            Err(RollbackError::UnknownDeployment { .. })
        ));
        let back = history(&["reader-a", "reader-b", "reader-c"], "reader-b");
        assert_eq!(pick_target("reader", &back, None).unwrap().id, "reader-a");
        let first = history(&["reader-a"], "reader-a");
        assert!(matches!(
            pick_target("reader", &first, None),
            Err(RollbackError::NothingBefore { .. })
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
