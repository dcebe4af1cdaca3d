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
        "redis-server" => "sudo apt-get install redis-server (macOS: brew install redis)",
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
