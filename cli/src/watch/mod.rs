//! File changes to redeploys: watches each service's directory, the local path dependencies
//! of Cargo services (found once with `cargo metadata`) and the dotenv file, drops what is
//! noise (build output, VCS and editor temp files, whatever `.gitignore` ignores), and turns a
//! burst of saves into ONE [`ChangeSet`] naming the services to redeploy.
//!
//! It never builds, never starts processes and never touches the routing table: it only says
//! what changed. `daemon::redeploy` decides what to do about it.
//!
//! - [`filter`]: which paths are noise.
//! - [`deps`]: which directories belong to which service (`cargo metadata`).
//!
//! How a burst becomes one change set: notify's full debouncer stitches renames (an atomic save
//! is a write to a temp file and a rename over the original) and groups events per path; a
//! thread then keeps collecting batches until none arrived for the quiet period, so twenty saves
//! in 200 ms are one change set, and the next save after that is another.

pub mod deps;
pub mod filter;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

pub use deps::{watched_dirs, DepsError};
pub use filter::Filter;

/// The default quiet period: a burst of saves closer together than this is one change.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch `{path}`: {source}")]
    Watch { path: String, source: notify::Error },
    #[error("cannot start the file watcher: {0}")]
    Start(notify::Error),
    #[error(transparent)]
    Deps(#[from] DepsError),
}

/// A service and every directory whose files it is built from.
#[derive(Debug, Clone)]
pub struct WatchedService {
    pub name: String,
    pub dirs: Vec<PathBuf>,
    /// `watch` of stack.toml as absolute globs: only paths it matches count (`None`: all).
    pub only: Option<globset::GlobSet>,
    /// `ignore` of stack.toml as absolute globs: paths it matches never count.
    pub ignore: Option<globset::GlobSet>,
}

/// What changed in one burst of saves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Services whose sources changed, by name.
    pub services: BTreeSet<String>,
    /// The dotenv file changed: every service redeploys with the new environment.
    pub dotenv: bool,
    /// `stack.toml` or an `env_file` changed (checked, then applied to what it changed).
    pub config: bool,
    /// The changed paths that counted (for logs), sorted.
    pub paths: BTreeSet<PathBuf>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.dotenv && !self.config
    }

    /// Adds another change set (a change that arrived during a build).
    pub fn merge(&mut self, other: ChangeSet) {
        self.services.extend(other.services);
        self.dotenv |= other.dotenv;
        self.config |= other.config;
        self.paths.extend(other.paths);
    }
}

/// Watches until dropped; change sets arrive on the receiver returned by [`Watcher::start`].
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub services: Vec<WatchedService>,
    pub dotenv: Option<PathBuf>,
    /// The project's `stack.toml` (it may not exist yet) and each `env_file` it names: a save
    /// of any of them is a `config` change.
    pub config: Vec<PathBuf>,
    /// A burst ends after this long without a relevant event.
    pub quiet: Duration,
}

impl Watcher {
    /// Starts watching. Directories that do not exist are skipped (a service named by path
    /// may have none of its own); a missing dotenv file is watched through its directory.
    pub fn start(
        config: WatchConfig,
    ) -> Result<(Watcher, mpsc::UnboundedReceiver<ChangeSet>), WatchError> {
        let services: Vec<WatchedService> = config
            .services
            .iter()
            .map(|service| WatchedService {
                name: service.name.clone(),
                dirs: service
                    .dirs
                    .iter()
                    .filter_map(|dir| dir.canonicalize().ok())
                    .collect(),
                only: service.only.clone(),
                ignore: service.ignore.clone(),
            })
            .collect();
        let dotenv = config.dotenv.as_ref().map(|file| absolute_file(file));
        let config_files: Vec<PathBuf> = config
            .config
            .iter()
            .map(|file| absolute_file(file))
            .collect();
        let roots = watch_roots(&services);
        let filter = Filter::new(&roots);

        let (raw_tx, raw_rx) = std_mpsc::channel::<DebounceEventResult>();
        // The debouncer only stitches renames and groups per path; bursts are merged below.
        let debounce = (config.quiet / 5).max(Duration::from_millis(10));
        let mut debouncer = new_debouncer(debounce, None, raw_tx).map_err(WatchError::Start)?;
        for root in &roots {
            debouncer
                .watch(root, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch {
                    path: root.display().to_string(),
                    source,
                })?;
        }
        // A single file is watched through its directory (an atomic save replaces the file).
        let mut parents: Vec<&Path> = Vec::new();
        for file in dotenv.iter().chain(&config_files) {
            let parent = file.parent().unwrap_or(Path::new("/"));
            let covered = roots.iter().any(|root| parent.starts_with(root));
            if !covered && !parents.contains(&parent) {
                parents.push(parent);
                debouncer
                    .watch(parent, RecursiveMode::NonRecursive)
                    .map_err(|source| WatchError::Watch {
                        path: parent.display().to_string(),
                        source,
                    })?;
            }
        }

        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let classifier = Classifier {
            services,
            dotenv,
            config: config_files,
            filter,
        };
        let quiet = config.quiet;
        std::thread::Builder::new()
            .name("stack-watch".into())
            .spawn(move || coalesce(raw_rx, classifier, quiet, changes_tx))
            .map_err(|error| WatchError::Start(notify::Error::io(error)))?;
        Ok((
            Watcher {
                _debouncer: debouncer,
            },
            changes_rx,
        ))
    }
}

/// The dotenv file as an absolute path, its directory canonicalised (the file may not exist).
fn absolute_file(file: &Path) -> PathBuf {
    let parent = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    let parent = parent
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let parent = parent.canonicalize().unwrap_or(parent);
    match file.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    }
}

/// Every service directory, without those inside another one (watching both would double
/// the inotify watches for nothing).
fn watch_roots(services: &[WatchedService]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = services
        .iter()
        .flat_map(|service| service.dirs.iter().cloned())
        .collect();
    dirs.sort();
    dirs.dedup();
    let mut roots: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !roots.iter().any(|root| dir.starts_with(root)) {
            roots.push(dir);
        }
    }
    roots
}

/// Turns paths into services.
struct Classifier {
    services: Vec<WatchedService>,
    dotenv: Option<PathBuf>,
    config: Vec<PathBuf>,
    filter: Filter,
}

impl Classifier {
    /// Whether the path counted.
    fn add_path(&self, path: &Path, changes: &mut ChangeSet) -> bool {
        if self.dotenv.as_deref() == Some(path) {
            changes.dotenv = true;
            changes.paths.insert(path.to_path_buf());
            return true;
        }
        if self.config.iter().any(|file| file == path) {
            changes.config = true;
            changes.paths.insert(path.to_path_buf());
            return true;
        }
        if self.filter.is_ignored(path) {
            return false;
        }
        let mut counted = false;
        for service in &self.services {
            let watched = service
                .dirs
                .iter()
                .any(|dir| path.starts_with(dir) && !self.owned_deeper(service, dir, path))
                && service.only.as_ref().is_none_or(|only| only.is_match(path))
                && !service
                    .ignore
                    .as_ref()
                    .is_some_and(|ignore| ignore.is_match(path));
            if watched {
                changes.services.insert(service.name.clone());
                counted = true;
            }
        }
        if counted {
            changes.paths.insert(path.to_path_buf());
        }
        counted
    }

    /// Whether `path`, under `dir` of `service`, is in a directory of another service inside
    /// `dir`: that one owns it, so a service at the project's root (`path = "."`, a Procfile)
    /// does not rebuild for every save under `services/`. `watch` globs still see everything.
    fn owned_deeper(&self, service: &WatchedService, dir: &Path, path: &Path) -> bool {
        service.only.is_none()
            && self.services.iter().any(|other| {
                other.name != service.name
                    && other.dirs.iter().any(|deeper| {
                        deeper != dir && deeper.starts_with(dir) && path.starts_with(deeper)
                    })
            })
    }

    /// Whether any event of the batch counted.
    fn classify(&self, result: DebounceEventResult, changes: &mut ChangeSet) -> bool {
        let mut relevant = false;
        match result {
            Ok(events) => {
                for event in events {
                    if event.kind.is_access() {
                        continue;
                    }
                    for path in &event.paths {
                        relevant |= self.add_path(path, changes);
                    }
                }
            }
            Err(errors) => {
                for error in errors {
                    tracing::warn!(%error, "file watcher error");
                }
            }
        }
        relevant
    }
}

/// Collects debounced batches until `quiet` passes without a relevant one, then sends one
/// change set. Ends when the watcher is dropped or the receiver is gone.
fn coalesce(
    raw: std_mpsc::Receiver<DebounceEventResult>,
    classifier: Classifier,
    quiet: Duration,
    changes_tx: mpsc::UnboundedSender<ChangeSet>,
) {
    let mut pending = ChangeSet::default();
    let mut last_relevant = Instant::now();
    loop {
        let received = if pending.is_empty() {
            raw.recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected)
        } else {
            let left = quiet.saturating_sub(last_relevant.elapsed());
            raw.recv_timeout(left)
        };
        match received {
            Ok(result) => {
                // Every relevant event restarts the quiet period, repeated saves of one file too.
                if classifier.classify(result, &mut pending) {
                    last_relevant = Instant::now();
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                let changes = std::mem::take(&mut pending);
                tracing::debug!(services = ?changes.services, dotenv = changes.dotenv, "files changed");
                if changes_tx.send(changes).is_err() {
                    return;
                }
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests;
