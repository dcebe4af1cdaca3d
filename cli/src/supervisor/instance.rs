//! One instance's life: pick a free port, start the process with `PORT` (a worker gets none),
//! wait until its health check passes (the port accepting when it has none; a worker: started),
//! or find the port it listens on instead, run until it exits or is stopped, check its health
//! every `interval` (`retries` failures in a row take it out of rotation and restart it), and
//! after an exit follow its restart policy: with backoff (1, 2, 4, 8 .. 30 s), giving up after
//! five fast failures in a row; an exit 0 under `on-failure` or `never` completes it.
//! Stopping drains first: the instance leaves the routing table, in-flight requests finish
//! (bounded by the grace period), then its process group gets its stop signal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use super::health::{self, HttpConnection, HttpFailure};
use super::logs::DeploymentLog;
use super::process::{self, ChildSpec, RunningChild};
use super::{Config, DeploymentSpec, Event};
use crate::config::model::{Check, Restart};

/// Five failures in a row, each sooner than this after its start, mark the instance crashed.
const FAST_FAILURE: Duration = Duration::from_secs(10);
const FAILURES_BEFORE_CRASHED: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// After this long without an answer on `PORT`, look for a port of the program's own choosing.
const DETECT_AFTER: Duration = Duration::from_millis(300);
/// How often a ready instance is checked for having left the proxy's rotation, and probed
/// while it is out.
const ROTATION_CHECK: Duration = Duration::from_millis(500);
/// How long a probe of an instance out of rotation waits for a response head.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two health checks of an instance that is not ready yet.
const MIN_CHECK_SPACING: Duration = Duration::from_millis(100);

/// What the proxy and `stack ls` see of an instance. Shared: the instance task writes, the
/// routing table and the proxy read (the proxy counts its in-flight requests in `upstream`).
pub struct Instance {
    pub number: usize,
    /// 0 until a process has a port.
    pub port: AtomicU16,
    /// It listens on `[::1]`, not on 127.0.0.1 (a server that binds `localhost` where that
    /// resolves to `::1` first, as Node 17+ and Vite do).
    pub ipv6: AtomicBool,
    pub pid: AtomicU32,
    /// Accepting connections; takes traffic unless draining.
    pub ready: AtomicBool,
    /// Being stopped: takes no new requests.
    pub draining: AtomicBool,
    /// Gave up after five fast failures (or exited non-zero under `restart = "never"`).
    pub crashed: AtomicBool,
    /// Exited 0 under `restart = "on-failure"` or `"never"`: a one-shot that did its work.
    pub completed: AtomicBool,
    /// Ready, but out of the proxy's rotation: it refused a connection or sent no response
    /// in time. Probed until it answers again.
    pub unresponsive: AtomicBool,
    pub restarts: AtomicU32,
    /// What the proxy balances over while this process is ready: one per process (a restart
    /// gets a new one), so its in-flight count is the one used for draining.
    pub upstream: Mutex<Option<Arc<crate::proxy::Backend>>>,
    /// Why the last start failed (a readiness timeout with the last log lines, an exit status).
    pub last_error: Mutex<Option<String>>,
    /// What the last failed health check saw (`GET /healthz answered 503`), cleared by a pass.
    pub last_check: Mutex<Option<String>>,
    /// Asked to restart (`stack restart`, the dashboard's restart action).
    restart: tokio::sync::Notify,
    /// Told how the restart asked for last went: ready again, or why not.
    restart_reply: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("number", &self.number)
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("ready", &self.ready)
            .field("draining", &self.draining)
            .field("crashed", &self.crashed)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Asks the instance's task for a new process (counted in `restarts`, not as a failure):
    /// a web instance on `PORT` starts the new one first and drains the old one once the new
    /// one is ready; a worker, or a program on a port of its own, stops first. A crashed or
    /// completed instance starts again, one waiting out a backoff starts now. The answer says
    /// when the new process is ready, or why it is not (then a replaced process keeps serving).
    pub fn request_restart(&self) -> oneshot::Receiver<Result<(), String>> {
        let (reply, answer) = oneshot::channel();
        // A request still unanswered is answered with this one: its receiver sees it dropped.
        *self
            .restart_reply
            .lock()
            .expect("never poisoned: no panics while held") = Some(reply);
        self.restart.notify_one();
        answer
    }

    /// A process started (or failed to): a restart asked for meanwhile is done by it, so its
    /// wake-up is dropped, and its asker gets `outcome`.
    fn answer_restart(&self, outcome: Result<(), String>) {
        let _ = self.restart.notified().now_or_never();
        let reply = self
            .restart_reply
            .lock()
            .expect("never poisoned: no panics while held")
            .take();
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    pub fn new(number: usize) -> Self {
        Instance {
            number,
            port: AtomicU16::new(0),
            ipv6: AtomicBool::new(false),
            pid: AtomicU32::new(0),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            completed: AtomicBool::new(false),
            unresponsive: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
            upstream: Mutex::new(None),
            restart: tokio::sync::Notify::new(),
            restart_reply: Mutex::new(None),
            last_error: Mutex::new(None),
            last_check: Mutex::new(None),
        }
    }

    /// What the last failed health check saw, if the last one failed.
    pub fn last_check(&self) -> Option<String> {
        self.last_check
            .lock()
            .expect("never poisoned: no panics while held")
            .clone()
    }

    fn set_check(&self, outcome: Option<String>) {
        *self
            .last_check
            .lock()
            .expect("never poisoned: no panics while held") = outcome;
    }

    /// Ready and not draining: the proxy may send it requests.
    pub fn takes_traffic(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }

    /// The proxy's view of the running process, when it is ready.
    pub fn upstream(&self) -> Option<Arc<crate::proxy::Backend>> {
        self.upstream
            .lock()
            .expect("never poisoned: no panics while held")
            .clone()
    }

    /// Where it listens on `port`: 127.0.0.1, or `[::1]` when that is what accepted.
    pub fn addr(&self, port: u16) -> SocketAddr {
        if self.ipv6.load(Ordering::Acquire) {
            SocketAddr::from((Ipv6Addr::LOCALHOST, port))
        } else {
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        }
    }

    fn set_upstream(&self, port: Option<u16>) {
        let upstream = port.map(|port| {
            let number = u32::try_from(self.number).unwrap_or(u32::MAX);
            Arc::new(crate::proxy::Backend::new(number, self.addr(port)))
        });
        *self
            .upstream
            .lock()
            .expect("never poisoned: no panics while held") = upstream;
    }

    fn set_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .expect("never poisoned: no panics while held") = error;
    }
}

/// The restart delay after the `failures`-th failure in a row: 1, 2, 4, 8, 16, 30, 30 .. s.
pub fn backoff(failures: u32) -> Duration {
    let seconds = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(seconds).min(MAX_BACKOFF)
}

/// Everything an instance task needs.
pub(super) struct InstanceTask {
    pub instance: Arc<Instance>,
    pub deployment: Arc<DeploymentSpec>,
    pub config: Arc<Config>,
    pub log: DeploymentLog,
    /// The port the program chose itself, shared by the deployment's instances once detected.
    pub fixed_port: Arc<Mutex<Option<u16>>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub stop: CancellationToken,
    /// Held while the process starts: a scale to 64 starts a few at a time, not all at once.
    pub starts: Arc<Semaphore>,
}

enum Started {
    Ready(Box<RunningChild>),
    /// Why, and the exit status when the process exited.
    Failed(String, Option<std::process::ExitStatus>),
    Stopped,
}

/// How a ready instance's run ended.
enum Ended {
    Exited(String, Option<std::process::ExitStatus>),
    /// Its health check failed `retries` times in a row; it was stopped for a restart.
    Unhealthy(String),
    /// A restart was asked for; the process still runs and serves.
    RestartRequested(Box<RunningChild>),
    Stopped,
}

/// How a restart on request went.
enum Replaced {
    /// This process serves now: the new one, or the old one when the new one failed.
    Serving(Box<RunningChild>),
    /// The old process stopped first: start afresh.
    StartAgain,
    /// The old process exited while the new one started, and the new one failed too: the
    /// instance restarts as after any exit.
    Exited(String, Option<std::process::ExitStatus>),
    Stopped,
}

impl InstanceTask {
    pub async fn run(self) {
        let source = format!("{}.{}", self.deployment.service, self.instance.number);
        let mut failures = 0u32;
        'start: loop {
            let permit = tokio::select! {
                permit = self.starts.clone().acquire_owned() => permit,
                () = self.stop.cancelled() => return,
            };
            let started_at = Instant::now();
            let started = self.start(&source).await;
            drop(permit);
            let (reason, status) = match started {
                Started::Stopped => return,
                Started::Failed(reason, status) => {
                    // A worker that ran to exit 0 before it counted as started is a one-shot
                    // that did its work: a restart asked for exactly that.
                    let completed = self.deployment.settings.is_worker()
                        && status.is_some_and(|status| status.success());
                    self.instance.answer_restart(if completed {
                        Ok(())
                    } else {
                        Err(reason.clone())
                    });
                    (reason, status)
                }
                Started::Ready(child) => {
                    if !self.deployment.settings.is_worker() {
                        self.instance
                            .set_upstream(Some(self.instance.port.load(Ordering::Acquire)));
                    }
                    self.instance.ready.store(true, Ordering::Release);
                    self.instance.set_error(None);
                    self.changed();
                    self.instance.answer_restart(Ok(()));
                    let mut child = child;
                    loop {
                        match self.serve(*child, &source).await {
                            Ended::RestartRequested(serving) => {
                                match self.replace(serving, &source).await {
                                    Replaced::Serving(serving) => child = serving,
                                    Replaced::StartAgain => {
                                        failures = 0;
                                        continue 'start;
                                    }
                                    Replaced::Exited(reason, status) => break (reason, status),
                                    Replaced::Stopped => return,
                                }
                            }
                            Ended::Stopped => return,
                            Ended::Exited(reason, status) => break (reason, status),
                            Ended::Unhealthy(reason) => break (reason, None),
                        }
                    }
                }
            };
            self.instance.ready.store(false, Ordering::Release);
            self.instance.unresponsive.store(false, Ordering::Release);
            self.instance.set_upstream(None);
            self.instance.port.store(0, Ordering::Release);
            self.instance.pid.store(0, Ordering::Release);
            if started_at.elapsed() < FAST_FAILURE {
                failures += 1;
            } else {
                failures = 1;
            }
            let succeeded = status.is_some_and(|status| status.success());
            let policy = self.deployment.settings.restart;
            if succeeded && policy != Restart::Always {
                self.log.push(&source, "[stack] exited 0: completed");
                self.instance.completed.store(true, Ordering::Release);
                self.changed();
                if !self.wait_for_restart(&source).await {
                    return;
                }
                failures = 0;
                continue 'start;
            }
            self.instance.set_error(Some(reason.clone()));
            if policy == Restart::Never {
                let summary = reason.lines().next().unwrap_or_default();
                self.log.push(
                    &source,
                    &format!("[stack] {summary}; not restarting (restart = \"never\")"),
                );
                self.instance.crashed.store(true, Ordering::Release);
                self.changed();
                if !self.wait_for_restart(&source).await {
                    return;
                }
                failures = 0;
                continue 'start;
            }
            if failures >= FAILURES_BEFORE_CRASHED {
                let summary = reason.lines().next().unwrap_or_default();
                self.log.push(
                    &source,
                    &format!("[stack] {summary}; {failures} fast failures in a row: CRASHED, not restarting"),
                );
                self.instance.crashed.store(true, Ordering::Release);
                self.changed();
                if !self.wait_for_restart(&source).await {
                    return;
                }
                failures = 0;
                continue 'start;
            }
            let delay = backoff(failures);
            // The first line only: the last lines a reason may carry are in the log already.
            let summary = reason.lines().next().unwrap_or_default();
            self.log.push(
                &source,
                &format!("[stack] {summary}; restarting in {}s", delay.as_secs()),
            );
            self.changed();
            let asked = tokio::select! {
                () = tokio::time::sleep(delay) => false,
                () = self.instance.restart.notified() => true,
                () = self.stop.cancelled() => return,
            };
            let restarts = self.instance.restarts.fetch_add(1, Ordering::AcqRel) + 1;
            let why = if asked { " now, on request" } else { "" };
            self.log.push(
                &source,
                &format!("[stack] restarting{why} (restart {restarts})"),
            );
        }
    }

    fn changed(&self) {
        // The supervisor loop only ends after every instance task; a send error means shutdown.
        let _ = self.events.send(Event::InstanceChanged);
    }

    /// Runs a ready instance until it exits, fails its health check `retries` times in a row,
    /// or is stopped.
    async fn serve(&self, mut child: RunningChild, source: &str) -> Ended {
        let settings = &self.deployment.settings;
        let mut rotation = tokio::time::interval(ROTATION_CHECK);
        let interval = settings
            .health
            .as_ref()
            .map_or(Duration::from_secs(3600), |health| health.interval)
            // `stack.toml` refuses a zero interval; a timer of 0 would panic the task, so a
            // zero that came another way (an old record) still cannot.
            .max(Duration::from_millis(1));
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        // One keep-alive connection for all of this run's HTTP checks.
        let mut http = HttpConnection::default();
        loop {
            tokio::select! {
                status = child.wait() => {
                    child.output_done().await;
                    return match status {
                        Ok(status) => Ended::Exited(format!("exited ({status})"), Some(status)),
                        Err(error) => Ended::Exited(format!("could not be waited on: {error}"), None),
                    };
                }
                () = self.stop.cancelled() => {
                    http.close();
                    self.drain_and_stop(child).await;
                    // A worker's work may be cut short (a migration replaced by a newer save):
                    // its log says it did not end on its own.
                    if settings.is_worker() {
                        self.log.push(source, &format!("[stack] {source} stopped before it exited"));
                    }
                    return Ended::Stopped;
                }
                () = self.instance.restart.notified() => {
                    http.close();
                    return Ended::RestartRequested(Box::new(child));
                }
                _ = rotation.tick(), if !settings.is_worker() => self.check_rotation(source).await,
                _ = checks.tick(), if settings.health.is_some() => {
                    let Some(health) = &settings.health else { continue };
                    let port = self.instance.port.load(Ordering::Acquire);
                    match self.check(&health.check, port, health.timeout, &mut http).await {
                        Ok(()) => failures = 0,
                        Err(seen) => {
                            failures += 1;
                            if failures >= health.retries {
                                let reason = format!(
                                    "failed its health check {failures} times in a row ({seen})"
                                );
                                self.log.push(
                                    source,
                                    &format!("[stack] {source} {reason}: out of rotation, restarting"),
                                );
                                self.instance.ready.store(false, Ordering::Release);
                                self.instance.set_upstream(None);
                                self.changed();
                                http.close();
                                let _ = child
                                    .stop_with(settings.stop_signal, settings.stop_timeout)
                                    .await;
                                return Ended::Unhealthy(reason);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The instance's environment: the stack's, the service's own, and `PORT` (web only).
    fn environment(&self, port: Option<u16>) -> std::collections::BTreeMap<String, String> {
        let mut env = self.deployment.settings.environment(&self.config.env);
        if let Some(port) = port {
            env.insert("PORT".into(), port.to_string());
        }
        env
    }

    /// Whether `port` accepts a connection on 127.0.0.1, else on `[::1]`; remembers which.
    async fn accepts(&self, port: u16) -> bool {
        let loopbacks = [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ];
        for ip in loopbacks {
            if TcpStream::connect((ip, port)).await.is_ok() {
                self.instance.ipv6.store(ip.is_ipv6(), Ordering::Release);
                return true;
            }
        }
        false
    }

    /// One run of the health check; the outcome is kept for `last_check`.
    async fn check(
        &self,
        check: &Check,
        port: u16,
        timeout: Duration,
        http: &mut HttpConnection,
    ) -> Result<(), String> {
        let port = (!self.deployment.settings.is_worker()).then_some(port);
        let env = || self.environment(port);
        let target = health::Target {
            addr: port.map(|port| self.instance.addr(port)),
            dir: &self.deployment.dir,
            env: &env,
            pids_dir: &self.config.pids_dir,
        };
        let outcome = health::run(check, &target, timeout, http).await;
        self.instance.set_check(outcome.as_ref().err().cloned());
        outcome
    }

    /// Starts the process and waits until it is ready, fails, or the instance is stopped.
    async fn start(&self, source: &str) -> Started {
        let settings = &self.deployment.settings;
        let port = if settings.is_worker() {
            0
        } else {
            match free_port() {
                Some(port) => port,
                None => return Started::Failed("no free port on 127.0.0.1".into(), None),
            }
        };
        let env = self.environment((!settings.is_worker()).then_some(port));
        let spec = ChildSpec {
            program: self.deployment.program.clone(),
            args: self.deployment.args.iter().map(Into::into).collect(),
            cwd: self.deployment.dir.clone(),
            env,
            label: format!("{}.{}", self.deployment.id, self.instance.number),
        };
        let mut child = match process::spawn(&spec, &self.config.pids_dir) {
            Ok(child) => child,
            Err(error) => return Started::Failed(error.to_string(), None),
        };
        self.instance.pid.store(child.pid, Ordering::Release);
        if let Some(stdout) = child.stdout.take() {
            child.keep_output(tokio::spawn(
                self.log.clone().pump(source.to_string(), stdout),
            ));
        }
        if let Some(stderr) = child.stderr.take() {
            child.keep_output(tokio::spawn(
                self.log.clone().pump(source.to_string(), stderr),
            ));
        }
        let start_period = settings
            .health
            .as_ref()
            .map_or(Duration::ZERO, |health| health.start_period);
        let ready_within = self.config.ready_timeout + start_period;
        let deadline = Instant::now() + ready_within;
        let ready = tokio::select! {
            ready = self.wait_ready(port, child.pid, deadline, source) => ready,
            status = child.wait() => {
                child.output_done().await;
                return match status {
                    Ok(status) => Started::Failed(format!("exited before it was ready ({status})"), Some(status)),
                    Err(error) => Started::Failed(format!("could not be waited on: {error}"), None),
                };
            }
            () = self.stop.cancelled() => {
                let _ = child.stop_with(settings.stop_signal, settings.stop_timeout).await;
                return Started::Stopped;
            }
        };
        match ready {
            Some(actual_port) => {
                self.instance.port.store(actual_port, Ordering::Release);
                Started::Ready(Box::new(child))
            }
            None => {
                let _ = child
                    .stop_with(settings.stop_signal, settings.stop_timeout)
                    .await;
                // The program's own lines: stack's notes about earlier attempts would nest
                // one reason inside the next.
                let last_lines: Vec<String> = self
                    .log
                    .recent(10, Some(source))
                    .into_iter()
                    .filter(|line| !line.text.starts_with("[stack]"))
                    .map(|line| format!("  {}", line.text))
                    .collect();
                let mut reason = match (&settings.health, self.instance.last_check()) {
                    (Some(health), Some(seen)) => format!(
                        "its health check ({}) did not pass within {}s: {seen}",
                        health.check,
                        ready_within.as_secs()
                    ),
                    _ => format!(
                        "nothing accepted connections on PORT={port} within {}s",
                        ready_within.as_secs()
                    ),
                };
                if !last_lines.is_empty() {
                    reason.push_str("\nlast lines:\n");
                    reason.push_str(&last_lines.join("\n"));
                }
                Started::Failed(reason, None)
            }
        }
    }

    /// Polls until something accepts connections on `port`, or, when the program ignores
    /// `PORT`, until its process group listens on a port of its own. `None` at the deadline.
    async fn wait_ready(
        &self,
        port: u16,
        pgid: u32,
        deadline: Instant,
        source: &str,
    ) -> Option<u16> {
        let started = Instant::now();
        let fixed = *self
            .fixed_port
            .lock()
            .expect("never poisoned: no panics while held");
        let mut checked_proc_at = started;
        let health = self.deployment.settings.health.clone();
        let mut http = HttpConnection::default();
        if self.deployment.settings.is_worker() {
            // A worker is ready once started, or once its `cmd` check passes.
            let Some(health) = health else {
                return Some(0);
            };
            let poll = health.interval.min(Duration::from_millis(250));
            loop {
                if self
                    .check(&health.check, 0, health.timeout, &mut http)
                    .await
                    .is_ok()
                {
                    return Some(0);
                }
                if Instant::now() + poll >= deadline {
                    return None;
                }
                tokio::time::sleep(poll).await;
            }
        }
        // Before it is ready, the port is polled often (a connect costs the program nothing,
        // so a start waits no longer than it must); a declared check runs as soon as the port
        // accepts, then at most once per `interval` (never more often than every 100ms): a
        // check is a request the program answers and logs, so it must not be flooded. A
        // command costs a process, so even its port is polled gentler.
        let poll = match &health {
            Some(health) if matches!(health.check, Check::Cmd(_)) => {
                health.interval.min(Duration::from_millis(250))
            }
            _ => Duration::from_millis(15),
        };
        let check_every = health
            .as_ref()
            .map_or(Duration::ZERO, |health| health.interval)
            .max(MIN_CHECK_SPACING);
        let mut last_check: Option<Instant> = None;
        loop {
            let target = fixed.unwrap_or(port);
            let accepts = self.accepts(target).await;
            if !accepts {
                self.instance.set_check(Some(format!(
                    "nothing accepts connections on port {target} (of 127.0.0.1 or [::1])"
                )));
            }
            let passes = accepts
                && match &health {
                    Some(health) => {
                        let due = last_check.is_none_or(|at| at.elapsed() >= check_every);
                        if due {
                            last_check = Some(Instant::now());
                        }
                        due && self
                            .check(&health.check, target, health.timeout, &mut http)
                            .await
                            .is_ok()
                    }
                    None => true,
                };
            if passes {
                return Some(target);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if fixed.is_none()
                && now.duration_since(started) >= DETECT_AFTER
                && now.duration_since(checked_proc_at) >= Duration::from_millis(200)
            {
                checked_proc_at = now;
                let ports = process::listening_ports(pgid);
                if let Some(&own_port) = ports.iter().find(|&&listening| listening != port) {
                    if TcpStream::connect(("127.0.0.1", own_port)).await.is_ok() {
                        *self
                            .fixed_port
                            .lock()
                            .expect("never poisoned: no panics while held") = Some(own_port);
                        let note = format!(
                            "[stack] {source} ignores PORT={port} and listens on {own_port}; using {own_port} (this service can run one instance only)"
                        );
                        self.log.push(source, &note);
                        return Some(own_port);
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Says when the proxy took this instance out of its rotation (a refused connection, no
    /// response in time) and probes it until it answers again, then puts it back: a hung
    /// instance costs the requests that met it, not every other one after.
    async fn check_rotation(&self, source: &str) {
        let Some(backend) = self.instance.upstream() else {
            return;
        };
        let was_out = self.instance.unresponsive.load(Ordering::Acquire);
        if !backend.is_out_of_rotation() {
            if was_out {
                self.back_in_rotation(source);
            }
            return;
        }
        if !was_out {
            self.instance.unresponsive.store(true, Ordering::Release);
            self.log.push(
                source,
                &format!("[stack] {source} did not answer the proxy in time: out of rotation until it answers again"),
            );
            self.changed();
        }
        let port = self.instance.port.load(Ordering::Acquire);
        // Its own health check when it has one (a `cmd` or `tcp` one included), else any HTTP
        // answer to `GET /`.
        let answers = match &self.deployment.settings.health {
            Some(health) => self
                .check(
                    &health.check,
                    port,
                    PROBE_TIMEOUT.min(health.timeout),
                    &mut HttpConnection::default(),
                )
                .await
                .is_ok(),
            None => !matches!(
                health::http_status(self.instance.addr(port), "/", PROBE_TIMEOUT).await,
                Err(HttpFailure::TimedOut | HttpFailure::Io(_))
            ),
        };
        if answers {
            backend.put_back_in_rotation();
            self.back_in_rotation(source);
        }
    }

    fn back_in_rotation(&self, source: &str) {
        self.instance.unresponsive.store(false, Ordering::Release);
        self.log.push(
            source,
            &format!("[stack] {source} answers again: back in rotation"),
        );
        self.changed();
    }

    /// Takes the instance out of the routing table, lets in-flight requests finish (at most the
    /// grace period), then stops the process group.
    async fn drain_and_stop(&self, child: RunningChild) {
        self.instance.draining.store(true, Ordering::Release);
        self.changed();
        self.drain(self.instance.upstream(), child).await;
        self.instance.ready.store(false, Ordering::Release);
        self.instance.set_upstream(None);
        self.changed();
    }

    /// Waits (at most the grace period) until no request is in flight on `backend`, which the
    /// routing table no longer lists, then stops `child`.
    async fn drain(&self, backend: Option<Arc<crate::proxy::Backend>>, mut child: RunningChild) {
        let in_flight = || backend.as_ref().map_or(0, |backend| backend.in_flight());
        let deadline = Instant::now() + self.config.grace;
        // The table swap reaches the proxy right after the event; a request that picked this
        // backend just before it still counts itself in, so wait for two quiet reads in a row.
        let mut quiet_reads = 0;
        while Instant::now() < deadline && quiet_reads < 2 && !self.config.shutdown_now() {
            if in_flight() == 0 {
                quiet_reads += 1;
            } else {
                quiet_reads = 0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let settings = &self.deployment.settings;
        let _ = child
            .stop_with(settings.stop_signal, settings.stop_timeout)
            .await;
        if child.killed {
            let source = format!("{}.{}", self.deployment.service, self.instance.number);
            self.log.push(
                &source,
                &format!(
                    "[stack] pid {} (or what it started) was still running {}s after {}: killed (SIGKILL)",
                    child.pid,
                    settings.stop_timeout.as_secs_f64(),
                    settings.stop_signal
                ),
            );
        }
    }

    /// A restart on request of a running process. A web instance on `PORT` starts its new
    /// process while the old one serves, swaps the routing to it once it is ready and drains
    /// the old one, so even a single instance restarts with no failed request; when the new
    /// one fails, the old one keeps serving. A worker (whose work must not run twice at
    /// once) and a program on a port of its own (two cannot listen on it) stop first.
    async fn replace(&self, old: Box<RunningChild>, source: &str) -> Replaced {
        let restarts = self.instance.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        let own_port = self
            .fixed_port
            .lock()
            .expect("never poisoned: no panics while held")
            .is_some();
        if self.deployment.settings.is_worker() || own_port {
            self.log.push(
                source,
                &format!("[stack] restarting on request: stopping first (restart {restarts})"),
            );
            self.drain_and_stop(*old).await;
            self.instance.unresponsive.store(false, Ordering::Release);
            self.instance.draining.store(false, Ordering::Release);
            self.instance.port.store(0, Ordering::Release);
            self.instance.pid.store(0, Ordering::Release);
            return Replaced::StartAgain;
        }
        self.log.push(
            source,
            &format!("[stack] restarting on request: a new process starts, then the old one drains (restart {restarts})"),
        );
        let old_port = self.instance.port.load(Ordering::Acquire);
        let old_pid = self.instance.pid.load(Ordering::Acquire);
        let old_ipv6 = self.instance.ipv6.load(Ordering::Acquire);
        let permit = tokio::select! {
            permit = self.starts.clone().acquire_owned() => permit,
            () = self.stop.cancelled() => {
                self.drain_and_stop(*old).await;
                return Replaced::Stopped;
            }
        };
        // The old process keeps being watched: should it exit while the new one starts, it
        // leaves the routing table at once rather than at the swap.
        let mut old = Some(old);
        let started = {
            let start = self.start(source);
            tokio::pin!(start);
            loop {
                tokio::select! {
                    started = &mut start => break started,
                    status = async { old.as_mut().expect("checked by the guard").wait().await }, if old.is_some() => {
                        old = None;
                        let status = status.map_or_else(|error| error.to_string(), |status| status.to_string());
                        self.log.push(
                            source,
                            &format!("[stack] pid {old_pid} exited ({status}) while its new process starts: out of rotation until that one is ready"),
                        );
                        self.instance.ready.store(false, Ordering::Release);
                        self.instance.set_upstream(None);
                        self.changed();
                    }
                }
            }
        };
        drop(permit);
        let Some(old) = old else {
            return match started {
                Started::Ready(new) => {
                    self.route_to_new_process();
                    self.log
                        .push(source, &format!("[stack] pid {} serves", new.pid));
                    self.instance.answer_restart(Ok(()));
                    Replaced::Serving(new)
                }
                Started::Failed(reason, status) => {
                    self.instance.answer_restart(Err(reason.clone()));
                    Replaced::Exited(reason, status)
                }
                Started::Stopped => Replaced::Stopped,
            };
        };
        match started {
            Started::Ready(new) => {
                let old_backend = self.instance.upstream();
                self.route_to_new_process();
                self.drain(old_backend, *old).await;
                self.log.push(
                    source,
                    &format!("[stack] pid {} serves; pid {old_pid} stopped", new.pid),
                );
                self.instance.answer_restart(Ok(()));
                Replaced::Serving(new)
            }
            Started::Failed(reason, _) => {
                self.instance.port.store(old_port, Ordering::Release);
                self.instance.pid.store(old_pid, Ordering::Release);
                self.instance.ipv6.store(old_ipv6, Ordering::Release);
                let summary = reason.lines().next().unwrap_or_default();
                self.log.push(
                    source,
                    &format!("[stack] the new process {summary}; pid {old_pid} keeps serving"),
                );
                self.instance.answer_restart(Err(reason));
                Replaced::Serving(old)
            }
            Started::Stopped => {
                self.drain_and_stop(*old).await;
                Replaced::Stopped
            }
        }
    }

    /// Routes the instance to the new process `start` made ready in place of the old one.
    fn route_to_new_process(&self) {
        self.instance
            .set_upstream(Some(self.instance.port.load(Ordering::Acquire)));
        self.instance.unresponsive.store(false, Ordering::Release);
        self.instance.ready.store(true, Ordering::Release);
        self.changed();
    }

    /// A crashed or completed instance waits here: `true` once a restart is asked for (it
    /// starts again, its state cleared), `false` when the instance is stopped.
    async fn wait_for_restart(&self, source: &str) -> bool {
        tokio::select! {
            () = self.instance.restart.notified() => {}
            () = self.stop.cancelled() => return false,
        }
        self.instance.crashed.store(false, Ordering::Release);
        self.instance.completed.store(false, Ordering::Release);
        let restarts = self.instance.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        self.log.push(
            source,
            &format!("[stack] starting again on request (restart {restarts})"),
        );
        self.changed();
        true
    }
}

/// A port that was free a moment ago on 127.0.0.1 (the OS picks it).
pub fn free_port() -> Option<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
    Some(listener.local_addr().ok()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
