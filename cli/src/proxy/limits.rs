//! Every timeout and size limit of the proxy, in one [`ProxyConfig`] with production defaults,
//! so tests can set short ones; and the two things the daemon plugs in (the request log, the
//! reserved host).
//!
//! Owns the numbers only; the server (`server.rs`), the upstream side (`upstream.rs`,
//! `pool.rs`) and the upstream client (`client.rs`, the body limit) apply them.

use std::time::Duration;

use super::requests::RequestLog;
use super::reserved::ReservedHost;

/// Timeouts and limits. `ProxyConfig::default()` is what `stack up` uses.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// A client must send a whole request head within this time, or its connection is closed.
    /// The wait starts when the proxy starts waiting for a head (at connect, and when the last
    /// response is sent), so it also bounds how long a keep-alive connection may sit idle
    /// between two requests. Enforced by the server's watchdog (`watchdog.rs`): the
    /// connection is closed between 1 and 1.25 times this after the wait began.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; above it: 431.
    pub max_header_size: usize,
    /// Most header fields in one request; above it: 431.
    pub max_headers: usize,
    /// Largest request body in bytes; `None` = no limit. Above it: 413.
    pub max_body_size: Option<u64>,
    /// A client connection on which no byte moved (either way) for this long is closed, between
    /// 1 and 1.25 times this after its last byte (same watchdog). Keep it above
    /// `response_timeout` + `starting_wait`: a request waiting on its upstream moves no bytes
    /// either.
    pub idle_timeout: Duration,
    /// Time to establish a TCP connection to an upstream before trying the next instance.
    pub connect_timeout: Duration,
    /// Time for an upstream to send its response headers after the request went out: 504,
    /// between 1 and 1.25 times this after the attempt began (the server's watchdog).
    pub response_timeout: Duration,
    /// How long a request for a deployment with instances starting but none ready waits for a
    /// routing swap that makes one ready.
    pub starting_wait: Duration,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
    /// Idle upstream connections kept per instance.
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Where answered requests are logged; `None`: not logged.
    pub request_log: Option<RequestLog>,
    /// The host the proxy serves itself (the dashboard); `None`: every host is routed.
    pub reserved: Option<ReservedHost>,
}

impl ProxyConfig {
    /// The defaults with another response timeout, the idle timeout kept above it.
    pub fn with_response_timeout(response_timeout: Duration) -> Self {
        let defaults = Self::default();
        let idle_timeout = defaults
            .idle_timeout
            .max(response_timeout + defaults.starting_wait + Duration::from_secs(5));
        Self {
            response_timeout,
            idle_timeout,
            ..defaults
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            max_headers: 100,
            max_body_size: None,
            idle_timeout: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            starting_wait: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            pool_max_idle_per_host: 256,
            pool_idle_timeout: Duration::from_secs(60),
            request_log: None,
            reserved: None,
        }
    }
}
