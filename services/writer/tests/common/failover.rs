//! A failover under load, shared by the cluster and Sentinel tests: idle sessions written well
//! before the kill, 20 busy clients logging in, incrementing and reading through it, and the
//! figures the issue asks for. Bounded: a fixed number of clients, a deadline on every phase.

use super::{client, get, Answer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BUSY_CLIENTS: usize = 20;
pub const IDLE_SESSIONS: usize = 40;
/// Idle sessions are last written at least this long before the kill.
const IDLE_QUIET: Duration = Duration::from_millis(1200);
/// Traffic before the kill, so every busy client is mid-flight when it happens.
const WARM_UP: Duration = Duration::from_millis(800);
/// Traffic after every client has recovered, to see that it stays recovered.
const COOL_DOWN: Duration = Duration::from_millis(1500);
/// Longest the whole run after the kill may take.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

/// What one failover did to the users.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// Kill to the moment Redis itself had a new master for the slot (polled).
    pub promoted_after: Duration,
    /// Kill to the moment every busy client had a request succeed again.
    pub recovered_after: Duration,
    /// Requests sent in the whole run, and those that failed (all 503 JSON, checked).
    pub requests: u64,
    pub failed: u64,
    /// Slowest failed request (a 503 must come quickly, never a hang).
    pub slowest_failure: Duration,
    /// Idle sessions (written >= 1.2 s before the kill) gone or changed afterwards.
    pub idle_lost: usize,
    /// Busy sessions whose confirmed count went backwards or whose session vanished (a write
    /// acknowledged by the old master just before the kill and never replicated).
    pub busy_writes_lost: usize,
    /// Increments applied more than once (a count above everything sent).
    pub applied_twice: usize,
    /// Answers other than 200 or a well-formed 503 (500s, 403s of live sessions, timeouts).
    pub wrong_answers: Vec<String>,
}

impl Figures {
    /// One line for `bench/` scripts to collect: `FAILOVER-FIGURES {json}`.
    pub fn print(&self, what: &str) {
        println!(
            "FAILOVER-FIGURES {{\"what\":\"{what}\",\"promoted_ms\":{},\"recovered_ms\":{},\"requests\":{},\"failed\":{},\"slowest_failure_ms\":{},\"idle_sessions\":{IDLE_SESSIONS},\"idle_lost\":{},\"busy_writes_lost\":{},\"applied_twice\":{}}}",
            self.promoted_after.as_millis(),
            self.recovered_after.as_millis(),
            self.requests,
            self.failed,
            self.slowest_failure.as_millis(),
            self.idle_lost,
            self.busy_writes_lost,
            self.applied_twice,
        );
    }
}

/// A logged-in session and what is known of its count.
struct Tracked {
    cookie: String,
    user: String,
    /// The count of the last increment answered 200.
    confirmed: u64,
    /// Increments sent since then that failed: each may or may not have landed.
    unknown: u64,
}

/// A well-formed "store unavailable" answer.
fn is_unavailable(answer: &Answer) -> bool {
    answer.status == 503
        && answer.retry_after.as_deref() == Some("1")
        && answer.set_cookie.is_none()
        && answer.body.contains("session store unavailable")
}

/// One client's view of the failover.
#[derive(Debug, Clone, Copy, Default)]
struct Outage {
    last_failure: Option<Instant>,
    back: Option<Instant>,
}

impl Outage {
    /// Back after failing, or never failed since the kill (then `None`: not part of the outage).
    fn recovered(&self) -> Result<Option<Instant>, ()> {
        match (self.last_failure, self.back) {
            (None, _) => Ok(None),
            (Some(_), Some(back)) => Ok(Some(back)),
            (Some(_), None) => Err(()),
        }
    }
}

struct Shared {
    figures: Mutex<Figures>,
    stop: AtomicBool,
    killed_at: Mutex<Option<Instant>>,
    /// Per busy client, since the kill: when its last failed request ended, and when a request
    /// started after that succeeded (`None` while it has not).
    since_kill: Mutex<Vec<Outage>>,
    /// Busy client 0's session id, once logged in: the session whose master is killed.
    busy_id: Mutex<Option<String>>,
}

impl Shared {
    fn note(&self, answer: &Answer, what: &str) -> bool {
        let mut figures = self.figures.lock().unwrap_or_else(|p| p.into_inner());
        figures.requests += 1;
        if answer.status == 200 {
            return true;
        }
        figures.failed += 1;
        figures.slowest_failure = figures.slowest_failure.max(answer.elapsed);
        if !is_unavailable(answer) {
            figures
                .wrong_answers
                .push(format!("{what}: {} {}", answer.status, answer.body));
        }
        false
    }

    /// Records how a request that started at `started` ended, for client `index`.
    fn record(&self, index: usize, started: Instant, ok: bool) {
        let killed_at = *self.killed_at.lock().unwrap_or_else(|p| p.into_inner());
        let Some(killed_at) = killed_at else { return };
        let now = Instant::now();
        let mut since_kill = self.since_kill.lock().unwrap_or_else(|p| p.into_inner());
        let outage = &mut since_kill[index];
        if !ok {
            outage.last_failure = Some(now);
            outage.back = None;
        } else if started >= outage.last_failure.unwrap_or(killed_at) && outage.back.is_none() {
            outage.back = Some(now);
        }
    }
}

/// Logs in, retrying through a failover (each failure is noted); `None` once told to stop.
async fn login(http: &reqwest::Client, writer: &str, shared: &Shared) -> Option<Tracked> {
    while !shared.stop.load(Ordering::SeqCst) {
        let answer = get(http, &format!("{writer}/login"), None).await;
        if shared.note(&answer, "login") {
            return Some(Tracked {
                cookie: answer.cookie(),
                user: answer.raw("user"),
                confirmed: 0,
                unknown: 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Runs the scenario. `kill` gets the id of a busy session and kills the master holding it;
/// `wait_for_promotion` returns once Redis has promoted a replica. `writer` and `reader` are
/// base URLs. Needs a multi-threaded runtime (the two run in place, blocking).
pub async fn run(
    writer: &str,
    reader: &str,
    secret: &str,
    kill: impl FnOnce(&str),
    wait_for_promotion: impl FnOnce(),
) -> Figures {
    let http = client();
    let shared = Arc::new(Shared {
        figures: Mutex::new(Figures::default()),
        stop: AtomicBool::new(false),
        killed_at: Mutex::new(None),
        since_kill: Mutex::new(vec![Outage::default(); BUSY_CLIENTS]),
        busy_id: Mutex::new(None),
    });
    // Idle sessions: logged in and incremented twice, then left alone.
    let mut idle = Vec::new();
    for _ in 0..IDLE_SESSIONS {
        let mut session = login(&http, writer, &shared).await.expect("not stopped");
        for _ in 0..2 {
            let answer = get(&http, &format!("{writer}/increment"), Some(&session.cookie)).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            session.confirmed = answer.json()["count"].as_u64().expect("a count");
        }
        idle.push(session);
    }
    let idle_written = Instant::now();
    let mut busy = Vec::new();
    for index in 0..BUSY_CLIENTS {
        let (shared, http) = (Arc::clone(&shared), http.clone());
        let (writer, reader, secret) = (writer.to_owned(), reader.to_owned(), secret.to_owned());
        busy.push(tokio::spawn(async move {
            busy_client(index, &http, &writer, &reader, &secret, &shared).await
        }));
    }
    let kill_at = (idle_written + IDLE_QUIET).max(Instant::now() + WARM_UP);
    tokio::time::sleep_until(tokio::time::Instant::from_std(kill_at)).await;
    let busy_id = shared
        .busy_id
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("busy client 0 logged in during the warm-up");
    let killed_at = Instant::now();
    *shared.killed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(killed_at);
    tokio::task::block_in_place(|| kill(&busy_id));
    tokio::task::block_in_place(wait_for_promotion);
    let promoted_after = killed_at.elapsed();
    // Every busy client that failed must be back, then traffic goes on a while (a client that
    // fails again then is not back yet, so the figure is when users were back for good).
    let recovered = |shared: &Shared| -> Option<Instant> {
        let since_kill = shared.since_kill.lock().unwrap_or_else(|p| p.into_inner());
        let backs = since_kill
            .iter()
            .map(Outage::recovered)
            .collect::<Result<Vec<_>, ()>>()
            .ok()?;
        Some(backs.into_iter().flatten().max().unwrap_or(killed_at))
    };
    loop {
        if recovered(&shared).is_some() {
            break;
        }
        assert!(
            killed_at.elapsed() < RUN_DEADLINE,
            "the busy clients did not all recover within {RUN_DEADLINE:?}: {:?}",
            shared.figures.lock().unwrap_or_else(|p| p.into_inner())
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(COOL_DOWN).await;
    shared.stop.store(true, Ordering::SeqCst);
    let recovered_at = recovered(&shared);
    let (mut busy_writes_lost, mut applied_twice) = (0, 0);
    for client in busy {
        let (lost, twice) = client.await.expect("a busy client does not panic");
        busy_writes_lost += lost;
        applied_twice += twice;
    }
    let mut idle_lost = 0;
    for session in &idle {
        let home = get(&http, &format!("{reader}/"), Some(&session.cookie)).await;
        let expected = format!(
            r#"{{"user":{},"count":{}}}"#,
            session.user, session.confirmed
        );
        if home.status != 200 || home.body != expected {
            idle_lost += 1;
        }
    }
    let mut figures = shared
        .figures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    figures.promoted_after = promoted_after;
    figures.recovered_after = match recovered_at {
        Some(at) => at.duration_since(killed_at),
        None => panic!("a busy client failed again during the cool-down: {figures:?}"),
    };
    figures.idle_lost = idle_lost;
    figures.busy_writes_lost = busy_writes_lost;
    figures.applied_twice = applied_twice;
    figures
}

/// One busy user: login, then increment and read until told to stop. Returns (writes lost,
/// increments applied twice).
async fn busy_client(
    index: usize,
    http: &reqwest::Client,
    writer: &str,
    reader: &str,
    secret: &str,
    shared: &Shared,
) -> (usize, usize) {
    let (mut lost, mut twice) = (0, 0);
    let Some(mut session) = login(http, writer, shared).await else {
        return (lost, twice);
    };
    if index == 0 {
        *shared.busy_id.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(super::session_id(&session.cookie, secret));
    }
    while !shared.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let increment = get(http, &format!("{writer}/increment"), Some(&session.cookie)).await;
        let ok = shared.note(&increment, "increment");
        shared.record(index, started, ok);
        if !ok {
            session.unknown += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let count = increment.json()["count"].as_u64().expect("a count");
        if increment.set_cookie.is_some() {
            // The session was gone (an acknowledged write that never reached the replica): the
            // writer started a new one. A lost write; carry on as a new user.
            lost += 1;
            match login(http, writer, shared).await {
                Some(new) => session = new,
                None => break,
            }
            continue;
        }
        if count > session.confirmed + 1 + session.unknown {
            twice += 1;
        }
        if count < session.confirmed + 1 {
            lost += 1;
        }
        session.confirmed = count;
        session.unknown = 0;
        let started = Instant::now();
        let home = get(http, &format!("{reader}/"), Some(&session.cookie)).await;
        if home.status == 403 {
            // The session is not there (not a 503): a lost write. Log in again.
            shared
                .figures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .requests += 1;
            lost += 1;
            match login(http, writer, shared).await {
                Some(new) => session = new,
                None => break,
            }
            continue;
        }
        let ok = shared.note(&home, "read");
        shared.record(index, started, ok);
    }
    (lost, twice)
}

/// What every failover must show; the recovery target is the failure detection time plus 1 s,
/// measured from the moment Redis promoted the replica on (what the store controls), with the
/// whole kill-to-recovery time reported in the figures.
pub fn check(figures: &Figures, detection: Duration) {
    assert!(
        figures.wrong_answers.is_empty(),
        "only 503 JSON may fail: {:?}",
        figures.wrong_answers
    );
    assert!(figures.failed > 0, "the kill was felt: {figures:?}");
    assert!(
        figures.slowest_failure < session::store::COMMAND_TIMEOUT + Duration::from_millis(300),
        "no request hangs past the command timeout: {figures:?}"
    );
    assert_eq!(figures.idle_lost, 0, "{figures:?}");
    assert_eq!(figures.applied_twice, 0, "{figures:?}");
    assert!(
        figures.recovered_after <= figures.promoted_after + Duration::from_secs(1),
        "requests succeed within 1 s of the promotion: {figures:?}"
    );
    assert!(
        figures.promoted_after >= detection,
        "Redis cannot promote before its detection time: {figures:?}"
    );
}
