//! The project's generated secrets: the `SESSION_SECRET` for a `stack up` that was given none,
//! and the managed Redis's password.
//!
//! The demo must run with no `.env` at all, yet the services refuse to start without a secret
//! (rightly: a default secret shipped in the binary would sign every user's cookies with the
//! same key). So the first `stack up` of a project writes 32 random bytes, hex-encoded, to
//! `.stack/session-secret` (mode 0600) and later ones reuse it, so sessions outlive `stack down`.
//! The managed Redis's password lives beside it in `.stack/redis-password`, so other users of
//! the machine cannot read or forge sessions through its loopback port. Values are never
//! printed; only the files' names are.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

const FILE_NAME: &str = "session-secret";
/// The managed Redis's password, under `.stack/`.
pub const REDIS_PASSWORD: &str = "redis-password";

/// `<project>/.stack/session-secret`.
pub fn path(stack_dir: &Path) -> PathBuf {
    stack_dir.join(FILE_NAME)
}

/// The project's generated session secret, if a `stack up` made one (never creates it).
pub fn load(stack_dir: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path(stack_dir)) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// The project's session secret, created on first use. `Ok(true)` in the second field when it
/// was made now.
pub fn load_or_create(stack_dir: &Path) -> io::Result<(String, bool)> {
    load_or_create_named(stack_dir, FILE_NAME)
}

/// The secret kept in `.stack/<name>` (mode 0600), created on first use.
pub fn load_or_create_named(stack_dir: &Path, name: &str) -> io::Result<(String, bool)> {
    let path = stack_dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    super::create_private_dir(stack_dir)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok((secret, true))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        let mode = fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again, first);
    }
}
