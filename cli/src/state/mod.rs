//! What persists in `.stack/`: aliases, scale and deployment history in `.stack/state.json`.
//!
//! Only [`Store::update`] writes the file: one lock from read to rename, and the write is
//! atomic (a unique temp file in the same directory, fsync, rename), so a crash never leaves
//! half a file. It is read leniently (missing file or section = empty). This module owns the
//! file format; it never starts processes and never talks to the running `stack up`.

pub mod aliases;
pub mod deployments;
pub mod secret;
pub mod store;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aliases::Alias;
pub use deployments::ServiceHistory;
pub use store::Store;

/// The directory under the project root where stack keeps everything it owns.
pub const STATE_DIR: &str = ".stack";
const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("`{path}` is not valid state ({source}); move it aside and run the command again")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock `{path}`: {source}")]
    Lock { path: PathBuf, source: io::Error },
}

/// Everything `.stack/state.json` holds. Each section belongs to one module; unknown sections
/// written by a newer stack are kept on save.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Alias host (lower case) to what it points at.
    #[serde(default)]
    pub aliases: BTreeMap<String, Alias>,
    /// Wanted instance count per service, when it differs from 1.
    #[serde(default)]
    pub scale: BTreeMap<String, usize>,
    /// Deployment history per service.
    #[serde(default)]
    pub deployments: BTreeMap<String, ServiceHistory>,
    /// The proxy's port at the last `stack up`, for the URLs shown while none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_port: Option<u16>,
    /// The proxy's HTTPS port at the last `stack up` (`None`: it served none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_port: Option<u16>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl State {
    /// Records that `service` runs `instances` (1, the default, is not stored).
    pub fn set_scale(&mut self, service: &str, instances: usize) {
        if instances == 1 {
            self.scale.remove(service);
        } else {
            self.scale.insert(service.to_string(), instances);
        }
    }

    /// Forgets what `stack scale` recorded for `service` (its `stack.toml` says again).
    pub fn forget_scale(&mut self, service: &str) {
        self.scale.remove(service);
    }

    /// How many instances `service` runs (1 unless recorded otherwise).
    pub fn scale_of(&self, service: &str) -> usize {
        self.recorded_scale(service).unwrap_or(1)
    }

    /// The scale `stack scale` recorded for `service`, if any.
    pub fn recorded_scale(&self, service: &str) -> Option<usize> {
        self.scale.get(service).copied()
    }

    /// A service's current deployment, or a deployment id, as recorded (`<name>.localhost`
    /// works too).
    pub fn resolve_deployment(&self, target: &str) -> Option<String> {
        let target = target.strip_suffix(".localhost").unwrap_or(target);
        if let Some(history) = self.deployments.get(target) {
            return history.current.clone();
        }
        self.deployments
            .values()
            .flat_map(|history| &history.deployments)
            .find(|record| record.id == target)
            .map(|record| record.id.clone())
    }

    /// `<project>/.stack/state.json`.
    pub fn path(project_dir: &Path) -> PathBuf {
        project_dir.join(STATE_DIR).join(STATE_FILE)
    }

    /// Reads the state of a project; a missing file is an empty state.
    pub fn load(project_dir: &Path) -> Result<State, StateError> {
        let path = Self::path(project_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| StateError::Parse { path, source })
    }

    /// The file's text.
    fn to_text(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("state is plain data and always serialises");
        text.push('\n');
        text
    }

    /// Writes `text` (this state's) atomically; only [`Store::update`] calls it, under its lock.
    fn write(&self, project_dir: &Path, text: &str) -> Result<(), StateError> {
        let path = Self::path(project_dir);
        write_atomically(&path, text.as_bytes())
            .map_err(|source| StateError::Write { path, source })
    }
}

/// Creates `dir` (and its parents) if missing and makes it mode 0700: `.stack/` holds the
/// control socket, the secrets, the logs and the managed Redis's files, none of them for other
/// users of the machine.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` through a uniquely named temp file in the same directory (mode
/// 0600), fsync and a rename: readers see the old file or the new one, never a mix, and two
/// writers never share a temp file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("state");
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_state_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(State::load(dir.path()).unwrap().aliases.is_empty());
        Store::new(dir.path())
            .update(|state| {
                state.scale.insert("reader".into(), 2);
                state
                    .other
                    .insert("future".into(), serde_json::json!({"kept": true}));
            })
            .unwrap();
        let again = State::load(dir.path()).unwrap();
        assert_eq!(again.scale.get("reader"), Some(&2));
        assert_eq!(again.other["future"], serde_json::json!({"kept": true}));
    }
}
