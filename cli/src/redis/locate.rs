//! Which Redis `stack redis` looks at, and the secrets it verifies cookies with.
//!
//! Owns the order of the sources: the running `stack up` of the project (asked over the control
//! socket, so the managed Redis needs no configuration), else `REDIS_SESSION_URL` from the
//! `--dotenv` file, else from the process environment, else `redis://127.0.0.1:6379`; and
//! `SESSION_SECRET` from the same dotenv file or the environment. It never connects to Redis,
//! never prints, and its errors name variables and files, never their values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use session::cookie::{Secrets, SecretsError};
use session::redis_url::{RedisUrl, RedisUrlError, DEFAULT_URL};

use crate::control::{lock, Client, ControlError};
use crate::env::{self, REDIS_SESSION_URL, SESSION_SECRET};
use crate::state::STATE_DIR;

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("`{file}` cannot be used ({n} problem(s), values are never printed):\n{details}")]
    Dotenv {
        file: String,
        n: usize,
        details: String,
    },
    #[error("`REDIS_SESSION_URL` ({source_name}) is invalid: {error}")]
    BadUrl {
        source_name: String,
        error: RedisUrlError,
    },
    #[error("`SESSION_SECRET` ({source_name}) is invalid: {error}")]
    BadSecret {
        source_name: String,
        error: SecretsError,
    },
    #[error("the `stack up` in `{dir}` is still starting, so the Redis its services use is not known yet")]
    StackUpStarting { dir: String },
}

impl LocateError {
    pub fn hint(&self) -> &'static str {
        match self {
            LocateError::Dotenv { .. } => {
                "Fix the lines above (`KEY=VALUE`), or leave out `--dotenv`."
            }
            LocateError::BadUrl { .. } => {
                "Use a form such as redis://127.0.0.1:6379, redis://:password@host:6379/0, unix:///path/to/redis.sock, redis-sentinel://host:26379,host:26380#mymaster or redis-cluster://host:7000,host:7001."
            }
            LocateError::BadSecret { .. } => {
                "Set SESSION_SECRET to the secret your services sign cookies with (a comma-separated list when rotating)."
            }
            LocateError::StackUpStarting { .. } => {
                "Run this again once `stack up` prints `> Ready!` (it answers once its build, Redis and proxy are up)."
            }
        }
    }
}

/// Where the URL came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// The running `stack up` (managed or its own `REDIS_SESSION_URL`).
    StackUp,
    /// `REDIS_SESSION_URL` in this dotenv file.
    Dotenv(PathBuf),
    /// `REDIS_SESSION_URL` in the process environment.
    Environment,
    /// Nothing said otherwise: [`DEFAULT_URL`].
    Default,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::StackUp => f.write_str("the running `stack up`"),
            UrlSource::Dotenv(path) => write!(f, "REDIS_SESSION_URL in `{}`", path.display()),
            UrlSource::Environment => f.write_str("REDIS_SESSION_URL in the environment"),
            UrlSource::Default => f.write_str("the default; REDIS_SESSION_URL is unset"),
        }
    }
}

/// The Redis to inspect.
#[derive(Debug, Clone)]
pub struct Located {
    pub url: RedisUrl,
    pub source: UrlSource,
    /// The running `stack up`'s `SESSION_SECRET` (the one its services sign with), when it is
    /// the one that answered.
    pub stack_secrets: Option<SecretList>,
}

/// The variables `stack redis` reads: the dotenv file's values over the process environment's.
#[derive(Debug, Default)]
pub struct Variables {
    dotenv_path: Option<PathBuf>,
    dotenv: BTreeMap<String, String>,
    process: BTreeMap<String, String>,
}

impl Variables {
    /// Reads `dotenv` (relative to `project_dir`; every bad line at once) and the environment.
    pub fn load(project_dir: &Path, dotenv: Option<&Path>) -> Result<Self, LocateError> {
        let process = [REDIS_SESSION_URL, SESSION_SECRET]
            .into_iter()
            .filter_map(|name| {
                std::env::var(name)
                    .ok()
                    .map(|value| (name.to_owned(), value))
            })
            .collect();
        let Some(file) = dotenv else {
            return Ok(Self {
                process,
                ..Self::default()
            });
        };
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            project_dir.join(file)
        };
        let pairs = env::read_dotenv(&path).map_err(|errors| LocateError::Dotenv {
            file: path.display().to_string(),
            n: errors.0.len(),
            details: errors.to_string(),
        })?;
        Ok(Self {
            dotenv_path: Some(path),
            dotenv: pairs.into_iter().collect(),
            process,
        })
    }

    /// Builds the set from explicit maps (tests).
    pub fn from_maps(
        dotenv: Option<(PathBuf, BTreeMap<String, String>)>,
        process: BTreeMap<String, String>,
    ) -> Self {
        let (dotenv_path, dotenv) = match dotenv {
            Some((path, values)) => (Some(path), values),
            None => (None, BTreeMap::new()),
        };
        Self {
            dotenv_path,
            dotenv,
            process,
        }
    }

    /// A non-empty value and where it came from (dotenv first, as `stack up` merges them).
    fn get(&self, name: &str) -> Option<(&str, String)> {
        let non_empty = |value: &&String| !value.trim().is_empty();
        if let Some(value) = self.dotenv.get(name).filter(non_empty) {
            let file = self
                .dotenv_path
                .as_ref()
                .map(|path| format!("in `{}`", path.display()))
                .unwrap_or_default();
            return Some((value, file));
        }
        self.process
            .get(name)
            .filter(non_empty)
            .map(|value| (value.as_str(), "in the environment".to_owned()))
    }

    /// The Redis from the variables alone (no `stack up` asked).
    pub fn redis(&self) -> Result<Located, LocateError> {
        let parse = |text: &str, source_name: String| {
            RedisUrl::parse(text).map_err(|error| LocateError::BadUrl { source_name, error })
        };
        if let Some(value) = self.dotenv.get(REDIS_SESSION_URL) {
            if !value.trim().is_empty() {
                let path = self.dotenv_path.clone().unwrap_or_default();
                let url = parse(value, format!("in `{}`", path.display()))?;
                return Ok(Located {
                    url,
                    source: UrlSource::Dotenv(path),
                    stack_secrets: None,
                });
            }
        }
        match self.process.get(REDIS_SESSION_URL) {
            Some(value) if !value.trim().is_empty() => Ok(Located {
                url: parse(value, "in the environment".into())?,
                source: UrlSource::Environment,
                stack_secrets: None,
            }),
            _ => Ok(Located {
                url: RedisUrl::parse(DEFAULT_URL).expect("the default URL is valid"),
                source: UrlSource::Default,
                stack_secrets: None,
            }),
        }
    }

    /// `SESSION_SECRET` as a secret list, `None` when unset.
    pub fn secrets(&self) -> Result<Option<SecretList>, LocateError> {
        let Some((value, source_name)) = self.get(SESSION_SECRET) else {
            return Ok(None);
        };
        SecretList::parse(value)
            .map(Some)
            .map_err(|error| LocateError::BadSecret { source_name, error })
    }
}

impl SecretList {
    /// A `SESSION_SECRET` value: one secret, or a comma-separated rotation list.
    pub fn parse(value: &str) -> Result<SecretList, SecretsError> {
        let all = Secrets::parse(value)?;
        let each = value.split(',').map(|one| Secrets::new([one])).collect();
        Ok(SecretList { all, each })
    }
}

/// The secrets, as one rotation list and one by one (to say which one signed a cookie).
#[derive(Clone)]
pub struct SecretList {
    pub all: Secrets,
    pub each: Vec<Secrets>,
}

impl fmt::Debug for SecretList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretList({} secret(s): ***)", self.each.len())
    }
}

/// The running `stack up`'s Redis, then the variables'. A `stack up` too old to answer the
/// route, or a socket that fails, falls back to the variables (logged, not fatal). A `stack up`
/// that is still starting (it says so on its socket while it builds and starts Redis, or holds
/// the project's lock but has not bound the socket yet) is waited for up to [`STARTING_WAIT`],
/// then refused: falling back then would show another Redis than the one its services use.
pub fn locate(project_dir: &Path, variables: &Variables) -> Result<Located, LocateError> {
    let client = Client::new(project_dir);
    let deadline = Instant::now() + STARTING_WAIT;
    loop {
        // The URL carries the password (the socket is the user's own, mode 0600): it stays
        // inside a `RedisUrl`, whose `Display` masks it.
        match client.blocking(client.redis()) {
            Ok(info) => match RedisUrl::parse(&info.url) {
                Ok(url) => {
                    return Ok(Located {
                        url,
                        source: UrlSource::StackUp,
                        stack_secrets: info
                            .session_secret
                            .as_deref()
                            .and_then(|value| SecretList::parse(value).ok()),
                    })
                }
                Err(error) => {
                    tracing::warn!(%error, "the running stack up sent a Redis URL that does not parse")
                }
            },
            Err(ControlError::NotRunning { .. })
                if !lock::is_held(&project_dir.join(STATE_DIR)) => {}
            // Starting: it says so, or holds the lock and has not bound its socket yet.
            Err(ControlError::NotRunning { .. } | ControlError::Starting { .. }) => {
                if Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                return Err(LocateError::StackUpStarting {
                    dir: project_dir.display().to_string(),
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot ask the running stack up for its Redis; using the environment")
            }
        }
        return variables.redis();
    }
}

/// How long a command waits for a starting `stack up` to know its Redis.
const STARTING_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(dotenv: &[(&str, &str)], process: &[(&str, &str)]) -> Variables {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        Variables::from_maps(
            (!dotenv.is_empty()).then(|| (PathBuf::from(".env"), map(dotenv))),
            map(process),
        )
    }

    fn check(variables: Variables, shown: &str, source: UrlSource) {
        let located = variables.redis().expect("valid");
        assert_eq!(located.url.to_string(), shown);
        assert_eq!(located.source, source);
    }

    #[test]
    fn dotenv_then_environment_then_default() {
        check(vars(&[], &[]), "redis://127.0.0.1:6379", UrlSource::Default);
        check(
            vars(&[], &[(REDIS_SESSION_URL, "redis://:pw@h:1")]),
            "redis://:***@h:1",
            UrlSource::Environment,
        );
        check(
            vars(
                &[(REDIS_SESSION_URL, "redis://d:2")],
                &[(REDIS_SESSION_URL, "redis://e:1")],
            ),
            "redis://d:2",
            UrlSource::Dotenv(PathBuf::from(".env")),
        );
        check(
            vars(
                &[(REDIS_SESSION_URL, " ")],
                &[(REDIS_SESSION_URL, "redis://e:1")],
            ),
            "redis://e:1",
            UrlSource::Environment,
        );
        check(
            vars(&[], &[(REDIS_SESSION_URL, "")]),
            "redis://127.0.0.1:6379",
            UrlSource::Default,
        );
    }

    #[test]
    fn bad_url_names_its_source_never_the_password() {
        let error = vars(&[], &[(REDIS_SESSION_URL, "http://:canary-pw@h:1")])
            .redis()
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("in the environment"), "{text}");
        assert!(!text.contains("canary-pw"), "{text}");
    }

    #[test]
    fn secrets_come_from_dotenv_first_and_are_never_shown() {
        assert!(vars(&[], &[]).secrets().expect("valid").is_none());
        let list = vars(
            &[(SESSION_SECRET, "new-canary,old-canary")],
            &[(SESSION_SECRET, "env")],
        )
        .secrets()
        .expect("valid")
        .expect("set");
        assert_eq!(list.each.len(), 2);
        assert!(list.each[1]
            .unsign(&session::cookie::sign("abc", "old-canary"))
            .is_some());
        assert!(!format!("{list:?}").contains("canary"));
        let error = vars(&[], &[(SESSION_SECRET, "a,,b")])
            .secrets()
            .unwrap_err();
        assert!(error.to_string().contains("position 2"), "{error}");
    }
}
