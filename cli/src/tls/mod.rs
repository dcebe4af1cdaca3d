//! Local HTTPS: the per-user certificate authority and the leaf certificates the proxy serves.
//!
//! Owns `$STACK_HOME` (default `$XDG_DATA_HOME/stack`, else `~/.local/share/stack`), the CA in
//! it (`ca.pem`, and `ca-key.pem`, mode 0600, whose contents never reach any output), the
//! checks on them, and the rustls server configuration that issues one leaf per SNI name on
//! the fly. The CA is name-constrained to `localhost` (and so every `*.localhost` name),
//! 127.0.0.0/8 and ::1: a leaked key can impersonate no other site. It never installs the CA
//! anywhere (that is `trust`, run only by `stack trust`) and never touches a socket.
//!
//! # Layout
//!
//! - `ca`: [`Ca`]: create on first use, load and check (permissions, corrupt, name
//!   constraints, expired), issue.
//! - `resolver`: [`LeafResolver`], rustls's certificate choice: a local SNI name gets its own
//!   leaf (ECDSA P-256, 30 days) from a bounded cache; no SNI or another name gets an alert.
//! - `trust`: `stack trust`: the system store, NSS databases, the macOS keychain.

mod ca;
mod resolver;
pub mod trust;

use std::path::PathBuf;
use std::sync::Arc;

pub use ca::{Ca, CA_CERT_FILE, CA_KEY_FILE, LEAF_VALIDITY};
pub use resolver::{is_local_name, LeafResolver};

/// The variable that moves stack's per-user directory (the CA lives there).
pub const STACK_HOME: &str = "STACK_HOME";

/// What can go wrong with the CA; each names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot create `{path}`: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read `{path}`: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "`{path}` can be read by other users (mode {mode:o}); it is the local CA's private key"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("`{path}` is not a valid {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("the local CA `{path}` has {found}: it must permit only `localhost` names, 127.0.0.0/8 and ::1")]
    Unconstrained { path: PathBuf, found: String },
    #[error("the local CA `{path}` expired on {expired}")]
    Expired { path: PathBuf, expired: String },
    #[error("`{path}` is there but `{missing}` is not")]
    HalfThere { path: PathBuf, missing: PathBuf },
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

impl TlsError {
    /// What to do about it, for the `Error!` line's second line.
    pub fn hint(&self) -> String {
        match self {
            Self::KeyPermissions { path, .. } => format!(
                "Run `chmod 600 {}` (and, if others may have copied it, delete both CA files, run `stack up` to make a new CA and `stack trust` again).",
                path.display()
            ),
            Self::Unreadable { path, .. } => format!(
                "Make `{}` readable by you (`chmod u+r`), or delete `ca.pem` and `ca-key.pem` in its directory to make a new CA.",
                path.display()
            ),
            Self::Corrupt { path, .. } | Self::Expired { path, .. } | Self::HalfThere { path, .. } => {
                let dir = path.parent().unwrap_or(path);
                format!(
                    "Delete `{}` and `{}`, then run `stack up` (a new CA is made) and `stack trust` again; `stack trust --uninstall` first removes the old one from the stores. Or run with `--no-https`.",
                    dir.join(CA_CERT_FILE).display(),
                    dir.join(CA_KEY_FILE).display()
                )
            }
            Self::Unconstrained { path, .. } => {
                let dir = path.parent().unwrap_or(path);
                format!(
                    "It was not made by stack, or was changed: run `stack trust --uninstall` (if `stack trust` installed it), delete `{}` and `{}`, then `stack trust` again (it makes a new CA). Or run with `--no-https`.",
                    dir.join(CA_CERT_FILE).display(),
                    dir.join(CA_KEY_FILE).display()
                )
            }
            Self::Create { .. } => {
                "Set `STACK_HOME` to a directory you can write, or run with `--no-https`.".into()
            }
            Self::Issue(_) => "Run with `--no-https`, and report it.".into(),
        }
    }
}

/// `$STACK_HOME`, else `$XDG_DATA_HOME/stack`, else `~/.local/share/stack`.
pub fn stack_home() -> PathBuf {
    if let Some(home) = std::env::var_os(STACK_HOME).filter(|home| !home.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|data| !data.is_empty()) {
        return PathBuf::from(data).join("stack");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/stack")
}

/// The crypto the proxy's TLS uses (ring, as redis's rustls does), chosen explicitly: the
/// process-wide default is whatever another crate installed first.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The proxy's TLS server configuration: leaves from `ca` per SNI name, ALPN `h2` then
/// `http/1.1`.
pub fn server_config(ca: Arc<Ca>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Issue(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LeafResolver::new(ca)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
