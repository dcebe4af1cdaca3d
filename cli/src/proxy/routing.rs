//! The routing table: which host goes to which deployment, external URL or error, and the
//! handle through which the supervisor swaps a whole new table in.
//!
//! Owns [`Routing`] (the live, swappable table), [`RoutingTable`], [`HostRoute`], [`Target`],
//! [`Deployment`] and [`Backend`] with the state the proxy and the supervisor share (out of
//! rotation, requests in flight). It never does I/O and never blocks: requests read the table
//! through `arc-swap` without locks, and a swap never waits for requests to finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, StatusCode};
use tokio::sync::watch;

use crate::rules::RuleSet;

/// A cheap, cloneable handle to the live routing table.
///
/// Requests call [`Routing::load`] (lock-free) and keep the `Arc` they got for their whole
/// life, so a request in flight finishes on the table it started with. The supervisor calls
/// [`Routing::swap`] with a complete new table; every clone sees it at once.
#[derive(Clone)]
pub struct Routing {
    shared: Arc<RoutingShared>,
}

struct RoutingShared {
    table: ArcSwap<RoutingTable>,
    /// Bumped on every swap, so a request waiting for a starting deployment wakes up.
    version: watch::Sender<u64>,
}

impl Routing {
    /// A handle serving `table` until the first swap.
    pub fn new(table: RoutingTable) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            shared: Arc::new(RoutingShared {
                table: ArcSwap::from_pointee(table),
                version,
            }),
        }
    }

    /// Replaces the whole table atomically and wakes every request waiting for a change.
    pub fn swap(&self, table: RoutingTable) {
        self.shared.table.store(Arc::new(table));
        self.shared.version.send_modify(|version| *version += 1);
    }

    /// The current table (lock-free).
    pub fn load(&self) -> Arc<RoutingTable> {
        self.shared.table.load_full()
    }

    /// A receiver that changes on every swap. Subscribe *before* [`Routing::load`] so a swap
    /// between the two is not missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }
}

/// Every host the proxy answers for, mapped to its route. Hosts are stored lower-case and
/// without a port; lookups ignore the port and the case of the request's `Host`.
#[derive(Default)]
pub struct RoutingTable {
    /// foldhash, not SipHash: looked up once per request, and only hosts the supervisor put in
    /// are stored, so a client's `Host` cannot flood it.
    hosts: HashMap<String, HostRoute, foldhash::fast::RandomState>,
}

impl RoutingTable {
    /// An empty table: every host gets 404 `no_route`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `host` (any case, with or without `:port`) to `route`, replacing an earlier
    /// route for the same host.
    pub fn insert(&mut self, host: &str, route: HostRoute) {
        self.hosts.insert(host_key(host).into_owned(), route);
    }

    /// The route for a request's `Host` value (any case, port ignored).
    pub fn get(&self, host: &str) -> Option<&HostRoute> {
        self.hosts.get(host_key(host).as_ref())
    }

    /// Every host in the table, sorted (for the 404 body and for listings).
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.hosts.keys().cloned().collect();
        hosts.sort();
        hosts
    }
}

/// The lookup key of a host: lower-case, no port, no trailing dot. Borrows when the host is
/// already in that form (the common case), so the request path does not allocate.
pub fn host_key(host: &str) -> std::borrow::Cow<'_, str> {
    // The common case in one pass: already lower-case, no port, no trailing dot.
    let plain = host.bytes().all(|byte| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'.'
    });
    if plain && !host.ends_with('.') {
        return std::borrow::Cow::Borrowed(host);
    }
    let without_port = strip_port(host);
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|byte| byte.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: `[::1]:3000` keeps `[::1]`.
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) => name,
        _ => host,
    }
}

/// What one host serves.
pub enum HostRoute {
    /// Every request goes to one target: a plain alias, `<deployment-id>.localhost` or
    /// `<service>.localhost`.
    Target(Target),
    /// A path alias: the first matching rule picks the target at the same index.
    Rules(PathRules),
}

impl HostRoute {
    /// A path-alias route. `targets[i]` serves `rules.rules()[i]`.
    pub fn rules(rules: Arc<RuleSet>, targets: Vec<Target>) -> Result<Self, RoutingError> {
        let n_rules = rules.rules().len();
        if n_rules != targets.len() {
            return Err(RoutingError::MisalignedTargets {
                n_rules,
                n_targets: targets.len(),
            });
        }
        Ok(Self::Rules(PathRules { rules, targets }))
    }
}

/// A rule set and one resolved target per rule, index-aligned (built by [`HostRoute::rules`]).
pub struct PathRules {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) targets: Vec<Target>,
}

impl PathRules {
    /// The rules, in file order.
    pub fn rule_set(&self) -> &RuleSet {
        &self.rules
    }

    /// The target of rule `index`.
    pub fn target(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)
    }
}

/// Errors building a table.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("a path alias has {n_rules} rules but {n_targets} targets")]
    MisalignedTargets { n_rules: usize, n_targets: usize },
}

/// Where a request goes once its host (and rule) is known.
#[derive(Clone)]
pub enum Target {
    /// A deployment of this stack, balanced over its instances.
    Deployment(Arc<Deployment>),
    /// A URL outside the stack, proxied as is (`http` only).
    External {
        scheme: Scheme,
        authority: Authority,
    },
    /// Known but not serving: answered with `status` and `message` (503 for a CRASHED service,
    /// 502 for a deployment that disappeared), so one rule can fail while the others serve.
    Unavailable { status: StatusCode, message: String },
}

/// A deployment as the proxy sees it.
pub struct Deployment {
    /// `writer-gkdldldejq`; sent back in `x-stack-deployment`.
    pub id: String,
    /// `writer`.
    pub service: String,
    /// The ready instances. An instance that is starting is not listed; count it in
    /// `n_starting` instead.
    pub instances: Vec<Arc<Backend>>,
    /// Instances starting but not ready yet. While this is non-zero and no instance is ready,
    /// requests wait (up to `ProxyConfig::starting_wait`) for a swap instead of failing.
    pub n_starting: usize,
    pub(crate) deployment_header: HeaderValue,
    /// Round-robin cursor; starts again at 0 in each table version, which is harmless.
    pub(crate) next: AtomicUsize,
}

impl Deployment {
    pub fn new(
        id: impl Into<String>,
        service: impl Into<String>,
        instances: Vec<Arc<Backend>>,
        n_starting: usize,
    ) -> Self {
        let id = id.into();
        let deployment_header = HeaderValue::from_str(&id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-deployment-id"));
        Self {
            id,
            service: service.into(),
            instances,
            n_starting,
            deployment_header,
            next: AtomicUsize::new(0),
        }
    }

    /// Whether some instance is in rotation.
    pub fn has_ready_instance(&self) -> bool {
        self.instances
            .iter()
            .any(|instance| !instance.is_out_of_rotation())
    }
}

/// One instance (process) of a deployment as the proxy sees it: where it listens and what
/// the proxy and the supervisor share about it.
///
/// Keep the same `Arc<Backend>` across table versions for as long as the process lives: the
/// two counters below are only meaningful on the instance the proxy actually used.
///
/// - **out of rotation** ([`Backend::is_out_of_rotation`]): set by the proxy when a connect
///   to this instance fails (nothing was sent), or when it sent no response head within the
///   response timeout (it hangs). The proxy then skips it while another instance
///   is in rotation. The supervisor calls [`Backend::put_back_in_rotation`] when its
///   readiness check passes again; the proxy also clears it itself when a later last-resort
///   request to it gets a response.
/// - **in flight** ([`Backend::in_flight`]): requests sent to this instance whose response
///   body has not ended (or been dropped) yet, WebSocket tunnels included. To drain an instance:
///   swap in a table without it, wait until `in_flight()` is 0 (bounded by a grace period),
///   then stop the process.
pub struct Backend {
    /// 1-based instance number; sent back in `x-stack-instance`.
    pub number: u32,
    /// Where the instance listens (loopback).
    pub addr: SocketAddr,
    pub(crate) authority: Authority,
    /// The authority as text: the key of the instance's idle connections in the pool.
    pub(crate) pool_key: Arc<str>,
    pub(crate) host_header: HeaderValue,
    pub(crate) number_header: HeaderValue,
    out_of_rotation: AtomicBool,
    in_flight: AtomicUsize,
    served: AtomicU64,
}

impl Backend {
    pub fn new(number: u32, addr: SocketAddr) -> Self {
        let text = addr.to_string();
        Self {
            number,
            addr,
            authority: text
                .parse()
                .expect("a SocketAddr always formats as a valid authority"),
            host_header: HeaderValue::from_str(&text)
                .expect("a SocketAddr always formats as a valid header value"),
            pool_key: Arc::from(text.as_str()),
            number_header: HeaderValue::from(number),
            out_of_rotation: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// Whether the proxy took this instance out of rotation after a connect failure.
    pub fn is_out_of_rotation(&self) -> bool {
        self.out_of_rotation.load(Ordering::Relaxed)
    }

    /// Called by the supervisor when the instance is seen ready again.
    pub fn put_back_in_rotation(&self) {
        self.out_of_rotation.store(false, Ordering::Relaxed);
    }

    pub(crate) fn take_out_of_rotation(&self) {
        self.out_of_rotation.store(true, Ordering::Relaxed);
    }

    /// Requests sent to this instance whose response has not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests this instance has answered (response headers received), for logs and tests.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub(crate) fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard {
            instance: Arc::clone(self),
        }
    }

    pub(crate) fn record_response(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one request in [`Backend::in_flight`] until dropped.
pub struct InFlightGuard {
    instance: Arc<Backend>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_ignores_port_case_and_trailing_dot() {
        for (host, key) in [
            ("counter-demo.localhost:3000", "counter-demo.localhost"),
            ("Writer-ABC.LocalHost", "writer-abc.localhost"),
            ("api.localhost.", "api.localhost"),
            ("[::1]:3000", "[::1]"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(host_key(host), key, "{host}");
        }
    }
}
