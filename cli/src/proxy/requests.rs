//! The request log: the last [`CAPACITY`] requests the proxy answered, and each path alias
//! rule's hit count, for `stack requests` and the dashboard.
//!
//! Owns the bounded ring and the counters. The request path copies the host, the path and the
//! headers into one compact buffer per entry (never keeping a slice of the request: hyper's
//! header values are slices of its read buffer, and an entry holding one would keep that whole
//! buffer alive and make hyper allocate a new one for the next request; measured: 12-15% more
//! CPU per request and 8 KB per entry) and takes one short lock to push it when the response
//! body is done, so logging costs little (`bench/RESULTS.md`, issue 17). Everything that costs more (masking,
//! verifying a session cookie, JSON) happens when an entry is read, never on the request path.
//! It never stores or returns anything a reader has not asked for, and never grows past
//! [`CAPACITY`] entries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method};

use super::routing::host_key;

/// Requests kept: the oldest is dropped when one more comes.
pub const CAPACITY: usize = 1000;

/// One answered request, as the proxy saw it.
#[derive(Clone, Debug)]
pub struct LoggedRequest {
    /// Position in the log since the proxy started, from 1; never reused.
    pub seq: u64,
    /// When the request head was read.
    pub time: SystemTime,
    /// From the request head to the end of the response body.
    pub duration: Duration,
    pub method: Method,
    /// The `Host` the client sent, as sent ("" without one).
    pub host: Box<str>,
    /// The path (normalised, as routed) and the query.
    pub path: Box<str>,
    pub status: u16,
    /// The request body's `Content-Length` (a chunked request body counts 0).
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// The path alias rule that matched, counted from 1.
    pub rule: Option<u32>,
    /// The deployment id the request went to.
    pub deployment: Option<HeaderValue>,
    /// The instance number that answered.
    pub instance: Option<u32>,
    /// The request's headers as the client sent them, minus hop-by-hop ones. Raw: a reader
    /// masks `cookie` and `authorization` before showing them.
    pub headers: RawHeaders,
}

/// Header lines `name: value\n` in one buffer (names lower case; a value never holds a line
/// break, which HTTP forbids). One allocation per request instead of one per header.
#[derive(Clone, Debug, Default)]
pub struct RawHeaders(Box<[u8]>);

impl RawHeaders {
    pub fn copy_of(headers: &HeaderMap) -> Self {
        let size = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 3)
            .sum();
        let mut buffer = Vec::with_capacity(size);
        for (name, value) in headers {
            buffer.extend_from_slice(name.as_str().as_bytes());
            buffer.extend_from_slice(b": ");
            buffer.extend_from_slice(value.as_bytes());
            buffer.push(b'\n');
        }
        Self(buffer.into_boxed_slice())
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| {
                let colon = line.iter().position(|byte| *byte == b':')?;
                let name = std::str::from_utf8(&line[..colon]).ok()?;
                Some((name, line.get(colon + 2..).unwrap_or_default()))
            })
    }

    /// Only the `cookie` lines (what a listing needs for the session column).
    pub fn cookies_only(&self) -> Self {
        let mut buffer = Vec::new();
        for (name, value) in self.iter().filter(|(name, _)| *name == "cookie") {
            buffer.extend_from_slice(name.as_bytes());
            buffer.extend_from_slice(b": ");
            buffer.extend_from_slice(value);
            buffer.push(b'\n');
        }
        Self(buffer.into_boxed_slice())
    }
}

/// What a request learns on its way, filled in by the handler as it goes.
#[derive(Default)]
pub struct Trace {
    pub path: Option<http::uri::PathAndQuery>,
    pub rule: Option<u32>,
    pub deployment: Option<HeaderValue>,
    pub instance: Option<u32>,
}

/// A cheap, cloneable handle to one proxy's request log.
#[derive(Clone, Default)]
pub struct RequestLog {
    shared: Arc<Mutex<Ring>>,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<LoggedRequest>,
    last_seq: u64,
    /// Per host (lookup key), the hits of each rule (index from 0).
    hits: HashMap<Box<str>, Vec<u64>, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestLog")
    }
}

impl RequestLog {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.shared
            .lock()
            .expect("never poisoned: nothing panics while it is held")
    }

    /// Adds `entry` (its `seq` is set here), dropping the oldest one past [`CAPACITY`].
    pub fn record(&self, mut entry: LoggedRequest) {
        let mut ring = self.lock();
        ring.last_seq += 1;
        entry.seq = ring.last_seq;
        if let Some(rule) = entry.rule {
            let key = host_key(&entry.host);
            let index = rule as usize - 1;
            let counts = match ring.hits.get_mut(key.as_ref()) {
                Some(counts) => counts,
                None => ring.hits.entry(key.as_ref().into()).or_default(),
            };
            if counts.len() <= index {
                counts.resize(index + 1, 0);
            }
            counts[index] += 1;
        }
        let evicted = if ring.entries.len() == CAPACITY {
            ring.entries.pop_front()
        } else {
            None
        };
        ring.entries.push_back(entry);
        drop(ring);
        // The evicted entry's headers are freed outside the lock.
        drop(evicted);
    }

    /// Entries after `seq` (0: every entry), oldest first.
    pub fn since(&self, seq: u64) -> Vec<LoggedRequest> {
        let ring = self.lock();
        let first_kept = ring.entries.front().map_or(0, |entry| entry.seq);
        let skip = (seq + 1).saturating_sub(first_kept) as usize;
        ring.entries.iter().skip(skip).cloned().collect()
    }

    /// The last `at_most` entries after `seq`, oldest first, each with only its `cookie`
    /// headers (what a listing needs for the session column): cheaper to copy than
    /// [`RequestLog::since`], for a reader that shows headers on demand ([`RequestLog::get`]).
    pub fn since_brief(&self, seq: u64, at_most: usize) -> Vec<LoggedRequest> {
        let ring = self.lock();
        let first_kept = ring.entries.front().map_or(0, |entry| entry.seq);
        let skip = (seq + 1).saturating_sub(first_kept) as usize;
        let n_after = ring.entries.len().saturating_sub(skip);
        let skip = skip + n_after.saturating_sub(at_most);
        ring.entries
            .iter()
            .skip(skip)
            .map(|entry| {
                let cookies = entry.headers.cookies_only();
                LoggedRequest {
                    seq: entry.seq,
                    time: entry.time,
                    duration: entry.duration,
                    method: entry.method.clone(),
                    host: entry.host.clone(),
                    path: entry.path.clone(),
                    status: entry.status,
                    bytes_in: entry.bytes_in,
                    bytes_out: entry.bytes_out,
                    rule: entry.rule,
                    deployment: entry.deployment.clone(),
                    instance: entry.instance,
                    headers: cookies,
                }
            })
            .collect()
    }

    /// The entry `seq`, if it is still kept.
    pub fn get(&self, seq: u64) -> Option<LoggedRequest> {
        let ring = self.lock();
        let first_kept = ring.entries.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first_kept)?).ok()?;
        ring.entries.get(index).cloned()
    }

    /// The last seq given out (0 before the first request).
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// Hits of each rule of `host`'s path alias (index 0 is rule 1).
    pub fn hits(&self, host: &str) -> Vec<u64> {
        self.lock()
            .hits
            .get(host_key(host).as_ref())
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets `host`'s hit counts (its rules changed, so old numbers would mean other rules).
    pub fn reset_hits(&self, host: &str) {
        self.lock().hits.remove(host_key(host).as_ref());
    }
}

/// A request being answered: becomes a [`LoggedRequest`] when its response body is done.
pub struct Pending {
    pub log: RequestLog,
    pub started: tokio::time::Instant,
    pub entry: LoggedRequest,
}

impl Pending {
    /// Logs the request with `bytes_out` sent.
    pub fn finish(mut self, bytes_out: u64) {
        self.entry.duration = self.started.elapsed();
        self.entry.bytes_out = bytes_out;
        self.log.record(self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, rule: Option<u32>) -> LoggedRequest {
        LoggedRequest {
            seq: 0,
            time: SystemTime::now(),
            duration: Duration::ZERO,
            method: Method::GET,
            host: host.into(),
            path: "/".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            rule,
            deployment: None,
            instance: None,
            headers: RawHeaders::default(),
        }
    }

    #[test]
    fn raw_headers_keep_names_values_and_order() {
        let mut headers = HeaderMap::new();
        headers.append("host", HeaderValue::from_static("a.localhost"));
        headers.append("cookie", HeaderValue::from_static("a=1"));
        headers.append("x-odd", HeaderValue::from_bytes(b"caf\xe9: x").unwrap());
        headers.append("cookie", HeaderValue::from_static("b=2"));
        let raw = RawHeaders::copy_of(&headers);
        let pairs: Vec<(&str, &[u8])> = raw.iter().collect();
        assert_eq!(
            pairs,
            [
                ("host", &b"a.localhost"[..]),
                ("cookie", b"a=1"),
                ("cookie", b"b=2"),
                ("x-odd", b"caf\xe9: x"),
            ]
        );
        let cookies: Vec<_> = raw
            .cookies_only()
            .iter()
            .map(|(_, value)| value.to_vec())
            .collect();
        assert_eq!(cookies, [b"a=1".to_vec(), b"b=2".to_vec()]);
    }

    #[test]
    fn keeps_the_last_capacity_entries_in_order() {
        let log = RequestLog::new();
        for _ in 0..CAPACITY + 5 {
            log.record(entry("a.localhost", None));
        }
        let all = log.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 6);
        assert_eq!(all.last().unwrap().seq, (CAPACITY + 5) as u64);
        let tail = log.since((CAPACITY + 2) as u64);
        assert_eq!(
            tail.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            [1003, 1004, 1005]
        );
        assert!(log.since(log.last_seq()).is_empty());
        let brief = log.since_brief(1000, 2);
        assert_eq!(
            brief.iter().map(|entry| entry.seq).collect::<Vec<_>>(),
            [1004, 1005]
        );
        assert_eq!(log.get(1004).map(|entry| entry.seq), Some(1004));
        assert!(log.get(5).is_none(), "dropped");
        assert!(log.get(1006).is_none(), "not yet");
    }

    #[test]
    fn counts_hits_per_alias_rule_whatever_the_port_and_case() {
        let log = RequestLog::new();
        log.record(entry("Counter-Demo.localhost:3000", Some(2)));
        log.record(entry("counter-demo.localhost", Some(2)));
        log.record(entry("counter-demo.localhost", Some(1)));
        log.record(entry("reader.localhost", None));
        assert_eq!(log.hits("counter-demo.localhost"), [1, 2]);
        assert_eq!(log.hits("reader.localhost"), Vec::<u64>::new());
        log.reset_hits("counter-demo.localhost");
        assert_eq!(log.hits("counter-demo.localhost"), Vec::<u64>::new());
    }
}
