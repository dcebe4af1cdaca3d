//! A session service's configuration from the environment: `HOST`, `PORT`, `REDIS_SESSION_URL`,
//! `REDIS_TLS_CA_FILE`, `SESSION_SECRET`, `SESSION_COOKIE_SECURE` and `SESSION_COOKIE_SAMESITE`.
//!
//! `SESSION_COOKIE_SECURE` is express-session's `cookie.secure`: `auto` (the demo's default:
//! `Secure` when the request came over HTTPS through a proxy on loopback, as stack's proxy
//! says with `X-Forwarded-Proto`), `true` or `false`. `SESSION_COOKIE_SAMESITE` is `lax`,
//! `strict` or `none`; unset, the cookie has no `SameSite` attribute, as express-session's.
//!
//! `REDIS_SESSION_URL=rediss://...` connects over TLS, verifying the server against the bundled
//! webpki roots; `REDIS_TLS_CA_FILE=/path/ca.pem` trusts that PEM file's CA certificates instead
//! (for a local Redis with a self-signed certificate). Setting `REDIS_TLS_CA_FILE` without a
//! `rediss://` URL is an error, so a mistaken plain-text URL is not silently trusted.
//!
//! Owns reading and checking those variables, with errors that name the variable and say what
//! to do. It never shows a secret: errors name variables, never their values (a bad Redis URL is
//! described, not echoed).

use crate::cookie::{CookieOptions, CookieSecure, SameSite, Secrets, SecretsError};
use crate::redis_url::{load_tls_ca_file, RedisUrl, RedisUrlError, TlsCaError, DEFAULT_URL};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("`SESSION_SECRET` is not set")]
    MissingSecret,
    #[error("{0}")]
    BadSecret(#[from] SecretsError),
    #[error("`REDIS_SESSION_URL` is invalid: {0}")]
    BadRedisUrl(#[from] RedisUrlError),
    #[error("`REDIS_TLS_CA_FILE` is unusable: {0}")]
    BadTlsCaFile(#[from] TlsCaError),
    #[error("`REDIS_TLS_CA_FILE` is set but `REDIS_SESSION_URL` does not use TLS (rediss://)")]
    TlsCaWithoutTls,
    #[error("`PORT` is `{value}`, not a port number")]
    BadPort { value: String },
    #[error("`HOST` is `{value}`, not an IP address")]
    BadHost { value: String },
    #[error("`SESSION_COOKIE_SECURE` is `{value}`, not `auto`, `true` or `false`")]
    BadCookieSecure { value: String },
    #[error("`SESSION_COOKIE_SAMESITE` is `{value}`, not `lax`, `strict` or `none`")]
    BadSameSite { value: String },
}

impl ConfigError {
    /// The line that tells the user what to do.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::MissingSecret | Self::BadSecret(_) => {
                "Set SESSION_SECRET to a long random string (a comma-separated list rotates secrets: the first signs, all verify)."
            }
            Self::BadRedisUrl(_) => {
                "Use a form such as redis://host:6379, redis://:password@host:6379/0, unix:///path/to/redis.sock, redis-sentinel://:password@host:26379,host:26380/0#mymaster, redis-cluster://:password@host:7000,host:7001, or unset it for redis://127.0.0.1:6379."
            }
            Self::BadTlsCaFile(_) => {
                "Point REDIS_TLS_CA_FILE at a readable PEM file holding the CA certificate that signed the Redis server's certificate, or unset it to trust the public CA roots."
            }
            Self::TlsCaWithoutTls => {
                "Use a rediss:// URL for REDIS_SESSION_URL, or unset REDIS_TLS_CA_FILE."
            }
            Self::BadPort { .. } => "Set PORT to a number from 0 to 65535, or unset it.",
            Self::BadHost { .. } => "Set HOST to an IP address such as 127.0.0.1 or 0.0.0.0, or unset it.",
            Self::BadCookieSecure { .. } => "Set SESSION_COOKIE_SECURE to `auto` (Secure over HTTPS), `true` or `false`, or unset it for `auto`.",
            Self::BadSameSite { .. } => "Set SESSION_COOKIE_SAMESITE to `lax`, `strict` or `none`, or unset it for no SameSite attribute.",
        }
    }
}

/// Everything a session service reads from its environment.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub redis_url: RedisUrl,
    pub secrets: Secrets,
    pub cookie: CookieOptions,
}

impl ServiceConfig {
    /// Reads the process environment; `default_port` applies when `PORT` is unset.
    pub fn from_env(default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(default_port, |name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(
        default_port: u16,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let secrets = match lookup("SESSION_SECRET") {
            None => return Err(ConfigError::MissingSecret),
            Some(value) if value.is_empty() => return Err(ConfigError::MissingSecret),
            Some(value) => Secrets::parse(&value)?,
        };
        let redis_url = match lookup("REDIS_SESSION_URL").filter(|value| !value.trim().is_empty()) {
            Some(value) => RedisUrl::parse(&value)?,
            None => RedisUrl::parse(DEFAULT_URL)?,
        };
        let redis_url = match lookup("REDIS_TLS_CA_FILE").filter(|value| !value.trim().is_empty()) {
            Some(_) if !redis_url.is_tls() => return Err(ConfigError::TlsCaWithoutTls),
            Some(path) => redis_url.with_tls_ca(load_tls_ca_file(Path::new(path.trim()))?),
            None => redis_url,
        };
        let port = match lookup("PORT").filter(|value| !value.is_empty()) {
            Some(value) => value
                .trim()
                .parse::<u16>()
                .map_err(|_| ConfigError::BadPort { value })?,
            None => default_port,
        };
        let host = match lookup("HOST").filter(|value| !value.is_empty()) {
            Some(value) => value
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::BadHost { value })?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let secure = match lookup("SESSION_COOKIE_SECURE").filter(|value| !value.trim().is_empty())
        {
            Some(value) => {
                CookieSecure::parse(&value).ok_or(ConfigError::BadCookieSecure { value })?
            }
            None => CookieSecure::Auto,
        };
        let same_site = match lookup("SESSION_COOKIE_SAMESITE")
            .filter(|value| !value.trim().is_empty())
        {
            Some(value) => Some(SameSite::parse(&value).ok_or(ConfigError::BadSameSite { value })?),
            None => None,
        };
        Ok(Self {
            listen: SocketAddr::new(host, port),
            redis_url,
            secrets,
            cookie: CookieOptions {
                secure,
                same_site,
                ..CookieOptions::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServiceConfig::from_lookup(8090, |name| vars.get(name).cloned())
    }

    #[test]
    fn reads_defaults_and_overrides() {
        let defaults = config(&[("SESSION_SECRET", "s")]).expect("only the secret is required");
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:8090");
        assert_eq!(defaults.redis_url.to_string(), "redis://127.0.0.1:6379");
        let set = config(&[
            ("SESSION_SECRET", "new,old"),
            ("PORT", "9000"),
            ("HOST", "0.0.0.0"),
            ("REDIS_SESSION_URL", "redis://cache:6380?password=canary-pw"),
        ])
        .expect("valid values");
        assert_eq!(set.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(set.secrets.len(), 2);
        assert_eq!(set.redis_url.to_string(), "redis://:***@cache:6380");
        let tls = config(&[
            ("SESSION_SECRET", "s"),
            ("REDIS_SESSION_URL", "rediss://:canary-pw@cache:6380/2"),
        ])
        .expect("rediss:// is accepted");
        assert!(tls.redis_url.is_tls());
        assert_eq!(tls.redis_url.to_string(), "rediss://:***@cache:6380/2");
    }

    #[test]
    fn the_cookie_is_secure_over_https_by_default_and_as_asked() {
        let defaults = config(&[("SESSION_SECRET", "s")]).unwrap();
        assert_eq!(defaults.cookie.secure, CookieSecure::Auto);
        assert_eq!(defaults.cookie.same_site, None);
        let set = config(&[
            ("SESSION_SECRET", "s"),
            ("SESSION_COOKIE_SECURE", "false"),
            ("SESSION_COOKIE_SAMESITE", "Lax"),
        ])
        .unwrap();
        assert_eq!(set.cookie.secure, CookieSecure::Never);
        assert_eq!(set.cookie.same_site, Some(SameSite::Lax));
        for (vars, message) in [
            (
                ("SESSION_COOKIE_SECURE", "yes"),
                "`SESSION_COOKIE_SECURE` is `yes`, not `auto`, `true` or `false`",
            ),
            (
                ("SESSION_COOKIE_SAMESITE", "loose"),
                "`SESSION_COOKIE_SAMESITE` is `loose`, not `lax`, `strict` or `none`",
            ),
        ] {
            let error = config(&[("SESSION_SECRET", "s"), vars]).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }

    /// A file that exists everywhere the tests run and is not PEM.
    const NOT_PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[], "`SESSION_SECRET` is not set"),
            (&[("SESSION_SECRET", "")], "`SESSION_SECRET` is not set"),
            (
                &[("SESSION_SECRET", "canary,")],
                "`SESSION_SECRET` holds an empty secret at position 2 of its comma-separated list",
            ),
            (
                &[("SESSION_SECRET", "canary"), ("PORT", "http")],
                "`PORT` is `http`, not a port number",
            ),
            (
                &[
                    ("SESSION_SECRET", "canary"),
                    ("REDIS_SESSION_URL", "redis://:canary@h"),
                    ("REDIS_TLS_CA_FILE", NOT_PEM),
                ],
                "`REDIS_TLS_CA_FILE` is set but `REDIS_SESSION_URL` does not use TLS (rediss://)",
            ),
            (
                &[
                    ("SESSION_SECRET", "canary"),
                    ("REDIS_SESSION_URL", "rediss://:canary@h"),
                    ("REDIS_TLS_CA_FILE", "/nonexistent/ca.pem"),
                ],
                "`REDIS_TLS_CA_FILE` is unusable: cannot read `/nonexistent/ca.pem`: No such file or directory (os error 2)",
            ),
            (
                &[
                    ("SESSION_SECRET", "canary"),
                    ("REDIS_SESSION_URL", "rediss://:canary@h"),
                    ("REDIS_TLS_CA_FILE", NOT_PEM),
                ],
                concat!(
                    "`REDIS_TLS_CA_FILE` is unusable: `",
                    env!("CARGO_MANIFEST_DIR"),
                    "/Cargo.toml` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
                ),
            ),
            (
                &[("SESSION_SECRET", "canary"), ("REDIS_SESSION_URL", "redis://:canary@h/x")],
                "`REDIS_SESSION_URL` is invalid: the Redis URL names database `x`, which is not a number from 0 up",
            ),
        ];
        for (vars, message) in cases {
            let error = config(vars).expect_err(message);
            assert_eq!(error.to_string(), message);
            assert!(!error.to_string().contains("canary"));
            assert!(!error.hint().is_empty());
        }
    }
}
