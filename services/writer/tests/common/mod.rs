//! Shared test kit: services in-process on real sockets, the real binaries and the Node peer as
//! child processes, and a small HTTP client that handles `connect.sid` by hand.
#![allow(dead_code)] // each test target uses a different part of the kit

use redis::Commands as _;
use session::cookie::{CookieOptions, Secrets};
use session::redis_url::RedisUrl;
use session::store::RedisStore;
use session::Sessions;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use session::testing::RedisServer;

pub mod failover;

pub const SECRET: &str = "keyboard cat";

/// A service (`writer::app` or `reader::app`) served in-process on 127.0.0.1:<free port>.
pub struct InProcess {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    pub async fn start(app: fn(Sessions) -> axum::Router, redis_url: &str, secrets: &str) -> Self {
        let url = RedisUrl::parse(redis_url).expect("tests use valid Redis URLs");
        let store = RedisStore::new(&url).expect("a valid URL makes a store");
        let secrets = Secrets::parse(secrets).expect("tests use valid secrets");
        let sessions = Sessions::new(store, secrets, CookieOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback has free ports");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let task = tokio::spawn(async move {
            axum::serve(listener, app(sessions))
                .await
                .expect("the test server runs until aborted");
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One answer, with what the tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub set_cookie: Option<String>,
    pub retry_after: Option<String>,
    pub elapsed: Duration,
}

impl Answer {
    /// The `connect.sid=...` pair of `Set-Cookie`, ready to send back as `Cookie`.
    pub fn cookie(&self) -> String {
        let header = self
            .set_cookie
            .as_deref()
            .unwrap_or_else(|| panic!("no Set-Cookie in {self:?}"));
        header
            .split(';')
            .next()
            .expect("split yields at least one part")
            .to_owned()
    }

    /// A top-level field's exact JSON text (a parsed `Value` could reprint a float differently).
    pub fn raw(&self, field: &str) -> String {
        let fields: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("not a JSON object ({e}): {self:?}"));
        fields
            .get(field)
            .unwrap_or_else(|| panic!("no `{field}` in {}", self.body))
            .get()
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default client builds")
}

/// GET `url`, sending `cookie` (a `connect.sid=...` pair) when given.
pub async fn get(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> Answer {
    let started = Instant::now();
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("test headers are ASCII").to_owned())
    };
    let (status, set_cookie, retry_after) = (
        response.status().as_u16(),
        header("set-cookie"),
        header("retry-after"),
    );
    let body = response.text().await.expect("the body arrives");
    Answer {
        status,
        body,
        set_cookie,
        retry_after,
        elapsed: started.elapsed(),
    }
}

/// The session id inside a `connect.sid=...` pair (verified with `secret`).
pub fn session_id(cookie: &str, secret: &str) -> String {
    let value = cookie
        .strip_prefix("connect.sid=")
        .expect("a connect.sid pair");
    let signed = session::cookie::decode_uri_component(value);
    Secrets::new([secret])
        .unsign(&signed)
        .unwrap_or_else(|| panic!("{cookie} does not verify"))
        .to_owned()
}

/// A `connect.sid=...` pair for `id` signed with `secret`.
pub fn cookie_for(id: &str, secret: &str) -> String {
    format!(
        "connect.sid={}",
        session::cookie::encode_uri_component(&session::cookie::sign(id, secret))
    )
}

pub fn stored(redis: &RedisServer, id: &str) -> Option<String> {
    redis
        .connection()
        .get(format!("sess:{id}"))
        .expect("GET works on the test server")
}

pub fn session_keys(redis: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> = redis
        .connection()
        .keys("sess:*")
        .expect("KEYS works on the test server");
    keys.sort();
    keys
}

/// Calls of each command since the last `CONFIG RESETSTAT`, e.g. `[("getex", 1)]`.
pub fn command_calls(redis: &RedisServer) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .expect("INFO works on the test server");
    let mut calls: Vec<(String, u64)> = info
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let count = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            // The test's own connection and bookkeeping are not the service's commands.
            (!matches!(
                name,
                "info" | "config|resetstat" | "client|setinfo" | "ping" | "auth"
            ))
            .then(|| (name.to_owned(), count))
        })
        .collect();
    calls.sort();
    calls
}

pub fn reset_command_stats(redis: &RedisServer) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut redis.connection())
        .expect("CONFIG RESETSTAT works on the test server");
}

/// Polls `check` until it is true or `deadline` passes; true if it became true.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service running as a child process (a Rust binary or a Node service), in its own process
/// group, with its output captured; SIGTERM then SIGKILL on drop.
pub struct ChildService {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub output: Arc<Mutex<String>>,
}

impl ChildService {
    /// Starts `command` and waits for its address: a line with `addr=<ip:port>` (Rust) or
    /// `listening on http://<ip:port>` (Node).
    pub fn start(mut command: Command) -> Self {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout is piped"))
                as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr is piped")),
        ] {
            let (output, addr_tx) = (Arc::clone(&output), addr_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = address_in(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    let mut output = output.lock().unwrap_or_else(|p| p.into_inner());
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "{command:?} did not report its address within 15 s; output:\n{}",
                    output.lock().unwrap_or_else(|p| p.into_inner())
                )
            });
        Self {
            child: Some(child),
            addr,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        let child = self.child.as_ref().expect("the service is running");
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"))
    }

    /// Sends `signal` and waits up to `deadline` for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        nix::sys::signal::kill(self.pid(), signal).expect("the service process exists");
        let mut child = self.child.take().expect("the service is running");
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits until `text` appears in the output; panics with the output after `deadline`.
    pub fn wait_for_output(&self, text: &str, deadline: Duration) {
        let until = Instant::now() + deadline;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < until,
                "no `{text}` within {deadline:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group =
                nix::unistd::Pid::from_raw(-i32::try_from(child.id()).expect("pids fit in i32"));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn address_in(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once("addr=").map(|(_, rest)| rest).or_else(|| {
        line.split_once("listening on http://")
            .map(|(_, rest)| rest)
    })?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A Rust service binary with a clean environment plus `vars`, on a free port.
pub fn rust_binary(path: &str, vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(path);
    command.env_clear().env("PORT", "0").env("RUST_LOG", "info");
    for (name, value) in vars {
        command.env(name, value);
    }
    command
}

/// `templates/node` of this repository.
pub fn node_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/node")
}

/// A Node peer service (`writer` or `reader`) on a free port. Fails with a hint when the peer
/// is not installed.
/// With `wait_for_store`, returns once the peer's Redis client is ready (it answers 503 before).
pub fn node_service(
    name: &str,
    redis_url: &str,
    secret: &str,
    wait_for_store: bool,
) -> ChildService {
    let template = node_template();
    assert!(
        template.join("node_modules/express-session").is_dir(),
        "the Node peer is not installed: run `(cd templates/node && npm ci)` first"
    );
    let mut command = Command::new("node");
    command
        .arg("index.js")
        .current_dir(template.join("services").join(name))
        .env("PORT", "0")
        .env("REDIS_SESSION_URL", redis_url)
        .env("SESSION_SECRET", secret);
    let service = ChildService::start(command);
    if wait_for_store {
        service.wait_for_output("session store ready", Duration::from_secs(10));
    }
    service
}
