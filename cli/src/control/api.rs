//! The control API's wire, shared by the server and the client: one typed [`Request`] per
//! route, the answer each one gets, and the paths, built with user input percent-encoded and
//! parsed back with it decoded. Nothing here does I/O.
//!
//! | request | route | answer |
//! |---|---|---|
//! | [`Request::Deployments`] | `GET /v1/deployments` | `Vec<`[`DeploymentStatus`]`>` (`stack ls`) |
//! | [`Request::Scale`] | `POST /v1/scale` | [`ScaleAnswer`], once the instances are ready |
//! | [`Request::Remove`] | `DELETE /v1/deployments/<id>` | [`RemoveAnswer`] (`stack rm`) |
//! | [`Request::Logs`] | `GET /v1/logs?target=T&lines=N&since=MS&follow=1` | NDJSON of [`LogLine`](crate::supervisor::logs::LogLine)s |
//! | [`Request::Alias`] | `POST /v1/aliases` | [`AliasAnswer`] |
//! | [`Request::Rollback`] | `POST /v1/rollback` | [`RollbackAnswer`] |
//! | [`Request::Restart`] | `POST /v1/restart` | [`RestartAnswer`], once every instance is ready again |
//! | [`Request::Env`] | `GET /v1/env?target=T` | [`EnvAnswer`]: what stack adds to a service's environment (`stack exec`) |
//! | [`Request::Redis`] | `GET /v1/redis` | [`RedisAnswer`]: the URL the services get |
//! | [`Request::Down`] | `POST /v1/down` | [`DownAnswer`] |
//! | [`Request::Requests`] | `GET /v1/requests?since=SEQ` | [`RequestsAnswer`]: the proxy's request log after `SEQ` |
//!
//! A refusal is an [`ErrorBody`] with a 4xx or 5xx status.

use http::Method;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::redis::managed::RedisStatus;
use crate::state::{Alias, State};
use crate::supervisor::{DeploymentState, LiveDeployment, Snapshot};

/// Everything but unreserved characters (RFC 3986) is encoded in a path segment or query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

const DEPLOYMENTS: &str = "/v1/deployments";
const SCALE: &str = "/v1/scale";
const LOGS: &str = "/v1/logs";
const ALIASES: &str = "/v1/aliases";
const ROLLBACK: &str = "/v1/rollback";
const RESTART: &str = "/v1/restart";
const REDIS: &str = "/v1/redis";
const ENV: &str = "/v1/env";
const DOWN: &str = "/v1/down";
const REQUESTS: &str = "/v1/requests";

/// Stored log lines sent when a logs request does not say how many.
pub const DEFAULT_LOG_LINES: usize = 100;

/// One request to the running `stack up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Deployments,
    Scale(ScaleRequest),
    Remove {
        deployment: String,
    },
    Logs(LogsQuery),
    Alias(AliasChange),
    Rollback(RollbackRequest),
    Restart(RestartRequest),
    /// What stack adds to the environment of a service (its live deployment) or a deployment.
    Env {
        target: String,
    },
    Redis,
    Down,
    /// The logged requests after `since` (0: all of them).
    Requests {
        since: u64,
    },
}

/// A request the server cannot read: no such route, or a body or query that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("no route `{method} {path}`")]
    NoRoute { method: String, path: String },
    #[error("bad request body: {0}")]
    Body(String),
    #[error("bad query: {0}")]
    Query(String),
}

impl Request {
    pub fn method(&self) -> Method {
        match self {
            Request::Deployments
            | Request::Logs(_)
            | Request::Env { .. }
            | Request::Redis
            | Request::Requests { .. } => Method::GET,
            Request::Remove { .. } => Method::DELETE,
            Request::Scale(_)
            | Request::Alias(_)
            | Request::Rollback(_)
            | Request::Restart(_)
            | Request::Down => Method::POST,
        }
    }

    /// The path and query, user input percent-encoded: always a valid request target.
    pub fn path(&self) -> String {
        match self {
            Request::Deployments => DEPLOYMENTS.into(),
            Request::Scale(_) => SCALE.into(),
            Request::Remove { deployment } => format!("{DEPLOYMENTS}/{}", encode(deployment)),
            Request::Logs(query) => format!(
                "{LOGS}?target={}&lines={}&since={}&follow={}",
                encode(&query.target),
                query.lines,
                query.since_ms,
                u8::from(query.follow)
            ),
            Request::Alias(_) => ALIASES.into(),
            Request::Rollback(_) => ROLLBACK.into(),
            Request::Restart(_) => RESTART.into(),
            Request::Env { target } => format!("{ENV}?target={}", encode(target)),
            Request::Redis => REDIS.into(),
            Request::Down => DOWN.into(),
            Request::Requests { since } => format!("{REQUESTS}?since={since}"),
        }
    }

    /// The JSON body, empty for requests that carry none.
    pub fn body(&self) -> Vec<u8> {
        match self {
            Request::Scale(scale) => json(scale),
            Request::Alias(change) => json(change),
            Request::Rollback(rollback) => json(rollback),
            Request::Restart(restart) => json(restart),
            Request::Deployments
            | Request::Remove { .. }
            | Request::Logs(_)
            | Request::Env { .. }
            | Request::Redis
            | Request::Down
            | Request::Requests { .. } => Vec::new(),
        }
    }

    /// What the server got: `path_and_query` as it arrived (still encoded), and the body.
    pub fn parse(
        method: &Method,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Request, BadRequest> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let no_route = || BadRequest::NoRoute {
            method: method.to_string(),
            path: path.to_string(),
        };
        match (method, path) {
            (&Method::GET, DEPLOYMENTS) => Ok(Request::Deployments),
            (&Method::POST, SCALE) => Ok(Request::Scale(from_json(body)?)),
            (&Method::DELETE, path) => {
                let encoded = path
                    .strip_prefix(DEPLOYMENTS)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|segment| !segment.contains('/'))
                    .ok_or_else(no_route)?;
                Ok(Request::Remove {
                    deployment: decode(encoded).map_err(BadRequest::Query)?,
                })
            }
            (&Method::GET, LOGS) => Ok(Request::Logs(LogsQuery::parse(query)?)),
            (&Method::POST, ALIASES) => Ok(Request::Alias(from_json(body)?)),
            (&Method::POST, ROLLBACK) => Ok(Request::Rollback(from_json(body)?)),
            (&Method::POST, RESTART) => Ok(Request::Restart(from_json(body)?)),
            (&Method::GET, ENV) => Ok(Request::Env {
                target: query_value(query, "target")?
                    .ok_or_else(|| BadRequest::Query("`target` is missing".into()))?,
            }),
            (&Method::GET, REDIS) => Ok(Request::Redis),
            (&Method::POST, DOWN) => Ok(Request::Down),
            (&Method::GET, REQUESTS) => Ok(Request::Requests {
                since: requests_since(query)?,
            }),
            _ => Err(no_route()),
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|error| BadRequest::Body(error.to_string()))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("control requests are plain data and serialise")
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// The last `key=` in `query`, decoded.
fn query_value(query: &str, key: &str) -> Result<Option<String>, BadRequest> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == key)
        .map(|(_, value)| decode(value).map_err(BadRequest::Query))
        .next_back()
        .transpose()
}

fn requests_since(query: &str) -> Result<u64, BadRequest> {
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("since="))
        .next_back()
        .map_or(Ok(0), |value| {
            value
                .parse()
                .map_err(|_| BadRequest::Query("`since` is not a number".into()))
        })
}

/// `GET /v1/requests`: what the proxy logged, oldest first, and where to ask from next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestsAnswer {
    /// The last sequence number given out: ask `since` it for the next ones.
    pub last_seq: u64,
    /// False when `stack up` runs with the request log off (`STACK_REQUEST_LOG=off`).
    pub enabled: bool,
    pub requests: Vec<RequestRecord>,
}

/// One logged request, as `stack requests` and the dashboard show it: nothing secret in it
/// (cookie and authorization values masked, secrets from the environment as `***`, the session
/// id cut to 8 characters).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub duration_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The alias the host is, if it is one.
    pub alias: Option<String>,
    /// The path alias rule that matched, from 1.
    pub rule: Option<u32>,
    pub deployment: Option<String>,
    pub instance: Option<u32>,
    /// The first 8 characters of the session id of a validly signed `connect.sid` cookie.
    pub session: Option<String>,
    /// The request headers, masked (left out of the dashboard's listing, which asks for one
    /// request's headers when it is clicked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// `GET /v1/logs`: the last `lines` stored lines from `since_ms` (ms since the Unix epoch)
/// on, then, with `follow`, live ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsQuery {
    /// A service (its live deployment) or a deployment id.
    pub target: String,
    pub lines: usize,
    pub since_ms: u64,
    pub follow: bool,
}

impl LogsQuery {
    fn parse(query: &str) -> Result<LogsQuery, BadRequest> {
        let mut target = None;
        let mut parsed = LogsQuery {
            target: String::new(),
            lines: DEFAULT_LOG_LINES,
            since_ms: 0,
            follow: false,
        };
        let number = |key: &str, value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| BadRequest::Query(format!("`{key}` is not a number")))
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "target" => target = Some(decode(value).map_err(BadRequest::Query)?),
                "lines" => {
                    parsed.lines = usize::try_from(number(key, value)?).unwrap_or(usize::MAX)
                }
                "since" => parsed.since_ms = number(key, value)?,
                "follow" => parsed.follow = value == "1" || value == "true",
                _ => {}
            }
        }
        parsed.target = target.ok_or_else(|| BadRequest::Query("`target` is missing".into()))?;
        Ok(parsed)
    }
}

/// An error answer: what went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Set by a `stack up` still starting: ask again after `> Ready!`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starting: bool,
}

/// The state an instance is in, as `stack ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    Starting,
    Ready,
    /// Running, but out of rotation: it did not answer the proxy in time.
    Unresponsive,
    Draining,
    Crashed,
    /// Exited 0 and stays stopped: a one-shot that did its work.
    Completed,
}

/// One instance in `stack ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub number: usize,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub state: InstanceState,
    pub restarts: u32,
}

/// One deployment in `stack ls` (and `stack ls --json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub id: String,
    pub service: String,
    pub url: String,
    /// The same deployment on the HTTPS port, when the proxy serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_url: Option<String>,
    pub state: DeploymentState,
    pub ready: usize,
    pub wanted: usize,
    /// The service's current deployment.
    pub current: bool,
    pub created_ms: u64,
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
    /// What a WAITING first deployment still waits for (`db healthy, migrate completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

impl DeploymentStatus {
    pub fn from_live(
        deployment: &LiveDeployment,
        proxy_port: u16,
        https_port: Option<u16>,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let instances = deployment
            .instances
            .iter()
            .map(|instance| {
                let port = instance.port.load(Ordering::Acquire);
                let pid = instance.pid.load(Ordering::Acquire);
                let state = if instance.crashed.load(Ordering::Acquire) {
                    InstanceState::Crashed
                } else if instance.draining.load(Ordering::Acquire) {
                    InstanceState::Draining
                } else if instance.unresponsive.load(Ordering::Acquire) {
                    InstanceState::Unresponsive
                } else if instance.ready.load(Ordering::Acquire) {
                    InstanceState::Ready
                } else if instance.completed.load(Ordering::Acquire) {
                    InstanceState::Completed
                } else {
                    InstanceState::Starting
                };
                InstanceStatus {
                    number: instance.number,
                    port: (port != 0).then_some(port),
                    pid: (pid != 0).then_some(pid),
                    state,
                    restarts: instance.restarts.load(Ordering::Acquire),
                }
            })
            .collect();
        DeploymentStatus {
            id: deployment.spec.id.clone(),
            service: deployment.spec.service.clone(),
            // A worker has no port and no host.
            url: if deployment.spec.settings.is_worker() {
                "(worker)".into()
            } else {
                deployment_url(&deployment.spec.id, proxy_port)
            },
            https_url: if deployment.spec.settings.is_worker() {
                None
            } else {
                deployment_https_url(&deployment.spec.id, https_port)
            },
            state: deployment.state(),
            ready: deployment.n_ready(),
            wanted: deployment.wanted,
            current: deployment.current,
            created_ms: deployment.spec.created_ms,
            instances,
            waiting_for: None,
        }
    }

    /// Every running deployment, oldest first.
    pub fn all_live(snapshot: &Snapshot, proxy_port: u16, https_port: Option<u16>) -> Vec<Self> {
        snapshot
            .deployments
            .iter()
            .map(|deployment| Self::from_live(deployment, proxy_port, https_port))
            .collect()
    }

    /// A service whose new build is under way: no deployment id yet (the build decides it).
    pub fn building(service: String, started_ms: u64, wanted: usize) -> Self {
        DeploymentStatus {
            id: String::new(),
            service,
            url: String::new(),
            https_url: None,
            state: DeploymentState::Building,
            ready: 0,
            wanted,
            current: false,
            created_ms: started_ms,
            instances: Vec::new(),
            waiting_for: None,
        }
    }

    /// What is on disk when no `stack up` runs: every recorded deployment, STOPPED.
    pub fn all_stored(state: &State, proxy_port: u16) -> Vec<Self> {
        let mut all: Vec<Self> = state
            .deployments
            .iter()
            .flat_map(|(service, history)| {
                history.deployments.iter().map(move |record| {
                    let current = history.current.as_deref() == Some(record.id.as_str());
                    DeploymentStatus {
                        id: record.id.clone(),
                        service: service.clone(),
                        // A worker has no port and no host, running or not.
                        url: if record.worker {
                            "(worker)".into()
                        } else {
                            deployment_url(&record.id, proxy_port)
                        },
                        https_url: if record.worker {
                            None
                        } else {
                            deployment_https_url(&record.id, state.https_port)
                        },
                        state: DeploymentState::Stopped,
                        ready: 0,
                        wanted: if current { state.scale_of(service) } else { 0 },
                        current,
                        created_ms: record.created_ms,
                        instances: Vec::new(),
                        waiting_for: None,
                    }
                })
            })
            .collect();
        all.sort_by_key(|status| status.created_ms);
        all
    }
}

/// `http://<deployment>.localhost:<port>` (no port for 80).
pub fn deployment_url(host_label: &str, proxy_port: u16) -> String {
    http_url(&format!("{host_label}.localhost"), proxy_port)
}

/// `http://<host>:<port>` (no port for 80): a host's URL on the proxy's port.
pub fn http_url(host: &str, proxy_port: u16) -> String {
    if proxy_port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{proxy_port}")
    }
}

/// `https://<host>:<port>` (no port for 443): a host's URL on the HTTPS port.
pub fn https_url(host: &str, https_port: u16) -> String {
    if https_port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{https_port}")
    }
}

/// `https://<deployment>.localhost:<port>`, when there is an HTTPS port.
pub fn deployment_https_url(host_label: &str, https_port: Option<u16>) -> Option<String> {
    https_port.map(|port| https_url(&format!("{host_label}.localhost"), port))
}

/// The `http://` URL of a deployment, and its `https://` one beside it when there is an HTTPS
/// port, as `> Ready!` shows them.
pub fn deployment_urls(host_label: &str, proxy_port: u16, https_port: Option<u16>) -> String {
    let http = deployment_url(host_label, proxy_port);
    match https_port {
        Some(port) => format!(
            "{http} {}",
            https_url(&format!("{host_label}.localhost"), port)
        ),
        None => http,
    }
}

/// `POST /v1/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// A service (its live deployment) or a deployment id.
    pub target: String,
    pub instances: usize,
}

/// `POST /v1/restart`: new processes for a service's live deployment or a deployment, one
/// instance at a time, or for one instance only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestartRequest {
    /// A service (its live deployment) or a deployment id.
    pub target: String,
    /// Only this instance (the number `stack ls` shows); every one when absent.
    #[serde(default)]
    pub instance: Option<usize>,
}

impl RestartRequest {
    /// `reader`, `reader-abcdefghij`, or one instance as its log lines name it: `reader.1`.
    pub fn parse(target: &str) -> RestartRequest {
        let (target, instance) = split_instance(target);
        RestartRequest {
            target: target.into(),
            instance,
        }
    }
}

/// A service or deployment and, when `target` names one instance as its log lines do
/// (`reader.1`), that instance's number. Service names and deployment ids have no `.`.
pub fn split_instance(target: &str) -> (&str, Option<usize>) {
    target
        .rsplit_once('.')
        .filter(|(_, number)| !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(base, number)| Some((base, Some(number.parse().ok()?))))
        .unwrap_or((target, None))
}

/// What `find` finds for `target`, else, when `target` names one instance (`reader.1`), for
/// its service or deployment, with that instance's number.
pub fn find_with_instance<T, E>(
    target: &str,
    mut find: impl FnMut(&str) -> Result<Option<T>, E>,
) -> Result<Option<(T, Option<usize>)>, E> {
    if let Some(found) = find(target)? {
        return Ok(Some((found, None)));
    }
    match split_instance(target) {
        (base, Some(number)) => Ok(find(base)?.map(|found| (found, Some(number)))),
        (_, None) => Ok(None),
    }
}

/// The answer to a restart: the instances that run new processes now, in the order they
/// were restarted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartAnswer {
    pub deployment: String,
    pub service: String,
    pub instances: Vec<usize>,
}

/// `GET /v1/env`: what a service's instances get beyond the environment `stack up` was
/// started in (the dotenv file, `-e`, the generated secret, the managed Redis, the service's
/// own `env`), `PORT` aside. Secrets in the clear: it is for `stack exec`, over the owner-only
/// control socket, and is never printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvAnswer {
    pub deployment: String,
    pub service: String,
    pub env: std::collections::BTreeMap<String, String>,
}

/// The answer to a scale: which deployment, how many take traffic now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleAnswer {
    pub deployment: String,
    pub ready: usize,
    pub wanted: usize,
    /// Recorded by a `stack up` still building: `deployment` is the service, whose first
    /// deployment starts with `wanted` instances.
    #[serde(default)]
    pub at_start: bool,
    /// With `at_start`: the deployment has not started because it waits for its
    /// `depends_on` (`db healthy`); it starts with `wanted` instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// The answer to `DELETE /v1/deployments/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveAnswer {
    pub removed: String,
}

/// `POST /v1/aliases`: set or remove one alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AliasChange {
    Set { host: String, alias: Alias },
    Remove { host: String },
}

impl AliasChange {
    pub fn host(&self) -> &str {
        match self {
            AliasChange::Set { host, .. } | AliasChange::Remove { host } => host,
        }
    }

    /// Applies the change to a state (inside [`crate::state::Store::update`]).
    pub fn apply_to(&self, state: &mut State) {
        match self {
            AliasChange::Set { host, alias } => {
                state.aliases.insert(host.clone(), alias.clone());
            }
            AliasChange::Remove { host } => {
                state.aliases.remove(host);
            }
        }
    }
}

/// Where an alias change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The running `stack up` validated it, saved it and swapped its routing table.
    Live,
    /// No `stack up` runs: saved in `.stack/state.json`; it applies at the next `stack up`.
    Recorded,
    /// The `stack up` is still building: saved in `.stack/state.json`, which it reads before
    /// it starts the services.
    AtStart,
}

/// The answer to an alias change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasAnswer {
    pub applied: Applied,
}

/// `POST /v1/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub service: String,
    #[serde(default)]
    pub deployment: Option<String>,
}

/// The answer to a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackAnswer {
    /// Now live.
    pub deployment: String,
    /// Live before, now stopped.
    pub previous: Option<String>,
    /// Its URL; a worker has none.
    #[serde(default)]
    pub url: Option<String>,
    pub elapsed_ms: u64,
}

/// The answer to `GET /v1/redis`. The URL may carry a password: it is answered only over the
/// 0600 socket and never logged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisAnswer {
    pub url: String,
    /// The managed Redis's state; `None` for one `REDIS_SESSION_URL` names.
    #[serde(default)]
    pub managed: Option<RedisStatus>,
    /// The `SESSION_SECRET` the services get (given or generated), so `stack redis get` checks
    /// a cookie as they do. Like the URL's password, it only crosses the 0600 socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_secret: Option<String>,
}

/// The answer to `POST /v1/down`: everything is being stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownAnswer {
    pub stopping: bool,
}

/// `text`, at most `at_most` characters of it, then `…` and how many bytes were left out: an
/// error that repeats what a request sent (a megabyte of service name) stays readable.
pub fn cut_echoed(text: String, at_most: usize) -> String {
    match text.char_indices().nth(at_most) {
        None => text,
        Some((end, _)) => format!("{}… ({} more bytes)", &text[..end], text.len() - end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::aliases::AliasTarget;

    fn round_trip(request: Request) {
        let path = request.path();
        assert!(
            path.parse::<http::Uri>().is_ok(),
            "`{path}` is not a valid request target"
        );
        let parsed = Request::parse(&request.method(), &path, &request.body());
        assert_eq!(parsed, Ok(request), "through `{path}`");
    }

    #[test]
    fn a_log_line_is_of_the_instance_its_source_names() {
        let line = crate::supervisor::logs::LogLine {
            time_ms: 0,
            source: "reader.12".into(),
            text: String::new(),
        };
        assert!(line.is_of(None));
        assert!(line.is_of(Some(12)));
        assert!(!line.is_of(Some(1)));
        assert_eq!(split_instance("reader.12"), ("reader", Some(12)));
    }

    #[test]
    fn a_restart_target_names_one_instance_by_its_log_name() {
        let parsed = |text: &str| {
            let request = RestartRequest::parse(text);
            (request.target, request.instance)
        };
        assert_eq!(parsed("reader"), ("reader".into(), None));
        assert_eq!(parsed("reader.1"), ("reader".into(), Some(1)));
        assert_eq!(
            parsed("reader-abcdefghij.12"),
            ("reader-abcdefghij".into(), Some(12))
        );
        assert_eq!(
            parsed("reader.localhost"),
            ("reader.localhost".into(), None)
        );
        assert_eq!(parsed("reader."), ("reader.".into(), None));
        // Too many digits for a number: no instance, the whole text is the target.
        assert_eq!(
            parsed("reader.99999999999999999999999"),
            ("reader.99999999999999999999999".into(), None)
        );
    }

    #[test]
    fn every_request_round_trips_through_its_path_and_body() {
        for text in ["writer", "a b", "%", "../x", "a/b", "é?#&=+", ""] {
            round_trip(Request::Remove {
                deployment: text.into(),
            });
            round_trip(Request::Env {
                target: text.into(),
            });
            round_trip(Request::Restart(RestartRequest {
                target: text.into(),
                instance: Some(3),
            }));
            round_trip(Request::Logs(LogsQuery {
                target: text.into(),
                lines: 7,
                since_ms: 1_795_000_000_000,
                follow: true,
            }));
            round_trip(Request::Scale(ScaleRequest {
                target: text.into(),
                instances: 3,
            }));
            round_trip(Request::Rollback(RollbackRequest {
                service: text.into(),
                deployment: Some(text.into()),
            }));
        }
        round_trip(Request::Alias(AliasChange::Set {
            host: "hi.localhost".into(),
            alias: Alias::new(AliasTarget::Plain {
                target: "hello".into(),
            }),
        }));
        round_trip(Request::Alias(AliasChange::Remove {
            host: "hi.localhost".into(),
        }));
        for request in [
            Request::Deployments,
            Request::Redis,
            Request::Down,
            Request::Requests { since: 0 },
            Request::Requests { since: 42 },
        ] {
            round_trip(request);
        }
    }

    #[test]
    fn what_does_not_parse_is_a_bad_request_not_a_guess() {
        let get = |path: &str| Request::parse(&Method::GET, path, b"");
        assert!(matches!(
            get("/v1/nothing"),
            Err(BadRequest::NoRoute { .. })
        ));
        assert!(matches!(get("/v1/logs?lines=5"), Err(BadRequest::Query(_))));
        assert!(matches!(
            get("/v1/logs?target=a&lines=many"),
            Err(BadRequest::Query(_))
        ));
        assert!(matches!(
            get("/v1/logs?target=%FF"),
            Err(BadRequest::Query(_))
        ));
        let delete = |path: &str| Request::parse(&Method::DELETE, path, b"");
        assert!(matches!(
            delete("/v1/deployments"),
            Err(BadRequest::NoRoute { .. })
        ));
        assert!(matches!(
            delete("/v1/deployments/a/b"),
            Err(BadRequest::NoRoute { .. })
        ));
        assert!(matches!(
            Request::parse(&Method::POST, "/v1/scale", b"{"),
            Err(BadRequest::Body(_))
        ));
    }

    #[test]
    fn a_long_echo_is_cut_and_a_short_one_kept() {
        assert_eq!(cut_echoed("short".into(), 10), "short");
        assert_eq!(
            cut_echoed(format!("`{}`", "é".repeat(20)), 5),
            "`éééé… (33 more bytes)"
        );
    }
}
