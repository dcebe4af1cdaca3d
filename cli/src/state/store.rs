//! The one writer of `.stack/state.json`: [`Store::update`] reads the state, lets a closure
//! change it and writes it back, all under one lock.
//!
//! The lock is an exclusive `flock` on `.stack/state.lock`, taken anew by each update, so it
//! orders writers in this process (the control routes, the redeployer, the start) and writers
//! in other processes (`stack alias` or `stack scale` with no `stack up` running) alike: no
//! read-modify-write ever loses another's change. Readers need no lock: the file is replaced
//! whole by a rename, so they see the old state or the new one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::{State, StateError, STATE_DIR};

const LOCK_FILE: &str = "state.lock";

/// A project's state file, for reading and for locked updates. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    project_dir: PathBuf,
}

impl Store {
    pub fn new(project_dir: &Path) -> Store {
        Store {
            project_dir: project_dir.to_path_buf(),
        }
    }

    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// The state as it is now (a missing file is an empty state).
    pub fn load(&self) -> Result<State, StateError> {
        State::load(&self.project_dir)
    }

    /// Reads the state, applies `change` and writes the result atomically, holding the lock
    /// from the read to the rename. Nothing is written when `change` changed nothing.
    pub fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> Result<T, StateError> {
        self.try_update(|state| Ok::<_, StateError>(change(state)))
    }

    /// [`Store::update`] for a change that can fail: on `Err` nothing is written, so a change
    /// is saved whole or not at all.
    pub fn try_update<T, E: From<StateError>>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> Result<T, E> {
        let _lock = self.lock()?;
        let mut state = self.load()?;
        let before = state.to_text();
        let answer = change(&mut state)?;
        let after = state.to_text();
        if after != before {
            state.write(&self.project_dir, &after)?;
        }
        Ok(answer)
    }

    fn lock(&self) -> Result<Flock<File>, StateError> {
        let path = self.project_dir.join(STATE_DIR).join(LOCK_FILE);
        let lock_error = |source| StateError::Lock {
            path: path.clone(),
            source,
        };
        super::create_private_dir(&self.project_dir.join(STATE_DIR)).map_err(lock_error)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(lock_error)?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| lock_error(std::io::Error::from(errno)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::new(dir.path()));
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..25 {
                        store
                            .update(|state| state.set_scale(&format!("s{thread}-{n}"), 2))
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(store.load().unwrap().scale.len(), 200);
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let answer = store.update(|state| state.scale.len()).unwrap();
        assert_eq!(answer, 0);
        assert!(!State::path(dir.path()).exists());
        store.update(|state| state.set_scale("reader", 3)).unwrap();
        assert_eq!(store.load().unwrap().scale["reader"], 3);
        let failed: Result<(), StateError> = store.try_update(|state| {
            state.set_scale("reader", 5);
            Err(StateError::Lock {
                path: "x".into(),
                source: std::io::Error::other("refused"),
            })
        });
        assert!(failed.is_err());
        assert_eq!(
            store.load().unwrap().scale["reader"],
            3,
            "a failed change saves nothing"
        );
    }
}
