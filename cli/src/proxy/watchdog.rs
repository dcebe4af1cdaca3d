//! The timeouts of client connections, checked by one periodic sweep per server rather than
//! a timer per request or per connection: the header timeout (a request head must be complete
//! within `header_read_timeout` of the proxy starting to wait for it, idle keep-alive time
//! included, as hyper's own timer would), the idle timeout (no byte moved either way), and the
//! response timeout (an upstream sent no response head in time: the request gets its 504).
//!
//! Owns [`Activity`] (counters the connection's I/O and requests bump, with no clock read and
//! no timer on the request path, and the verdict the connection's task reads), [`Exchange`]
//! (one request, and its wait for the upstream), [`WatchedIo`], [`WatchedBody`] and
//! [`Watchdog`], whose sweep checks every connection of a server. Sweeps run four times per
//! shortest limit, and a condition is counted from the first sweep that sees it, so a limit
//! takes effect no earlier than its length and at most two sweeps later (1.25 times the
//! shortest limit; one sweep later for a limit that is a whole number of sweeps). The connection's task only registers its waker and reads one atomic per poll: a
//! `select!` over a per-connection timer and the shutdown signal cost ~1,000 instructions per
//! request (`bench/RESULTS.md`, issue 4).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::body::ResponseBody;
use super::requests::Pending;

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
    /// The server's shutdown grace period is over.
    ShutDown,
}

impl Cut {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Idle => "idle timeout",
            Self::HeadTimeout => "request head not complete within the header timeout",
            Self::ShutDown => "still open when the shutdown grace period ended",
        }
    }
}

/// What a connection's task must do, as the watchdog decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    GoOn,
    /// The server is shutting down: finish the request in flight, then close.
    Stop,
    /// Close now.
    Cut(Cut),
}

// `Activity::verdict` values; a cut is never taken back, and `CLOSED` is final.
const GO_ON: u8 = 0;
const STOP: u8 = 1;
const CUT_IDLE: u8 = 2;
const CUT_HEAD: u8 = 3;
const CUT_SHUT_DOWN: u8 = 4;
/// The connection's task ended: the watchdog forgets it.
const CLOSED: u8 = 5;

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
    /// The watchdog's verdict (`GO_ON`, `STOP`, `CUT_*`), or `CLOSED`.
    verdict: AtomicU8,
    /// The connection's task, woken when the verdict changes.
    task: AtomicWaker,
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
            verdict: AtomicU8::new(GO_ON),
            task: AtomicWaker::new(),
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
            own_timer: None,
        }
    }

    /// [`Activity::request_started`] for one HTTP/2 stream of many on the connection: its
    /// wait for the upstream has a timer of its own (`response_timeout`), since the sweep
    /// follows one upstream wait per connection.
    pub fn stream_started(self: &Arc<Self>, response_timeout: Duration) -> Exchange {
        self.n_started.fetch_add(1, Ordering::Relaxed);
        Exchange {
            activity: Arc::clone(self),
            own_timer: Some(response_timeout),
        }
    }

    /// The watchdog's verdict for the connection's task, which `cx` wakes when it changes.
    pub fn poll_verdict(&self, cx: &mut Context<'_>) -> Verdict {
        // Registered before reading, so a verdict set in between still wakes the task.
        self.task.register(cx.waker());
        match self.verdict.load(Ordering::Acquire) {
            STOP => Verdict::Stop,
            CUT_IDLE => Verdict::Cut(Cut::Idle),
            CUT_HEAD => Verdict::Cut(Cut::HeadTimeout),
            CUT_SHUT_DOWN => Verdict::Cut(Cut::ShutDown),
            _ => Verdict::GoOn,
        }
    }

    /// Tells the connection's task to finish its request and close.
    fn stop(&self) {
        self.decide(STOP);
    }

    /// Tells the connection's task to close now.
    fn cut(&self, cut: Cut) {
        self.decide(match cut {
            Cut::Idle => CUT_IDLE,
            Cut::HeadTimeout => CUT_HEAD,
            Cut::ShutDown => CUT_SHUT_DOWN,
        });
    }

    /// Moves the verdict forward (a stop never undoes a cut, nothing undoes `CLOSED`) and wakes
    /// the connection's task.
    fn decide(&self, verdict: u8) {
        let moved = self
            .verdict
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (matches!(current, GO_ON | STOP) && verdict > current).then_some(verdict)
            })
            .is_ok();
        if moved {
            self.task.wake();
        }
    }

    /// The connection's task has ended: nothing to watch any more.
    pub fn close(&self) {
        self.verdict.store(CLOSED, Ordering::Release);
    }
}

/// The watchdog's memory of one connection between two sweeps.
#[derive(Default)]
struct Memory {
    /// `n_events` at the last sweep (`None` before the first), and for how many sweeps since
    /// no byte moved.
    events_seen: Option<u64>,
    idle_for: u64,
    /// The upstream attempt being waited for, and for how many sweeps.
    upstream_wait: Option<(u64, u64)>,
    /// The head being waited for (by the count of requests started before it and the writes
    /// so far: the wait starts once hyper has written out the last response, not when it took
    /// the last body frame), and for how many sweeps.
    head_wait: Option<((u64, u64), u64)>,
}

/// The limits in whole sweeps, rounded up: never cut early.
#[derive(Clone, Copy)]
struct Sweeps {
    idle: u64,
    head: u64,
    response: u64,
}

impl Memory {
    /// One sweep's look at `activity`: the cut it deserves, if any. On the way, ends the wait
    /// of a request whose upstream sent no response head in time. A condition is counted from
    /// the first sweep that sees it, so it lasts at least its limit before it is acted on.
    fn sweep(&mut self, activity: &Activity, limits: Sweeps) -> Option<Cut> {
        let events = activity.n_events.load(Ordering::Relaxed);
        if self.events_seen == Some(events) {
            self.idle_for += 1;
            if self.idle_for >= limits.idle {
                return Some(Cut::Idle);
            }
        } else {
            (self.events_seen, self.idle_for) = (Some(events), 0);
        }
        let sent = activity.n_sent.load(Ordering::Relaxed);
        self.upstream_wait = if sent == activity.n_ended.load(Ordering::Relaxed) {
            None
        } else {
            match self.upstream_wait {
                Some((attempt, sweeps)) if attempt == sent => {
                    if sweeps + 1 >= limits.response {
                        activity.timed_out.store(sent, Ordering::Release);
                        activity.waiting.wake();
                    }
                    Some((attempt, sweeps + 1))
                }
                _ => Some((sent, 0)),
            }
        };
        let started = activity.n_started.load(Ordering::Relaxed);
        if started != activity.n_finished.load(Ordering::Relaxed) {
            self.head_wait = None;
            return None;
        }
        let head = (started, activity.n_writes.load(Ordering::Relaxed));
        self.head_wait = match self.head_wait {
            Some((waited_for, sweeps)) if waited_for == head => {
                if sweeps + 1 >= limits.head {
                    return Some(Cut::HeadTimeout);
                }
                Some((head, sweeps + 1))
            }
            // The wait began since the last sweep: counted from here, so never cut early.
            _ => Some((head, 0)),
        };
        None
    }
}

/// The connections of one server, swept periodically for their limits.
pub struct Watchdog {
    every: Duration,
    sweeps: Sweeps,
    watched: Mutex<Vec<(Arc<Activity>, Memory)>>,
}

impl Watchdog {
    /// A watchdog for `limits`, sweeping until it is dropped. Must be called inside a tokio
    /// runtime: it spawns the sweeps.
    pub fn start(limits: Limits) -> Arc<Self> {
        let every = (limits.idle.min(limits.head).min(limits.response) / CHECKS_PER_PERIOD)
            .max(Duration::from_millis(1));
        let in_sweeps = |period: Duration| {
            u64::try_from(period.as_nanos().div_ceil(every.as_nanos())).unwrap_or(u64::MAX)
        };
        let watchdog = Arc::new(Self {
            every,
            sweeps: Sweeps {
                idle: in_sweeps(limits.idle),
                head: in_sweeps(limits.head),
                response: in_sweeps(limits.response),
            },
            watched: Mutex::new(Vec::new()),
        });
        tokio::spawn(sweep_until_dropped(Arc::downgrade(&watchdog)));
        watchdog
    }

    /// Watches a new connection until [`Activity::close`].
    pub fn watch(&self, activity: Arc<Activity>) {
        self.lock().push((activity, Memory::default()));
    }

    /// Tells every connection to finish its request in flight and close (graceful shutdown).
    pub fn stop_all(&self) {
        for (activity, _) in self.lock().iter() {
            activity.stop();
        }
    }

    /// Closes every connection still open.
    pub fn cut_all(&self) {
        for (activity, _) in self.lock().iter() {
            activity.cut(Cut::ShutDown);
        }
    }

    fn sweep(&self) {
        let sweeps = self.sweeps;
        self.lock().retain_mut(|(activity, check)| {
            if activity.verdict.load(Ordering::Acquire) == CLOSED {
                return false;
            }
            match check.sweep(activity, sweeps) {
                Some(cut) => {
                    activity.cut(cut);
                    false
                }
                None => true,
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<Activity>, Memory)>> {
        self.watched
            .lock()
            .expect("the watchdog lock is never held across a panic")
    }
}

async fn sweep_until_dropped(watchdog: Weak<Watchdog>) {
    let Some(every) = watchdog.upgrade().map(|watchdog| watchdog.every) else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(watchdog) = watchdog.upgrade() else {
            return;
        };
        watchdog.sweep();
    }
}

/// One request on a connection; dropped with its response body (or with the response when
/// the handler's future is dropped), which ends it.
pub struct Exchange {
    activity: Arc<Activity>,
    /// An HTTP/2 stream's response timeout, timed by itself (`None`: the sweep's).
    own_timer: Option<Duration>,
}

impl Exchange {
    /// Waits for an upstream's response head (`sent`), or until the watchdog says the response
    /// timeout passed: `None`. Each call is one attempt with a timeout of its own. `sent` is
    /// pinned by the caller: taken by value, it would be stored twice in this future's state
    /// and copied on every request.
    pub async fn upstream_response<F: Future>(&self, mut sent: Pin<&mut F>) -> Option<F::Output> {
        if let Some(limit) = self.own_timer {
            return tokio::time::timeout(limit, sent).await.ok();
        }
        let activity = &*self.activity;
        let attempt = activity.n_sent.fetch_add(1, Ordering::Relaxed) + 1;
        // Ends the attempt however the wait ends, dropped future included.
        let _ended = AttemptEnded(activity);
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

/// A response body that ends its exchange when hyper is done with it, and logs its request
/// (with the bytes sent) when the request log is on.
pub struct WatchedBody {
    body: ResponseBody,
    _exchange: Exchange,
    /// Boxed: most of the entry is only carried, and the body is moved on every poll setup.
    pending: Option<Box<Pending>>,
    bytes_out: u64,
}

impl WatchedBody {
    pub fn new(body: ResponseBody, exchange: Exchange, pending: Option<Box<Pending>>) -> Self {
        Self {
            body,
            _exchange: exchange,
            pending,
            bytes_out: 0,
        }
    }
}

impl Drop for WatchedBody {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish(self.bytes_out);
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
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes_out += data.len() as u64;
            }
        }
        polled
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
    /// Until the first bytes arrive on a plain connection: what to write back if they are an
    /// HTTP/2 connection preface or a TLS handshake (then the connection reads as closed, so
    /// hyper's HTTP/1.1 server ends it without an answer of its own).
    refusals: Option<Arc<WrongProtocol>>,
}

/// What a plain connection answers a client that speaks another protocol to it.
pub struct WrongProtocol {
    /// To an HTTP/2 connection preface: SETTINGS and a GOAWAY whose text names the HTTPS port.
    pub h2: Arc<[u8]>,
    /// To a TLS ClientHello: a plain-text HTTP 400 naming the HTTPS port (a TLS client shows
    /// a handshake error; one that prints what it got, or a person with `nc`, reads why).
    pub tls: Arc<[u8]>,
}

impl WatchedIo {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self {
            stream,
            activity,
            refusals: None,
        }
    }

    /// A plain HTTP/1.1 connection: a client that opens it with the HTTP/2 preface (`curl
    /// --http2-prior-knowledge`) or a TLS handshake gets what `refusals` says, then the close.
    pub fn plain(stream: TcpStream, activity: Arc<Activity>, refusals: Arc<WrongProtocol>) -> Self {
        Self {
            stream,
            activity,
            refusals: Some(refusals),
        }
    }

    /// The first byte the client sent, left to be read (bounded by the watchdog like any
    /// wait for a head).
    pub async fn peek_first_byte(&self) -> io::Result<Option<u8>> {
        let mut first = [0u8; 1];
        let n = self.stream.peek(&mut first).await?;
        Ok((n == 1).then_some(first[0]))
    }
}

/// The start of the HTTP/2 connection preface (RFC 9113, 3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";
/// A TLS record of type handshake (a ClientHello's first byte; the version's major, 3, next).
pub const TLS_HANDSHAKE: u8 = 0x16;

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
            if self.refusals.is_some() && buf.filled().len() > before {
                let refusals = self.refusals.take().expect("checked just above");
                let first = &buf.filled()[before..];
                let refusal = if first.starts_with(H2_PREFACE_START) {
                    Some(&refusals.h2)
                } else if first.starts_with(&[TLS_HANDSHAKE, 3]) {
                    Some(&refusals.tls)
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    // A few hundred bytes into an empty send buffer: written whole or not at
                    // all.
                    if let Err(error) = self.stream.try_write(refusal) {
                        tracing::debug!(%error, "could not answer a client of another protocol");
                    }
                    // Read as a close: hyper ends the connection without answering bytes it
                    // cannot parse.
                    buf.set_filled(before);
                }
            }
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
    use std::pin::pin;

    use super::*;

    const LIMITS: Limits = Limits {
        idle: Duration::from_millis(400),
        head: Duration::from_millis(200),
        response: Duration::from_millis(300),
    };

    /// A watchdog with `LIMITS` and one connection it watches.
    fn watched() -> (Arc<Watchdog>, Arc<Activity>) {
        let watchdog = Watchdog::start(LIMITS);
        let activity = Arc::new(Activity::new());
        watchdog.watch(Arc::clone(&activity));
        (watchdog, activity)
    }

    /// Waits, as the connection's task does, until the watchdog cuts the connection.
    async fn cut_of(activity: &Activity) -> Cut {
        poll_fn(|cx| match activity.poll_verdict(cx) {
            Verdict::Cut(cut) => Poll::Ready(cut),
            Verdict::GoOn | Verdict::Stop => Poll::Pending,
        })
        .await
    }

    /// Moves a byte every 10 ms, as a dribbling client or a streaming response does.
    fn keep_touching(activity: &Arc<Activity>) -> tokio::task::JoinHandle<()> {
        let activity = Arc::clone(activity);
        tokio::spawn(async move {
            loop {
                activity.touch();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_not_complete_in_time_is_cut_between_one_and_one_and_a_quarter_periods() {
        let (_watchdog, activity) = watched();
        let started = tokio::time::Instant::now();
        // Bytes keep arriving (a dribbling client), so only the header timeout applies.
        let dribble = keep_touching(&activity);
        assert_eq!(cut_of(&activity).await, Cut::HeadTimeout);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= LIMITS.head && elapsed <= LIMITS.head * 5 / 4,
            "{elapsed:?}"
        );
        dribble.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_not_cut_by_the_header_timeout() {
        let (_watchdog, activity) = watched();
        let exchange = activity.request_started();
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { cut_of(&activity).await })
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
        let touching = keep_touching(&activity);
        assert_eq!(watched.await.expect("the watch ends"), Cut::HeadTimeout);
        let waited = finished_at.elapsed();
        assert!(
            waited >= LIMITS.head && waited <= LIMITS.head * 5 / 4,
            "{waited:?}"
        );
        touching.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_byte_moving_is_cut_by_the_idle_timeout() {
        let (_watchdog, activity) = watched();
        let _exchange = activity.request_started();
        let started = tokio::time::Instant::now();
        assert_eq!(cut_of(&activity).await, Cut::Idle);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= LIMITS.idle && elapsed <= LIMITS.idle * 5 / 4,
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_silent_past_the_response_timeout_ends_the_wait() {
        let (_watchdog, activity) = watched();
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { cut_of(&activity).await })
        };
        let exchange = activity.request_started();
        // Bytes keep moving, so the idle timeout stays out of it.
        let touching = keep_touching(&activity);
        // An attempt answered in time leaves the next attempt a whole timeout of its own.
        let quick = exchange
            .upstream_response(pin!(tokio::time::sleep(Duration::from_millis(250))))
            .await;
        assert_eq!(quick, Some(()));
        let started = tokio::time::Instant::now();
        let silent = exchange
            .upstream_response(pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(silent, None);
        let waited = started.elapsed();
        assert!(
            waited >= LIMITS.response && waited <= LIMITS.response * 5 / 4,
            "{waited:?}"
        );
        assert!(!watched.is_finished());
        touching.abort();
        watched.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_out_is_not_cut_by_the_header_timeout() {
        let (_watchdog, activity) = watched();
        drop(activity.request_started());
        let watched = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { cut_of(&activity).await })
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

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stops_then_cuts_and_a_closed_connection_is_forgotten() {
        let (watchdog, activity) = watched();
        let other = Arc::new(Activity::new());
        watchdog.watch(Arc::clone(&other));
        let _touching = (keep_touching(&activity), keep_touching(&other));
        let woken = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move {
                poll_fn(|cx| match activity.poll_verdict(cx) {
                    Verdict::GoOn => Poll::Pending,
                    verdict => Poll::Ready(verdict),
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        other.close();
        watchdog.stop_all();
        assert_eq!(woken.await.expect("woken by the stop"), Verdict::Stop);
        // A stop never undoes a cut, and a cut is final.
        watchdog.cut_all();
        watchdog.stop_all();
        assert_eq!(cut_of(&activity).await, Cut::ShutDown);
        tokio::time::sleep(LIMITS.head / 2).await;
        assert!(
            watchdog
                .lock()
                .iter()
                .all(|(watched, _)| !Arc::ptr_eq(watched, &other)),
            "a closed connection is dropped at the next sweep"
        );
    }
}
