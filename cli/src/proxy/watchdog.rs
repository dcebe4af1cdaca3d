//! The timeouts of a client connection, watched by one cheap periodic check per connection
//! rather than a timer per request: the header timeout (a request head must be complete within
//! `header_read_timeout` of the proxy starting to wait for it, idle keep-alive time included,
//! as hyper's own timer would), the idle timeout (no byte moved either way), and the response
//! timeout (an upstream sent no response head in time: the request gets its 504).
//!
//! Owns [`Activity`] (counters the connection's I/O and requests bump, with no clock read and
//! no timer on the request path), [`Exchange`] (one request, and its wait for the upstream),
//! [`WatchedIo`], [`WatchedBody`] and [`Activity::watch`], which completes when the connection
//! must be cut. Checks run four times per shortest period, so a limit takes effect between 1
//! and 1.25 periods after the condition began.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::body::ResponseBody;

/// Checks per shortest period.
const CHECKS_PER_PERIOD: u32 = 4;

/// The limits a connection is watched for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// No byte moved either way for this long.
    pub idle: Duration,
    /// Waiting this long for a request head that did not complete.
    pub head: Duration,
    /// Waiting this long for an upstream's response head.
    pub response: Duration,
}

/// Why a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    Idle,
    HeadTimeout,
}

impl Cut {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Idle => "idle timeout",
            Self::HeadTimeout => "request head not complete within the header timeout",
        }
    }
}

/// What a connection did, as counters: bytes moved (events; writes also on their own),
/// requests whose head arrived (started), responses fully handed to hyper or abandoned
/// (finished). hyper serves one request at a time on a connection, so `started == finished`
/// means it is waiting for the next head once it has written out the last response.
pub struct Activity {
    n_events: AtomicU64,
    n_writes: AtomicU64,
    n_started: AtomicU64,
    n_finished: AtomicU64,
    /// Upstream attempts sent, and those that ended (answered or failed): one is waiting
    /// while they differ. An attempt's number is `n_sent` once it is sent.
    n_sent: AtomicU64,
    n_ended: AtomicU64,
    /// The number of the attempt whose response timeout passed (0: none).
    timed_out: AtomicU64,
    /// The request waiting on an upstream (one at a time on a connection).
    waiting: AtomicWaker,
}

impl Activity {
    pub fn new() -> Self {
        Self {
            n_events: AtomicU64::new(0),
            n_writes: AtomicU64::new(0),
            n_started: AtomicU64::new(0),
            n_finished: AtomicU64::new(0),
            n_sent: AtomicU64::new(0),
            n_ended: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            waiting: AtomicWaker::new(),
        }
    }

    fn touch(&self) {
        self.n_events.fetch_add(1, Ordering::Relaxed);
    }

    fn touch_write(&self) {
        self.n_writes.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A request head is complete; the returned handle marks the exchange finished when
    /// dropped (with the response body).
    pub fn request_started(self: &Arc<Self>) -> Exchange {
        self.n_started.fetch_add(1, Ordering::Relaxed);
        Exchange {
            activity: Arc::clone(self),
        }
    }

    /// Completes when the connection should be cut: no byte moved for `limits.idle`, or a
    /// request head not complete `limits.head` after the wait for it began. On the way, ends
    /// the wait of a request whose upstream sent no response head within `limits.response`.
    pub async fn watch(&self, limits: Limits) -> Cut {
        let check_every = limits.idle.min(limits.head).min(limits.response) / CHECKS_PER_PERIOD;
        let check_every = check_every.max(Duration::from_millis(1));
        let checks_for = |period: Duration| {
            // The period in whole checks, rounded up: never cut early.
            let n = period.as_nanos().div_ceil(check_every.as_nanos());
            u64::try_from(n).unwrap_or(u64::MAX)
        };
        let (idle_checks, head_checks) = (checks_for(limits.idle), checks_for(limits.head));
        let response_checks = checks_for(limits.response);
        // The upstream attempt being waited for, and for how many checks.
        let mut upstream_wait: Option<(u64, u64)> = None;
        let mut ticks = tokio::time::interval(check_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let (mut events_seen, mut idle_for) = (self.n_events.load(Ordering::Relaxed), 0u64);
        // The head being waited for (by the count of requests started before it and the writes
        // so far: the wait starts once hyper has written out the last response, not when it
        // took the last body frame), and for how many checks.
        let mut waiting: Option<((u64, u64), u64)> = None;
        loop {
            ticks.tick().await;
            let events = self.n_events.load(Ordering::Relaxed);
            if events == events_seen {
                idle_for += 1;
                if idle_for >= idle_checks {
                    return Cut::Idle;
                }
            } else {
                (events_seen, idle_for) = (events, 0);
            }
            let sent = self.n_sent.load(Ordering::Relaxed);
            upstream_wait = if sent == self.n_ended.load(Ordering::Relaxed) {
                None
            } else {
                match upstream_wait {
                    Some((attempt, checks)) if attempt == sent => {
                        if checks + 1 >= response_checks {
                            self.timed_out.store(sent, Ordering::Release);
                            self.waiting.wake();
                        }
                        Some((attempt, checks + 1))
                    }
                    _ => Some((sent, 0)),
                }
            };
            let started = self.n_started.load(Ordering::Relaxed);
            let finished = self.n_finished.load(Ordering::Relaxed);
            if started != finished {
                waiting = None;
                continue;
            }
            let head = (started, self.n_writes.load(Ordering::Relaxed));
            waiting = match waiting {
                Some((waited_for, checks)) if waited_for == head => {
                    if checks + 1 >= head_checks {
                        return Cut::HeadTimeout;
                    }
                    Some((head, checks + 1))
                }
                // The wait began since the last check: counted from here, so never cut early.
                _ => Some((head, 0)),
            };
        }
    }
}

/// One request on a connection; dropped with its response body (or with the response when
/// the handler's future is dropped), which ends it.
pub struct Exchange {
    activity: Arc<Activity>,
}

impl Exchange {
    /// Waits for an upstream's response head (`sent`), or until the watchdog says the response
    /// timeout passed: `None`. Each call is one attempt with a timeout of its own.
    pub async fn upstream_response<F: Future>(&self, sent: F) -> Option<F::Output> {
        let activity = &*self.activity;
        let attempt = activity.n_sent.fetch_add(1, Ordering::Relaxed) + 1;
        // Ends the attempt however the wait ends, dropped future included.
        let _ended = AttemptEnded(activity);
        let mut sent = pin!(sent);
        poll_fn(|cx| {
            if let Poll::Ready(output) = sent.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            activity.waiting.register(cx.waker());
            if activity.timed_out.load(Ordering::Acquire) == attempt {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

struct AttemptEnded<'a>(&'a Activity);

impl Drop for AttemptEnded<'_> {
    fn drop(&mut self) {
        self.0.n_ended.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.activity.n_finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that ends its exchange when hyper is done with it.
pub struct WatchedBody {
    body: ResponseBody,
    _exchange: Exchange,
}

impl WatchedBody {
    pub fn new(body: ResponseBody, exchange: Exchange) -> Self {
        Self {
            body,
            _exchange: exchange,
        }
    }
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client socket that counts the reads and writes that moved bytes, for the idle timeout.
pub struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl WatchedIo {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch_write();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.touch_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle: Duration::from_millis(400),
        head: Duration::from_millis(200),
        response: Duration::from_millis(300),
    };

    #[tokio::test(start_paused = true)]
    async fn a_head_not_complete_in_time_is_cut_between_one_and_one_and_a_quarter_periods() {
        let activity = Arc::new(Activity::new());
        let started = tokio::time::Instant::now();
        // Bytes keep arriving (a dribbling client), so only the header timeout applies.
        let dribble = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                loop {
                    activity.touch();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        assert_eq!(activity.watch(LIMITS).await, Cut::HeadTimeout);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= LIMITS.head && elapsed <= LIMITS.head * 5 / 4,
            "{elapsed:?}"
        );
        dribble.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_not_cut_by_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        let exchange = activity.request_started();
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.watch(LIMITS).await })
        };
        // Bytes move (a slow response streaming) for longer than the header timeout.
        for _ in 0..60 {
            activity.touch();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!watched.is_finished());
        drop(exchange);
        // Waiting for the next head from now on.
        let finished_at = tokio::time::Instant::now();
        let keep_touching = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                loop {
                    activity.touch();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        assert_eq!(watched.await.expect("the watch ends"), Cut::HeadTimeout);
        let waited = finished_at.elapsed();
        assert!(
            waited >= LIMITS.head && waited <= LIMITS.head * 5 / 4,
            "{waited:?}"
        );
        keep_touching.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_byte_moving_is_cut_by_the_idle_timeout() {
        let activity = Arc::new(Activity::new());
        let _exchange = activity.request_started();
        let started = tokio::time::Instant::now();
        assert_eq!(activity.watch(LIMITS).await, Cut::Idle);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= LIMITS.idle && elapsed <= LIMITS.idle * 5 / 4,
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_silent_past_the_response_timeout_ends_the_wait() {
        let activity = Arc::new(Activity::new());
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.watch(LIMITS).await })
        };
        let exchange = activity.request_started();
        // Bytes keep moving, so the idle timeout stays out of it.
        let keep_touching = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move {
                loop {
                    activity.touch();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        // An attempt answered in time leaves the next attempt a whole timeout of its own.
        let quick = exchange
            .upstream_response(tokio::time::sleep(Duration::from_millis(250)))
            .await;
        assert_eq!(quick, Some(()));
        let started = tokio::time::Instant::now();
        let silent = exchange
            .upstream_response(std::future::pending::<()>())
            .await;
        assert_eq!(silent, None);
        let waited = started.elapsed();
        assert!(
            waited >= LIMITS.response && waited <= LIMITS.response * 5 / 4,
            "{waited:?}"
        );
        assert!(!watched.is_finished());
        keep_touching.abort();
        watched.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_out_is_not_cut_by_the_header_timeout() {
        let activity = Arc::new(Activity::new());
        drop(activity.request_started());
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.watch(LIMITS).await })
        };
        // hyper took the whole body but flushes it to a slow reader for twice the header timeout.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            activity.touch_write();
        }
        let flushed_at = tokio::time::Instant::now();
        assert!(!watched.is_finished());
        assert_eq!(watched.await.expect("the watch ends"), Cut::HeadTimeout);
        let waited = flushed_at.elapsed();
        assert!(
            waited >= LIMITS.head && waited <= LIMITS.head * 5 / 4,
            "{waited:?}"
        );
    }
}
