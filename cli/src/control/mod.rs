//! The control API: HTTP+JSON over the Unix socket `.stack/stack.sock` (mode 0600, so only
//! the user can connect), served by the running `stack up` and called by `stack ls`, `logs`,
//! `scale`, `rm`, `down` and the alias commands.
//!
//! - [`server`]: the routes, over a [`ControlContext`] that `stack up` hands in.
//! - [`lock`]: one `stack up` per project (`flock` on `.stack/lock`).
//! - [`client`]: one request to the socket; [`ControlError::NotRunning`] when no `stack up` runs,
//!   so commands can fall back to what is on disk.
//! - [`apply_alias_change`]: what the alias commands call: live when `stack up` runs, else
//!   recorded in `.stack/state.json` for the next `stack up`.
//!
//! The wire types below are shared by both sides. This module never starts processes and never
//! touches the routing table itself; it asks the supervisor and the context's callbacks.

pub mod client;
pub mod lock;
pub mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{self, Alias, State};
use crate::supervisor::{DeploymentState, LiveDeployment, Snapshot};

pub use client::Client;
pub use server::{AliasApplier, Control, ControlContext};

/// The socket's file name under `.stack/`.
pub const SOCKET: &str = "stack.sock";

/// `<project>/.stack/stack.sock`.
pub fn socket_path(project_dir: &Path) -> PathBuf {
    project_dir.join(state::STATE_DIR).join(SOCKET)
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nobody listens on the socket (no `stack up` in this directory).
    #[error("no `stack up` is running in `{dir}`")]
    NotRunning { dir: String },
    #[error("cannot talk to `stack up` over `{socket}`: {reason}")]
    Transport { socket: String, reason: String },
    /// The running `stack up` refused the request; message and hint are its own words.
    #[error("{message}")]
    Refused {
        status: u16,
        message: String,
        hint: Option<String>,
    },
    /// The `stack up` is still starting (building, starting Redis): it answers `stack ls` and
    /// `stack down` only; message and hint are its own words.
    #[error("{message}")]
    Starting {
        message: String,
        hint: Option<String>,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
}

impl From<ControlError> for crate::output::CliError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Refused { message, hint, .. }
            | ControlError::Starting { message, hint } => {
                let cli = crate::output::CliError::new(message);
                match hint {
                    Some(hint) => cli.hint(hint),
                    None => cli,
                }
            }
            ControlError::NotRunning { .. } => {
                crate::output::CliError::new(error.to_string()).hint("Start it with `stack up`.")
            }
            other => crate::output::CliError::new(other.to_string())
                .hint("Check that `stack up` is still running, or restart it."),
        }
    }
}

/// An error body: what went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Set by a `stack up` still starting: ask again after `> Ready!`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>, hint: Option<String>) -> Self {
        ErrorBody {
            error: error.into(),
            hint,
            starting: false,
        }
    }
}

/// One instance in `stack ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub number: usize,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    /// `READY`, `STARTING`, `DRAINING`, `CRASHED`.
    pub state: String,
    pub restarts: u32,
}

/// One deployment in `stack ls` (and `stack ls --json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub id: String,
    pub service: String,
    pub url: String,
    pub state: DeploymentState,
    pub ready: usize,
    pub wanted: usize,
    /// The service's current deployment.
    pub current: bool,
    pub created_ms: u64,
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
}

impl DeploymentStatus {
    pub fn from_live(deployment: &LiveDeployment, proxy_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let instances = deployment
            .instances
            .iter()
            .map(|instance| {
                let port = instance.port.load(Ordering::Acquire);
                let pid = instance.pid.load(Ordering::Acquire);
                let state = if instance.crashed.load(Ordering::Acquire) {
                    "CRASHED"
                } else if instance.draining.load(Ordering::Acquire) {
                    "DRAINING"
                } else if instance.ready.load(Ordering::Acquire) {
                    "READY"
                } else {
                    "STARTING"
                };
                InstanceStatus {
                    number: instance.number,
                    port: (port != 0).then_some(port),
                    pid: (pid != 0).then_some(pid),
                    state: state.into(),
                    restarts: instance.restarts.load(Ordering::Acquire),
                }
            })
            .collect();
        DeploymentStatus {
            id: deployment.spec.id.clone(),
            service: deployment.spec.service.clone(),
            url: deployment_url(&deployment.spec.id, proxy_port),
            state: deployment.state(),
            ready: deployment.n_ready(),
            wanted: deployment.wanted,
            current: deployment.current,
            created_ms: deployment.spec.created_ms,
            instances,
        }
    }

    /// Every running deployment, oldest first.
    pub fn all_live(snapshot: &Snapshot, proxy_port: u16) -> Vec<Self> {
        snapshot
            .deployments
            .iter()
            .map(|deployment| Self::from_live(deployment, proxy_port))
            .collect()
    }

    /// A service whose new build is under way: no deployment id yet (the build decides it).
    pub fn building(service: String, started_ms: u64, wanted: usize) -> Self {
        DeploymentStatus {
            id: String::new(),
            service,
            url: String::new(),
            state: DeploymentState::Building,
            ready: 0,
            wanted,
            current: false,
            created_ms: started_ms,
            instances: Vec::new(),
        }
    }

    /// What is on disk when no `stack up` runs: every recorded deployment, STOPPED.
    pub fn all_stored(state: &State, proxy_port: u16) -> Vec<Self> {
        let mut all: Vec<Self> = state
            .deployments
            .iter()
            .flat_map(|(service, history)| {
                history.deployments.iter().map(move |record| {
                    let current = history.current.as_deref() == Some(record.id.as_str());
                    DeploymentStatus {
                        id: record.id.clone(),
                        service: service.clone(),
                        url: deployment_url(&record.id, proxy_port),
                        state: DeploymentState::Stopped,
                        ready: 0,
                        wanted: if current {
                            state.scale.get(service).copied().unwrap_or(1)
                        } else {
                            0
                        },
                        current,
                        created_ms: record.created_ms,
                        instances: Vec::new(),
                    }
                })
            })
            .collect();
        all.sort_by_key(|status| status.created_ms);
        all
    }
}

/// `http://<deployment>.localhost:<port>` (no port for 80).
pub fn deployment_url(host_label: &str, proxy_port: u16) -> String {
    if proxy_port == 80 {
        format!("http://{host_label}.localhost")
    } else {
        format!("http://{host_label}.localhost:{proxy_port}")
    }
}

/// `POST /v1/scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub target: String,
    pub instances: usize,
}

/// The answer to a scale: which deployment, how many take traffic now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleAnswer {
    pub deployment: String,
    pub ready: usize,
    pub wanted: usize,
    /// Recorded by a `stack up` still building: `deployment` is the service, whose first
    /// deployment starts with `wanted` instances.
    #[serde(default)]
    pub at_start: bool,
}

/// `PUT /v1/aliases/<host>` carries the alias; `DELETE` removes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AliasChange {
    Set { host: String, alias: Alias },
    Remove { host: String },
}

impl AliasChange {
    pub fn host(&self) -> &str {
        match self {
            AliasChange::Set { host, .. } | AliasChange::Remove { host } => host,
        }
    }

    /// Applies the change to a state (the caller saves it).
    pub fn apply_to(&self, state: &mut State) {
        match self {
            AliasChange::Set { host, alias } => {
                state.aliases.insert(host.clone(), alias.clone());
            }
            AliasChange::Remove { host } => {
                state.aliases.remove(host);
            }
        }
    }
}

/// Where an alias change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The running `stack up` validated it, saved it and swapped its routing table.
    Live,
    /// No `stack up` runs: saved in `.stack/state.json`; it applies at the next `stack up`.
    Recorded,
    /// The `stack up` is still building: saved in `.stack/state.json`, which it reads before
    /// it starts the services.
    AtStart,
}

/// What the alias commands call after validating the rules file themselves: the running
/// `stack up` checks every `dest` against its deployments, saves the state and swaps the
/// routing table in one step (all or nothing); without one, the change is recorded in the state.
pub fn apply_alias_change(
    project_dir: &Path,
    change: &AliasChange,
) -> Result<Applied, ControlError> {
    let client = Client::new(project_dir);
    match client.blocking_json::<_, serde_json::Value>("POST", "/v1/aliases", Some(change)) {
        Ok(answer) if answer["at_start"] == true => Ok(Applied::AtStart),
        Ok(_) => Ok(Applied::Live),
        Err(ControlError::NotRunning { .. }) => {
            let mut state = State::load(project_dir)?;
            change.apply_to(&mut state);
            state.save(project_dir)?;
            Ok(Applied::Recorded)
        }
        Err(error) => Err(error),
    }
}

/// A short age: `12s`, `5m`, `3h`, `2d`.
pub fn format_age(created_ms: u64, now_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(created_ms) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}
