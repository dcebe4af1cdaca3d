//! The control API: HTTP+JSON over the Unix socket `.stack/stack.sock` (mode 0600, so only
//! the user can connect), served by the running `stack up` and called by `stack ls`, `logs`,
//! `scale`, `rm`, `down`, `rollback`, `redis` and the alias commands.
//!
//! - [`api`]: the wire: one typed request and answer per route, paths percent-encoded.
//! - [`server`]: one router that hands each request to the [`crate::daemon::Daemon`].
//! - [`client`]: one typed method per route; [`ControlError::NotRunning`] when no `stack up`
//!   runs, so commands can fall back to what is on disk.
//! - [`lock`]: one `stack up` per project (`flock` on `.stack/lock`).
//! - [`apply_alias_change`]: what the alias commands call: live when `stack up` runs, else
//!   recorded in `.stack/state.json` for the next `stack up`.
//!
//! This module never starts processes and never touches the routing table itself.

pub mod api;
pub mod client;
pub mod lock;
pub mod server;

use std::path::{Path, PathBuf};

use crate::state::{self, Store};

pub use api::{AliasChange, Applied, DeploymentStatus};
pub use client::Client;

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

/// What the alias commands call after validating the rules file themselves: the running
/// `stack up` checks every `dest` against its deployments, saves the state and swaps the
/// routing table in one step (all or nothing); without one, the change is recorded in the state.
pub fn apply_alias_change(
    project_dir: &Path,
    change: &AliasChange,
) -> Result<Applied, ControlError> {
    let client = Client::new(project_dir);
    match client.blocking(client.change_alias(change.clone())) {
        Ok(answer) => Ok(answer.applied),
        Err(ControlError::NotRunning { .. }) => {
            Store::new(project_dir).update(|state| change.apply_to(state))?;
            Ok(Applied::Recorded)
        }
        Err(error) => Err(error),
    }
}
