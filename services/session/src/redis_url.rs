//! `REDIS_SESSION_URL`: every form a user brings, parsed once, shown only with its password masked.
//!
//! Owns parsing (`redis://host:port`, `redis://:pass@host:port/db`, `redis://user:pass@...`,
//! `rediss://...`, `unix:///path`, `redis+unix:///path`, a bare `/path/to.sock`, and the 2017
//! `redis://host:port?password=pass`), the masked `Display`, and the conversion to
//! `redis::ConnectionInfo` / `redis::Client`. It never connects, and neither its `Display`, its
//! `Debug` nor its errors ever contain the password.
//!
//! TLS (`rediss://`) verifies the server against the webpki roots (Mozilla's CA list) bundled in
//! the build. To trust a private CA instead (a self-signed local Redis), set `REDIS_TLS_CA_FILE`
//! to a PEM file: [`load_tls_ca_file`] reads and checks it, [`RedisUrl::with_tls_ca`] attaches it,
//! and then only that file's certificates are trusted. There is deliberately no way to skip
//! verification: a self-signed server is trusted by naming its certificate.

use std::fmt;
use std::path::{Path, PathBuf};

/// The URL used when `REDIS_SESSION_URL` is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

const DEFAULT_PORT: u16 = 6379;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisUrlError {
    #[error("the Redis URL is empty")]
    Empty,
    #[error("the Redis URL is not a valid URL ({reason})")]
    Invalid { reason: String },
    #[error("the Redis URL has the scheme `{scheme}`; use redis://, rediss://, unix:// or redis+unix://")]
    UnsupportedScheme { scheme: String },
    #[error("the Redis URL has no host")]
    MissingHost,
    #[error("the Redis URL has no socket path")]
    MissingSocketPath,
    #[error("the Redis URL names database `{value}`, which is not a number from 0 up")]
    BadDatabase { value: String },
    #[error(
        "the Redis URL has the query parameter `{name}`; only `password` and `db` are understood"
    )]
    UnknownParameter { name: String },
}

/// Why a CA file for `rediss://` cannot be used. Names the file, never its contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsCaError {
    #[error("cannot read `{path}`: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("`{path}` is not a PEM certificate file ({reason})")]
    NotPem { path: String, reason: String },
    #[error("`{path}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { path: String },
}

/// Reads a PEM file of CA certificates to trust for `rediss://` (see the module docs).
pub fn load_tls_ca_file(path: &Path) -> Result<Vec<u8>, TlsCaError> {
    use rustls::pki_types::pem::PemObject as _;
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|error| TlsCaError::Unreadable {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsCaError::NotPem {
            path: shown.clone(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsCaError::NoCertificate { path: shown });
    }
    Ok(pem)
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddr {
    /// TCP, with TLS for `rediss://`.
    Tcp { host: String, port: u16, tls: bool },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// A parsed Redis URL. `Display` shows it with the password as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: RedisAddr,
    pub db: i64,
    pub username: Option<String>,
    password: Option<String>,
    /// PEM CA certificates to trust for TLS instead of the bundled webpki roots.
    tls_ca: Option<Vec<u8>>,
}

impl RedisUrl {
    /// Parses any supported form; see the module docs.
    pub fn parse(input: &str) -> Result<Self, RedisUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(RedisUrlError::Empty);
        }
        if input.starts_with('/') {
            return Ok(Self {
                addr: RedisAddr::Unix(PathBuf::from(input)),
                db: 0,
                username: None,
                password: None,
                tls_ca: None,
            });
        }
        let url = url::Url::parse(input).map_err(|error| RedisUrlError::Invalid {
            reason: error.to_string(),
        })?;
        let mut parsed = match url.scheme() {
            "redis" | "rediss" => {
                let host = match url.host() {
                    Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
                    Some(url::Host::Ipv4(ip)) => ip.to_string(),
                    Some(url::Host::Ipv6(ip)) => ip.to_string(),
                    _ => return Err(RedisUrlError::MissingHost),
                };
                let db_text = url.path().trim_start_matches('/');
                Self {
                    addr: RedisAddr::Tcp {
                        host,
                        port: url.port().unwrap_or(DEFAULT_PORT),
                        tls: url.scheme() == "rediss",
                    },
                    db: if db_text.is_empty() {
                        0
                    } else {
                        parse_db(db_text)?
                    },
                    username: non_empty(decode(url.username())),
                    password: url.password().map(decode).and_then(non_empty),
                    tls_ca: None,
                }
            }
            "unix" | "redis+unix" => {
                let path = decode(url.path());
                if path.is_empty() || path == "/" {
                    return Err(RedisUrlError::MissingSocketPath);
                }
                Self {
                    addr: RedisAddr::Unix(PathBuf::from(path)),
                    db: 0,
                    username: non_empty(decode(url.username())),
                    password: url.password().map(decode).and_then(non_empty),
                    tls_ca: None,
                }
            }
            other => {
                return Err(RedisUrlError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        };
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "password" => parsed.password = non_empty(value.into_owned()),
                "db" => parsed.db = parse_db(&value)?,
                other => {
                    return Err(RedisUrlError::UnknownParameter {
                        name: other.to_owned(),
                    })
                }
            }
        }
        Ok(parsed)
    }

    /// The password, for the connection only. Never log or display it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.addr, RedisAddr::Tcp { tls: true, .. })
    }

    /// Trusts the CA certificates in `pem` (from [`load_tls_ca_file`]) instead of the webpki
    /// roots. Only TLS connections use it.
    pub fn with_tls_ca(mut self, pem: Vec<u8>) -> Self {
        self.tls_ca = Some(pem);
        self
    }

    /// A client for this URL, with the CA from [`RedisUrl::with_tls_ca`] when one is set.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls_ca {
            Some(pem) if self.is_tls() => redis::Client::build_with_tls(
                self.connection_info(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => redis::Client::open(self.connection_info()),
        }
    }

    /// What the `redis` crate needs to connect.
    pub fn connection_info(&self) -> redis::ConnectionInfo {
        let addr = match &self.addr {
            RedisAddr::Tcp {
                host,
                port,
                tls: false,
            } => redis::ConnectionAddr::Tcp(host.clone(), *port),
            RedisAddr::Tcp {
                host,
                port,
                tls: true,
            } => redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
            RedisAddr::Unix(path) => redis::ConnectionAddr::Unix(path.clone()),
        };
        redis::ConnectionInfo {
            addr,
            redis: redis::RedisConnectionInfo {
                db: self.db,
                username: self.username.clone(),
                password: self.password.clone(),
                ..Default::default()
            },
        }
    }
}

fn parse_db(text: &str) -> Result<i64, RedisUrlError> {
    text.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| RedisUrlError::BadDatabase {
            value: text.to_owned(),
        })
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The URL with its password replaced by `***`, safe for logs and messages.
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = self.password.as_ref().map(|_| "***");
        match &self.addr {
            RedisAddr::Tcp { host, port, tls } => {
                f.write_str(if *tls { "rediss://" } else { "redis://" })?;
                match (&self.username, secret) {
                    (Some(user), Some(mask)) => write!(f, "{user}:{mask}@")?,
                    (Some(user), None) => write!(f, "{user}@")?,
                    (None, Some(mask)) => write!(f, ":{mask}@")?,
                    (None, None) => {}
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")?;
                } else {
                    write!(f, "{host}:{port}")?;
                }
                if self.db != 0 {
                    write!(f, "/{}", self.db)?;
                }
                Ok(())
            }
            RedisAddr::Unix(path) => {
                write!(f, "unix://{}", path.display())?;
                let mut separator = '?';
                if self.db != 0 {
                    write!(f, "{separator}db={}", self.db)?;
                    separator = '&';
                }
                if let Some(mask) = secret {
                    write!(f, "{separator}password={mask}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        input: &str,
        addr: RedisAddr,
        db: i64,
        user: Option<&str>,
        password: Option<&str>,
        shown: &str,
    ) {
        let url = RedisUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(url.addr, addr, "{input}");
        assert_eq!(url.db, db, "{input}");
        assert_eq!(url.username.as_deref(), user, "{input}");
        assert_eq!(url.password(), password, "{input}");
        assert_eq!(url.to_string(), shown, "{input}");
        assert_eq!(format!("{url:?}"), format!("RedisUrl({shown})"));
    }

    fn tcp(host: &str, port: u16, tls: bool) -> RedisAddr {
        RedisAddr::Tcp {
            host: host.to_owned(),
            port,
            tls,
        }
    }

    #[test]
    fn parses_every_form_and_masks_the_password() {
        check(
            DEFAULT_URL,
            tcp("127.0.0.1", 6379, false),
            0,
            None,
            None,
            "redis://127.0.0.1:6379",
        );
        check(
            "redis://cache",
            tcp("cache", 6379, false),
            0,
            None,
            None,
            "redis://cache:6379",
        );
        check(
            "redis://:s3cret@10.0.0.5:6380/2",
            tcp("10.0.0.5", 6380, false),
            2,
            None,
            Some("s3cret"),
            "redis://:***@10.0.0.5:6380/2",
        );
        check(
            "redis://alice:p%40ss@cache:7000/0",
            tcp("cache", 7000, false),
            0,
            Some("alice"),
            Some("p@ss"),
            "redis://alice:***@cache:7000",
        );
        check(
            "rediss://:tls-pass@redis.example.com:6380",
            tcp("redis.example.com", 6380, true),
            0,
            None,
            Some("tls-pass"),
            "rediss://:***@redis.example.com:6380",
        );
        check(
            "redis://127.0.0.1:6379?password=legacy",
            tcp("127.0.0.1", 6379, false),
            0,
            None,
            Some("legacy"),
            "redis://:***@127.0.0.1:6379",
        );
        check(
            "redis://[::1]:6390",
            tcp("::1", 6390, false),
            0,
            None,
            None,
            "redis://[::1]:6390",
        );
        let socket = RedisAddr::Unix(PathBuf::from("/run/redis/redis.sock"));
        check(
            "unix:///run/redis/redis.sock",
            socket.clone(),
            0,
            None,
            None,
            "unix:///run/redis/redis.sock",
        );
        check(
            "redis+unix:///run/redis/redis.sock?db=3&password=sock-pass",
            socket.clone(),
            3,
            None,
            Some("sock-pass"),
            "unix:///run/redis/redis.sock?db=3&password=***",
        );
        check(
            "/run/redis/redis.sock",
            socket,
            0,
            None,
            None,
            "unix:///run/redis/redis.sock",
        );
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        let cases = [
            ("", RedisUrlError::Empty),
            (
                "http://:hunter2@cache:6379",
                RedisUrlError::UnsupportedScheme {
                    scheme: "http".into(),
                },
            ),
            (
                "redis://:hunter2@cache:6379/x",
                RedisUrlError::BadDatabase { value: "x".into() },
            ),
            (
                "redis://cache?pasword=hunter2",
                RedisUrlError::UnknownParameter {
                    name: "pasword".into(),
                },
            ),
            ("unix://", RedisUrlError::MissingSocketPath),
        ];
        for (input, expected) in cases {
            let error = RedisUrl::parse(input).unwrap_err();
            assert_eq!(error, expected, "{input}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let error = RedisUrl::parse("redis://:hunter2@cache:notaport").unwrap_err();
        assert!(matches!(error, RedisUrlError::Invalid { .. }), "{error:?}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn converts_to_connection_info() {
        let info = RedisUrl::parse("redis://bob:pw@cache:6380/4")
            .expect("valid URL")
            .connection_info();
        assert_eq!(info.addr, redis::ConnectionAddr::Tcp("cache".into(), 6380));
        assert_eq!(info.redis.db, 4);
        assert_eq!(info.redis.username.as_deref(), Some("bob"));
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
        let unix = RedisUrl::parse("/tmp/r.sock")
            .expect("valid path")
            .connection_info();
        assert_eq!(unix.addr, redis::ConnectionAddr::Unix("/tmp/r.sock".into()));
    }
}
