//! `REDIS_SESSION_URL`: every form a user brings, parsed once, shown only with its password masked.
//!
//! Owns parsing (`redis://host:port`, `redis://:pass@host:port/db`, `redis://user:pass@...`,
//! `rediss://...`, `unix:///path`, `redis+unix:///path`, a bare `/path/to.sock`, the 2017
//! `redis://host:port?password=pass`, and past one server Lettuce's
//! `redis-sentinel://[:pass@]host:port[,host:port...][/db]#master-name` and
//! `redis-cluster://[:pass@]host:port[,host:port...]`), the masked `Display`, and the conversion
//! to `redis::ConnectionInfo` / `redis::Client`. It never connects, and neither its `Display`, its
//! `Debug` nor its errors ever contain the password.
//!
//! In a Sentinel URL the password (and user and db) are the data nodes' (master and replicas),
//! as in Lettuce: the sentinels themselves are asked without credentials, which is how a
//! Sentinel set is usually run (`sentinel auth-pass` holds the master's password). A Cluster
//! URL lists seed nodes: the client discovers the others; a cluster has only database 0.
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
const DEFAULT_SENTINEL_PORT: u16 = 26379;
const SENTINEL_SCHEME: &str = "redis-sentinel://";
const CLUSTER_SCHEME: &str = "redis-cluster://";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedisUrlError {
    #[error("the Redis URL is empty")]
    Empty,
    #[error("the Redis URL is not a valid URL ({reason})")]
    Invalid { reason: String },
    #[error("the Redis URL has the scheme `{scheme}`; use redis://, rediss://, unix://, redis+unix://, redis-sentinel:// or redis-cluster://")]
    UnsupportedScheme { scheme: String },
    #[error("the Redis URL's node `{node}` is not `host:port` ({reason})")]
    BadNode { node: String, reason: String },
    #[error("the Sentinel URL names no master: end it with `#master-name` (e.g. `#mymaster`)")]
    MissingMasterName,
    #[error("a Cluster URL takes no `{part}`: a cluster has only database 0 and no master name")]
    ClusterExtra { part: &'static str },
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
    /// `redis-sentinel://`: the sentinels to ask for the master named `master`.
    Sentinel {
        sentinels: Vec<Node>,
        master: String,
    },
    /// `redis-cluster://`: seed nodes of a Redis Cluster (the others are discovered).
    Cluster { nodes: Vec<Node> },
}

/// One `host:port` of a Sentinel or Cluster URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
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
        if let Some(rest) = strip_prefix_ignore_case(input, SENTINEL_SCHEME) {
            return parse_multi(rest, true);
        }
        if let Some(rest) = strip_prefix_ignore_case(input, CLUSTER_SCHEME) {
            return parse_multi(rest, false);
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

    /// True for a Redis Cluster URL.
    pub fn is_cluster(&self) -> bool {
        matches!(self.addr, RedisAddr::Cluster { .. })
    }

    /// How to reach one data node at `node` with this URL's credentials and database (a
    /// cluster's nodes, a Sentinel set's master).
    pub fn node_info(&self, node: &Node) -> redis::ConnectionInfo {
        redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(node.host.clone(), node.port),
            redis: self.redis_info(),
        }
    }

    /// The credentials and database, without an address.
    pub fn redis_info(&self) -> redis::RedisConnectionInfo {
        redis::RedisConnectionInfo {
            db: self.db,
            username: self.username.clone(),
            password: self.password.clone(),
            ..Default::default()
        }
    }

    /// Trusts the CA certificates in `pem` (from [`load_tls_ca_file`]) instead of the webpki
    /// roots. Only TLS connections use it.
    pub fn with_tls_ca(mut self, pem: Vec<u8>) -> Self {
        self.tls_ca = Some(pem);
        self
    }

    /// A client for this URL, with the CA from [`RedisUrl::with_tls_ca`] when one is set. A
    /// Sentinel or Cluster URL has no single server: use [`RedisUrl::sentinel_client`] or a
    /// cluster client over [`RedisUrl::node_info`].
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        if matches!(
            self.addr,
            RedisAddr::Sentinel { .. } | RedisAddr::Cluster { .. }
        ) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Sentinel or Cluster URL names no single server",
            )));
        }
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

    /// A client that finds the master through the sentinels of a `redis-sentinel://` URL.
    pub fn sentinel_client(&self) -> redis::RedisResult<redis::sentinel::SentinelClient> {
        let (sentinels, master, node_info) = self.sentinel_parts()?;
        redis::sentinel::SentinelClient::build(
            sentinels,
            master,
            Some(node_info),
            redis::sentinel::SentinelServerType::Master,
        )
    }

    /// The sentinels of a `redis-sentinel://` URL, to ask with `Sentinel::async_master_for`'s
    /// arguments: the master's name and how to reach the data nodes.
    pub fn sentinel(
        &self,
    ) -> redis::RedisResult<(
        redis::sentinel::Sentinel,
        String,
        redis::sentinel::SentinelNodeConnectionInfo,
    )> {
        let (sentinels, master, node_info) = self.sentinel_parts()?;
        Ok((
            redis::sentinel::Sentinel::build(sentinels)?,
            master,
            node_info,
        ))
    }

    #[allow(clippy::type_complexity)]
    fn sentinel_parts(
        &self,
    ) -> redis::RedisResult<(
        Vec<redis::ConnectionInfo>,
        String,
        redis::sentinel::SentinelNodeConnectionInfo,
    )> {
        let RedisAddr::Sentinel { sentinels, master } = &self.addr else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Sentinel URL",
            )));
        };
        let sentinels = sentinels
            .iter()
            .map(|node| redis::ConnectionInfo {
                addr: redis::ConnectionAddr::Tcp(node.host.clone(), node.port),
                redis: redis::RedisConnectionInfo::default(),
            })
            .collect();
        let node_info = redis::sentinel::SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(self.redis_info()),
        };
        Ok((sentinels, master.clone(), node_info))
    }

    /// What the `redis` crate needs to connect to a single server. For a Sentinel or Cluster URL
    /// it names the first node listed (use the dedicated clients to talk to them).
    pub fn connection_info(&self) -> redis::ConnectionInfo {
        let addr = match &self.addr {
            RedisAddr::Sentinel {
                sentinels: nodes, ..
            }
            | RedisAddr::Cluster { nodes } => {
                let first = &nodes[0];
                redis::ConnectionAddr::Tcp(first.host.clone(), first.port)
            }
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
            redis: self.redis_info(),
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// The part after `redis-sentinel://` or `redis-cluster://`: `[user:pass@]nodes[/db][?query][#master]`.
/// Hand-parsed: a list of `host:port` is not an authority that URL parsers accept.
fn parse_multi(rest: &str, sentinel: bool) -> Result<RedisUrl, RedisUrlError> {
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(decode(fragment))),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (non_empty(decode(user)), non_empty(decode(password))),
            None => (non_empty(decode(info)), None),
        },
        None => (None, None),
    };
    let default_port = if sentinel {
        DEFAULT_SENTINEL_PORT
    } else {
        DEFAULT_PORT
    };
    let nodes = hosts
        .split(',')
        .map(|node| parse_node(node.trim(), default_port))
        .collect::<Result<Vec<_>, _>>()?;
    let mut db = if path.is_empty() { 0 } else { parse_db(path)? };
    let mut password = password;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "password" => password = non_empty(value.into_owned()),
            "db" => db = parse_db(&value)?,
            other => {
                return Err(RedisUrlError::UnknownParameter {
                    name: other.to_owned(),
                })
            }
        }
    }
    let addr = if sentinel {
        let master = fragment
            .filter(|name| !name.trim().is_empty())
            .ok_or(RedisUrlError::MissingMasterName)?;
        RedisAddr::Sentinel {
            sentinels: nodes,
            master,
        }
    } else {
        if fragment.is_some() {
            return Err(RedisUrlError::ClusterExtra {
                part: "#master-name",
            });
        }
        if db != 0 {
            return Err(RedisUrlError::ClusterExtra { part: "database" });
        }
        RedisAddr::Cluster { nodes }
    };
    Ok(RedisUrl {
        addr,
        db,
        username,
        password,
        tls_ca: None,
    })
}

/// `host:port`, `host` (default port) or `[v6]:port`. The node text never holds the password
/// (that was split off before), so errors may show it.
fn parse_node(text: &str, default_port: u16) -> Result<Node, RedisUrlError> {
    let bad = |reason: &str| RedisUrlError::BadNode {
        node: text.to_owned(),
        reason: reason.to_owned(),
    };
    if text.is_empty() {
        return Err(RedisUrlError::MissingHost);
    }
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("unexpected text after `]`")),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(RedisUrlError::MissingHost);
    }
    if host.contains(['/', '@', ' ']) {
        return Err(bad("not a host name"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
        None => default_port,
    };
    Ok(Node {
        host: host.to_owned(),
        port,
    })
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
        let userinfo = |f: &mut fmt::Formatter<'_>| match (&self.username, secret) {
            (Some(user), Some(mask)) => write!(f, "{user}:{mask}@"),
            (Some(user), None) => write!(f, "{user}@"),
            (None, Some(mask)) => write!(f, ":{mask}@"),
            (None, None) => Ok(()),
        };
        let node_list = |f: &mut fmt::Formatter<'_>, nodes: &[Node]| {
            for (index, node) in nodes.iter().enumerate() {
                if index > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{node}")?;
            }
            Ok(())
        };
        match &self.addr {
            RedisAddr::Sentinel { sentinels, master } => {
                f.write_str(SENTINEL_SCHEME)?;
                userinfo(f)?;
                node_list(f, sentinels)?;
                if self.db != 0 {
                    write!(f, "/{}", self.db)?;
                }
                write!(f, "#{master}")
            }
            RedisAddr::Cluster { nodes } => {
                f.write_str(CLUSTER_SCHEME)?;
                userinfo(f)?;
                node_list(f, nodes)
            }
            RedisAddr::Tcp { host, port, tls } => {
                f.write_str(if *tls { "rediss://" } else { "redis://" })?;
                userinfo(f)?;
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

    fn nodes(list: &[(&str, u16)]) -> Vec<Node> {
        list.iter()
            .map(|(host, port)| Node {
                host: (*host).to_owned(),
                port: *port,
            })
            .collect()
    }

    #[test]
    fn parses_sentinel_and_cluster_urls_and_masks_the_password() {
        check(
            "redis-sentinel://:s3nt@10.0.0.1:26379,10.0.0.2:26380/2#mymaster",
            RedisAddr::Sentinel {
                sentinels: nodes(&[("10.0.0.1", 26379), ("10.0.0.2", 26380)]),
                master: "mymaster".into(),
            },
            2,
            None,
            Some("s3nt"),
            "redis-sentinel://:***@10.0.0.1:26379,10.0.0.2:26380/2#mymaster",
        );
        check(
            "redis-sentinel://h1,[::1]:26390#my%20master",
            RedisAddr::Sentinel {
                sentinels: nodes(&[("h1", 26379), ("::1", 26390)]),
                master: "my master".into(),
            },
            0,
            None,
            None,
            "redis-sentinel://h1:26379,[::1]:26390#my master",
        );
        check(
            "redis-cluster://:cl%40ster@127.0.0.1:7000, 127.0.0.1:7001",
            RedisAddr::Cluster {
                nodes: nodes(&[("127.0.0.1", 7000), ("127.0.0.1", 7001)]),
            },
            0,
            None,
            Some("cl@ster"),
            "redis-cluster://:***@127.0.0.1:7000,127.0.0.1:7001",
        );
        check(
            "REDIS-CLUSTER://alice:pw@c1:7000?password=legacy",
            RedisAddr::Cluster {
                nodes: nodes(&[("c1", 7000)]),
            },
            0,
            Some("alice"),
            Some("legacy"),
            "redis-cluster://alice:***@c1:7000",
        );
        let url = RedisUrl::parse("redis-cluster://:pw@c1:7000").expect("valid");
        assert!(url.is_cluster());
        assert!(url.client().is_err(), "a cluster has no single server");
        let info = url.node_info(&nodes(&[("c2", 7001)])[0]);
        assert_eq!(info.addr, redis::ConnectionAddr::Tcp("c2".into(), 7001));
        assert_eq!(info.redis.password.as_deref(), Some("pw"));
        let sentinel = RedisUrl::parse("redis-sentinel://:pw@s1:1#m").expect("valid");
        assert!(sentinel.sentinel_client().is_ok());
        assert!(url.sentinel_client().is_err());
    }

    #[test]
    fn rejects_bad_sentinel_and_cluster_urls_without_echoing_the_password() {
        let cases = [
            (
                "redis-sentinel://:hunter2@s1:26379,s2:26379",
                RedisUrlError::MissingMasterName,
            ),
            (
                "redis-sentinel://:hunter2@s1:26379#",
                RedisUrlError::MissingMasterName,
            ),
            (
                "redis-cluster://:hunter2@c1:7000/3",
                RedisUrlError::ClusterExtra { part: "database" },
            ),
            (
                "redis-cluster://:hunter2@c1:7000#mymaster",
                RedisUrlError::ClusterExtra {
                    part: "#master-name",
                },
            ),
            (
                "redis-cluster://:hunter2@c1:7000,c2:seven",
                RedisUrlError::BadNode {
                    node: "c2:seven".into(),
                    reason: "the port is not a number from 1 to 65535".into(),
                },
            ),
            (
                "redis-cluster://:hunter2@c1:7000,",
                RedisUrlError::MissingHost,
            ),
            ("redis-cluster://:hunter2@", RedisUrlError::MissingHost),
            (
                "redis-sentinel://:hunter2@s1/x#m",
                RedisUrlError::BadDatabase { value: "x".into() },
            ),
            (
                "redis-cluster://:hunter2@c1?pasword=x",
                RedisUrlError::UnknownParameter {
                    name: "pasword".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            let error = RedisUrl::parse(input).unwrap_err();
            assert_eq!(error, expected, "{input}");
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
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
