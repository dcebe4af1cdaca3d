//! The environment every instance gets (its `PORT` aside), made in one place,
//! [`ServiceEnv::assemble`], by the start and by every reload after a `.env` save: so a
//! redeploy gets exactly what the first start got, the generated secret included.
//!
//! Layers, later winning: the caller's environment, the dotenv file, each `-e KEY=VALUE`. Then
//! a blank `REDIS_SESSION_URL` (as `.env.example` has it) means "manage one for me" and is
//! dropped, the managed Redis's URL fills it when there is one, and a missing or blank
//! `SESSION_SECRET` becomes the project's generated one (`.stack/session-secret`). With HTTPS
//! on, `STACK_CA_FILE` names the local CA's certificate, and `NODE_EXTRA_CA_CERTS` too unless
//! one file with the caller's certificates and the CA's when the caller set one (Node adds that
//! file to its roots, never replaces them), so a service's own calls to `https://*.localhost`
//! validate.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::{self, EnvErrors, REDIS_SESSION_URL, SESSION_SECRET};
use crate::state::secret;

/// Where the environment comes from besides the caller's: `--dotenv` and `-e`.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    /// The dotenv file, absolute.
    pub dotenv: Option<PathBuf>,
    /// Each `-e KEY=VALUE`, as given.
    pub assignments: Vec<String>,
    /// The local CA's certificate (`ca.pem`), when the proxy serves HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// The local CA's certificate, for a service's own TLS clients.
pub const STACK_CA_FILE: &str = "STACK_CA_FILE";
/// The extra roots Node reads at start.
pub const NODE_EXTRA_CA_CERTS: &str = "NODE_EXTRA_CA_CERTS";

/// Where `SESSION_SECRET` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The environment, the dotenv file or `-e`.
    Given,
    /// The project's generated secret; `created` when this call made it.
    Generated { created: bool },
}

/// Why there is no environment to start with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceEnvError {
    /// Bad lines in the dotenv file or bad `-e` pairs, every one (never a value).
    #[error("{0}")]
    Invalid(EnvErrors),
    #[error("`SESSION_SECRET` is not set and `{path}` cannot be written: {source}")]
    Secret { path: PathBuf, source: io::Error },
}

/// The merged environment of the services.
#[derive(Debug, Clone)]
pub struct ServiceEnv {
    pub vars: BTreeMap<String, String>,
    pub secret: SecretSource,
}

impl ServiceEnv {
    /// Reads the sources and merges them (see the module docs); `managed_redis` is the URL of
    /// the managed Redis, when one runs.
    pub fn assemble(
        stack_dir: &Path,
        sources: &EnvSources,
        managed_redis: Option<&str>,
    ) -> Result<ServiceEnv, ServiceEnvError> {
        let mut errors = Vec::new();
        let dotenv = match &sources.dotenv {
            Some(path) => env::read_dotenv(path).unwrap_or_else(|EnvErrors(found)| {
                errors.extend(found);
                Vec::new()
            }),
            None => Vec::new(),
        };
        let assignments =
            env::parse_assignments(&sources.assignments).unwrap_or_else(|EnvErrors(found)| {
                errors.extend(found);
                Vec::new()
            });
        if !errors.is_empty() {
            return Err(ServiceEnvError::Invalid(EnvErrors(errors)));
        }
        let mut vars = env::merge(env::caller_environment(), [&dotenv, &assignments]);
        if vars
            .get(REDIS_SESSION_URL)
            .is_some_and(|url| url.trim().is_empty())
        {
            vars.remove(REDIS_SESSION_URL);
        }
        if let Some(url) = managed_redis {
            vars.entry(REDIS_SESSION_URL.into())
                .or_insert_with(|| url.to_string());
        }
        if let Some(ca_file) = &sources.ca_file {
            let node_extra = node_extra_ca_certs(stack_dir, ca_file, vars.get(NODE_EXTRA_CA_CERTS));
            vars.insert(NODE_EXTRA_CA_CERTS.into(), node_extra);
            vars.insert(STACK_CA_FILE.into(), ca_file.display().to_string());
        }
        let secret = if vars
            .get(SESSION_SECRET)
            .is_none_or(|secret| secret.trim().is_empty())
        {
            let (value, created) =
                secret::load_or_create(stack_dir).map_err(|source| ServiceEnvError::Secret {
                    path: secret::path(stack_dir),
                    source,
                })?;
            vars.insert(SESSION_SECRET.into(), value);
            SecretSource::Generated { created }
        } else {
            SecretSource::Given
        };
        Ok(ServiceEnv { vars, secret })
    }

    /// The URL the services get, when `REDIS_SESSION_URL` is set (else a managed one is due).
    pub fn redis_url(&self) -> Option<&str> {
        self.vars.get(REDIS_SESSION_URL).map(String::as_str)
    }
}

/// The file for `NODE_EXTRA_CA_CERTS`: the CA's own, or, when the caller already names a file
/// (Node reads one), `.stack/node-extra-ca.pem` holding that file's certificates and the CA's,
/// so both stay trusted. If that cannot be made, the caller's file stays (and a warning says so).
fn node_extra_ca_certs(stack_dir: &Path, ca_file: &Path, given: Option<&String>) -> String {
    let ca = ca_file.display().to_string();
    let Some(given) = given.filter(|given| !given.trim().is_empty() && **given != ca) else {
        return ca;
    };
    let combined = stack_dir.join("node-extra-ca.pem");
    let written = std::fs::read_to_string(given)
        .and_then(|theirs| Ok((theirs, std::fs::read_to_string(ca_file)?)))
        .and_then(|(theirs, ours)| {
            std::fs::create_dir_all(stack_dir)?;
            crate::state::write_atomically(&combined, format!("{theirs}\n{ours}").as_bytes())
        });
    match written {
        Ok(()) => combined.display().to_string(),
        Err(error) => {
            tracing::warn!(%error, file = %given, "cannot add the local CA to NODE_EXTRA_CA_CERTS; Node services keep only that file");
            given.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path, dotenv: &str, assignments: &[&str]) -> EnvSources {
        let path = dir.join(".env");
        std::fs::write(&path, dotenv).unwrap();
        EnvSources {
            dotenv: Some(path),
            assignments: assignments.iter().map(|pair| pair.to_string()).collect(),
            ca_file: None,
        }
    }

    #[test]
    fn with_https_the_services_get_the_ca_and_node_keeps_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let stack_dir = dir.path().join(".stack");
        // Whatever the caller's environment holds, none here.
        let mut given = sources(dir.path(), "SESSION_SECRET=s\nNODE_EXTRA_CA_CERTS=\n", &[]);
        given.ca_file = Some(PathBuf::from("/home/me/.local/share/stack/ca.pem"));
        let env = ServiceEnv::assemble(&stack_dir, &given, None).unwrap();
        assert_eq!(
            env.vars[STACK_CA_FILE],
            "/home/me/.local/share/stack/ca.pem"
        );
        assert_eq!(
            env.vars[NODE_EXTRA_CA_CERTS],
            "/home/me/.local/share/stack/ca.pem"
        );

        // A file of the caller's own: its certificates and the CA's, in one file.
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, "STACK CA\n").unwrap();
        let corp = dir.path().join("corp.pem");
        std::fs::write(&corp, "CORP CA\n").unwrap();
        let dotenv = format!("SESSION_SECRET=s\nNODE_EXTRA_CA_CERTS={}\n", corp.display());
        let mut own = sources(dir.path(), &dotenv, &[]);
        own.ca_file = Some(ca_file.clone());
        let env = ServiceEnv::assemble(&stack_dir, &own, None).unwrap();
        let combined = std::fs::read_to_string(&env.vars[NODE_EXTRA_CA_CERTS]).unwrap();
        assert!(
            combined.contains("CORP CA") && combined.contains("STACK CA"),
            "{combined}"
        );
        assert_eq!(env.vars[STACK_CA_FILE], ca_file.display().to_string());

        let plain = ServiceEnv::assemble(
            &stack_dir,
            &sources(dir.path(), "SESSION_SECRET=s\n", &[]),
            None,
        )
        .unwrap();
        assert!(!plain.vars.contains_key(STACK_CA_FILE));
    }

    #[test]
    fn a_reload_gets_the_generated_secret_and_the_managed_redis_as_the_start_did() {
        let dir = tempfile::tempdir().unwrap();
        let stack_dir = dir.path().join(".stack");
        let start = ServiceEnv::assemble(
            &stack_dir,
            &sources(dir.path(), "REDIS_SESSION_URL=\n", &[]),
            None,
        )
        .unwrap();
        assert_eq!(start.secret, SecretSource::Generated { created: true });
        assert_eq!(
            start.redis_url(),
            None,
            "a blank URL asks for a managed Redis"
        );
        let managed = "redis://127.0.0.1:6390";
        let reload = ServiceEnv::assemble(
            &stack_dir,
            &sources(dir.path(), "REDIS_SESSION_URL=\nGREETING=hi\n", &[]),
            Some(managed),
        )
        .unwrap();
        assert_eq!(reload.secret, SecretSource::Generated { created: false });
        assert_eq!(reload.vars[SESSION_SECRET], start.vars[SESSION_SECRET]);
        assert_eq!(reload.redis_url(), Some(managed));
        assert_eq!(reload.vars["GREETING"], "hi");
    }

    #[test]
    fn later_layers_win_and_a_given_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let assembled = ServiceEnv::assemble(
            &dir.path().join(".stack"),
            &sources(
                dir.path(),
                "SESSION_SECRET=from-file\nREDIS_SESSION_URL=redis://h:1\nA=file\n",
                &["A=flag"],
            ),
            Some("redis://127.0.0.1:6390"),
        )
        .unwrap();
        assert_eq!(assembled.secret, SecretSource::Given);
        assert_eq!(assembled.vars[SESSION_SECRET], "from-file");
        assert_eq!(assembled.redis_url(), Some("redis://h:1"));
        assert_eq!(assembled.vars["A"], "flag");
        assert!(!dir.path().join(".stack").join("session-secret").exists());
    }

    #[test]
    fn every_bad_line_is_reported_and_no_value_is() {
        let dir = tempfile::tempdir().unwrap();
        let error = ServiceEnv::assemble(
            &dir.path().join(".stack"),
            &sources(dir.path(), "GOOD=1\nnot a pair canary-value\n", &["=x"]),
            None,
        )
        .unwrap_err();
        let ServiceEnvError::Invalid(EnvErrors(found)) = &error else {
            panic!("{error}");
        };
        assert_eq!(found.len(), 2, "{error}");
        assert!(!error.to_string().contains("canary-value"), "{error}");
    }
}
