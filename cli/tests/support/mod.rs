//! The harness of the end-to-end test binaries: the real `stack` binary run against projects
//! in temp dirs, real child processes stopped when a test ends, and deadline-bounded waits
//! (never a bare `sleep`).
//!
//! Layout:
//! - `mod.rs`: paths, deadlines, `wait_until`, free ports, what a test needs installed.
//! - `project`: [`Project`], a temp project, and [`Run`], a short `stack` command's outcome.
//! - `up`: [`Up`], a long-running `stack up` (or `logs -f`, `redis watch`) with its output.
//! - `child`: [`ChildGuard`], a child process killed with its process group on drop.
//! - `raw_http`: a raw HTTP/1.1 client that sends a request exactly as written.
//! - `nginx`: [`Nginx`], a real nginx serving an exported config from a temp prefix.
//! - `proxy`: `stack::proxy` in process, with small upstreams and clients (the proxy tests).
//! - `browser`: headless Chromium tests: the demo they open and their node scripts.
//! - `hello`: the hello fixture, a service that rebuilds in a second (second deployments).
//!
//! Each test binary uses a different part of it, hence the one allowance below.
#![allow(dead_code, unused_imports)]

pub mod browser;
mod child;
mod hello;
pub mod nginx;
mod project;
pub mod proxy;
pub mod raw_http;
mod up;

pub use child::ChildGuard;
pub use nginx::Nginx;
pub use project::{Project, Run};
pub use up::Up;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const STACK: &str = env!("CARGO_BIN_EXE_stack");
/// The first `stack up` of a run may build the demo's services.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(600);
/// A short `stack` command, or an instance getting ready, on a machine busy with other builds.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// The repository: the workspace's `Cargo.toml`, `aliases.json`, `services/`, `templates/`.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// A Python web service (the declared-service tests): answers 503 on `/healthz` until
/// `HEALTHY_AFTER` seconds after its start; answers everything else with `VERSION`, else
/// `version.txt`, else its pid; prints each such request with whether it was healthy then
/// (unless `LOG_REQUESTS=0`); exits 3 at once while the file `FAIL_FILE` names exists.
pub const SLOW_SERVICE: &str = r#"import http.server, os, sys, time
FAIL_FILE = os.environ.get("FAIL_FILE")
if FAIL_FILE and os.path.exists(FAIL_FILE):
    print("refusing to start: the fail file exists", flush=True)
    sys.exit(3)
START = time.time()
DELAY = float(os.environ.get("HEALTHY_AFTER", "0"))
LOG_REQUESTS = os.environ.get("LOG_REQUESTS") != "0"
if os.environ.get("VERSION"):
    VERSION = os.environ["VERSION"]
elif os.path.exists("version.txt"):
    VERSION = open("version.txt").read().strip()
else:
    VERSION = str(os.getpid())

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        healthy = time.time() - START >= DELAY
        if self.path == "/healthz":
            status = 200 if healthy else 503
        else:
            if LOG_REQUESTS:
                print(f"request {self.path} healthy={healthy}", flush=True)
            status = 200
        body = VERSION.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

print(f"listening on {os.environ['PORT']}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Sends GET / to `host` from 4 threads until `until` returns, and answers how many requests
/// failed and, per thread, each body it saw in order (a new one only when it changed).
pub fn under_load(
    port: u16,
    host: &'static str,
    until: impl FnOnce(),
) -> (usize, Vec<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed) = (stop.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut seen: Vec<String> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = raw_http::request(port, "GET", "/", &[("Host", host)]);
                    if reply.status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    } else if seen.last() != Some(&reply.body) {
                        seen.push(reply.body);
                    }
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    until();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = load
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    (failed.load(Ordering::Relaxed), seen)
}

/// Polls `check` until it is true; fails naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] for async tests, whose runtime the check must not block (the proxy's tasks
/// run on it).
pub async fn wait_until_async(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Copies the directory `from` to `to`, recursively.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Whether a process runs; a zombie is dead for our purposes (its parent reaps it).
pub fn alive(pid: u64) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A loopback port nobody listens on (bound, then closed).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Whether something accepts connections on the loopback `port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Fails, saying how to install it, when `tool` is missing: a test that needs a tool never
/// passes without it.
pub fn require(tool: &str) {
    if tool == "nginx" {
        assert!(
            Path::new(nginx::NGINX).is_file(),
            "{} is missing: install it with `apt-get install nginx-light`",
            nginx::NGINX
        );
        return;
    }
    let hint = match tool {
        "redis-server" | "redis-cli" => {
            "sudo apt-get install redis-server (macOS: brew install redis)"
        }
        "node" => "install Node.js 20 (sudo apt-get install nodejs npm)",
        "npm" => "install npm (sudo apt-get install npm)",
        "prlimit" => "install util-linux (sudo apt-get install util-linux)",
        "certutil" => "install NSS's tools (sudo apt-get install libnss3-tools)",
        "chromium" => "install Chromium (sudo apt-get install chromium)",
        "python3" => "install Python 3 with venv (sudo apt-get install python3 python3-venv)",
        "curl" => "install curl (sudo apt-get install curl)",
        other => panic!("no install hint for `{other}`: add one to support::require"),
    };
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` is needed by these tests: {hint}");
}
