//! One `stack up` per project: an exclusive `flock` on `.stack/lock`, held for the life of the
//! process (the kernel drops it when the process dies, however it dies). The file holds the
//! holder's pid, for the message a second `stack up` prints.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a `stack up` is already running in `{dir}`{}", pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    Busy { dir: String, pid: Option<u32> },
    #[error("cannot lock `{path}`: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// Held while `stack up` runs; dropping it releases the lock.
#[derive(Debug)]
pub struct ProjectLock {
    _lock: Flock<File>,
}

fn open(stack_dir: &Path) -> Result<File, LockError> {
    let path = stack_dir.join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| LockError::Io {
            path,
            reason: error.to_string(),
        })
}

/// Takes the project's lock, or says who holds it.
pub fn acquire(project_dir: &Path, stack_dir: &Path) -> Result<ProjectLock, LockError> {
    let file = open(stack_dir)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let written = (|| -> io::Result<()> {
                lock.set_len(0)?;
                lock.rewind()?;
                write!(lock, "{}", std::process::id())?;
                lock.flush()
            })();
            if let Err(error) = written {
                tracing::warn!(%error, "cannot write the pid into the lock file");
            }
            Ok(ProjectLock { _lock: lock })
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(LockError::Busy {
                dir: project_dir.display().to_string(),
                pid: text.trim().parse().ok(),
            })
        }
        Err((_, errno)) => Err(LockError::Io {
            path: stack_dir.join(LOCK_FILE),
            reason: errno.desc().to_string(),
        }),
    }
}

/// Whether some `stack up` holds the lock right now.
pub fn is_held(stack_dir: &Path) -> bool {
    if !stack_dir.join(LOCK_FILE).exists() {
        return false;
    }
    let Ok(file) = open(stack_dir) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => false,
        Err((_, errno)) => errno == Errno::EWOULDBLOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), dir.path()).unwrap();
        assert!(is_held(dir.path()));
        match acquire(dir.path(), dir.path()).unwrap_err() {
            LockError::Busy { pid, .. } => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        drop(held);
        assert!(!is_held(dir.path()));
        acquire(dir.path(), dir.path()).unwrap();
    }
}
