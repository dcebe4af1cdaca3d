//! The Redis the services get: the managed `redis-server` when `REDIS_SESSION_URL` is unset
//! (started alongside the first build), else a PING of the user's, so a wrong URL or password is
//! a warning at start rather than a 503 later. The password never shows: URLs print masked.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use session::redis_url::{load_tls_ca_file, RedisUrl};

use crate::env;
use crate::output::{self, CliError, CliResult};
use crate::redis::managed::ManagedRedis;
use crate::redis::ping::{ping, PingOutcome};

/// The CA file the services trust a `rediss://` Redis with (the session crate reads it too).
const REDIS_TLS_CA_FILE: &str = "REDIS_TLS_CA_FILE";

/// The managed Redis when the environment names none (else `None`, after probing the user's).
pub async fn start(
    stack_dir: &Path,
    pids_dir: &Path,
    logs_dir: &Path,
    service_env: &BTreeMap<String, String>,
) -> CliResult<Option<ManagedRedis>> {
    match service_env.get(env::REDIS_SESSION_URL) {
        Some(url) => {
            probe(url, service_env.get(REDIS_TLS_CA_FILE).map(String::as_str)).await?;
            Ok(None)
        }
        None => ManagedRedis::start(stack_dir, pids_dir, logs_dir, service_env.clone())
            .await
            .map(Some)
            .map_err(|error| CliError::new(error.to_string()).hint(error.hint())),
    }
}

/// A Redis URL as it may be shown: its password masked.
pub fn shown(url: &str) -> String {
    RedisUrl::parse(url).map_or_else(
        |_| "(a Redis URL that does not parse)".into(),
        |url| url.to_string(),
    )
}

/// PINGs a Redis the user brought; a warning (masked URL) when it does not answer. A URL that
/// does not parse is an error (described, never echoed).
async fn probe(url: &str, ca_file: Option<&str>) -> CliResult<()> {
    let url = RedisUrl::parse(url).map_err(|error| {
        CliError::new(format!("`REDIS_SESSION_URL` is invalid: {error}")).hint(
            "Use redis://host:6379, redis://:password@host:6379/0, unix:///path/to/redis.sock, redis-sentinel://host:26379,host:26380#mymaster, redis-cluster://host:7000,host:7001, or unset it for a managed Redis.",
        )
    })?;
    // A `rediss://` server is trusted as the services will trust it.
    let url = match ca_file.map(str::trim).filter(|path| !path.is_empty()) {
        Some(path) if url.is_tls() => match load_tls_ca_file(Path::new(path)) {
            Ok(pem) => url.with_tls_ca(pem),
            Err(error) => {
                output::warn(format!(
                    "`REDIS_TLS_CA_FILE` is unusable: {error}; the services cannot reach Redis at {url} until it is fixed"
                ));
                return Ok(());
            }
        },
        _ => url,
    };
    match ping(&url, Duration::from_secs(2)).await {
        PingOutcome::Answers => output::info(format!("Redis at {url} (REDIS_SESSION_URL) answers")),
        PingOutcome::Fails(reason) => output::warn(format!(
            "Redis at {url} (REDIS_SESSION_URL) does not answer ({reason}); the services answer 503 until it does"
        )),
    }
    Ok(())
}
