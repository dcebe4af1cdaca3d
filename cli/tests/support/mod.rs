//! The harness shared by the end-to-end test binaries that run `stack up` (`up.rs`, `watch.rs`):
//! a project in a temp dir, short `stack` commands bounded in time, and a running `stack up`
//! whose output is collected line by line and waited on with deadline-bounded polling.
//!
//! Each test binary uses a different part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod proxy;

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub const STACK: &str = env!("CARGO_BIN_EXE_stack");
/// The first `stack up` of a run may build the demo's services.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(600);
/// A short `stack` command, or an instance getting ready, on a machine busy with other builds.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

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

/// A project directory in a temp dir.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// CARGO_TARGET_DIR for `stack up`; `None`: the workspace's (services named by path).
    pub target_dir: Option<PathBuf>,
}

impl Project {
    /// The demo: `aliases.json` and a `.env` with the given `SESSION_SECRET`.
    pub fn demo(secret: &str) -> Project {
        let dir = tempfile::tempdir().expect("a temp dir");
        fs::copy(
            workspace().join("aliases.json"),
            dir.path().join("aliases.json"),
        )
        .expect("the workspace has aliases.json");
        fs::write(
            dir.path().join(".env"),
            format!("SESSION_SECRET={secret}\n"),
        )
        .unwrap();
        Project {
            dir,
            target_dir: None,
        }
    }

    /// A copy of `tests/fixtures/<name>`.
    pub fn fixture(name: &str) -> Project {
        let dir = tempfile::tempdir().expect("a temp dir");
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
            dir.path(),
        );
        Project {
            dir,
            target_dir: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a short `stack` command in this project, bounded in time.
    pub fn stack(&self, args: &[&str]) -> Output {
        let mut child = Command::new(STACK)
            .arg("--cwd")
            .arg(self.path())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stack binary runs");
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`stack {}` did not finish", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stack_ok(&self, args: &[&str]) -> String {
        let output = self.stack(args);
        assert!(
            output.status.success(),
            "`stack {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn ls(&self) -> Vec<Value> {
        serde_json::from_str(&self.stack_ok(&["ls", "--json"])).expect("`stack ls --json` is JSON")
    }

    /// The live deployment of a service in `stack ls --json`.
    pub fn live(&self, service: &str) -> Value {
        self.ls()
            .into_iter()
            .find(|deployment| deployment["service"] == service && deployment["current"] == true)
            .unwrap_or_else(|| panic!("no live deployment of {service}"))
    }
}

/// A running `stack up --port 0`, its output collected line by line; stopped with SIGINT on drop.
pub struct Up {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub port: u16,
}

impl Up {
    pub fn start(project: &Project, args: &[&str]) -> Up {
        Up::start_with_env(project, args, &[])
    }

    /// Starts `stack up` and waits for the proxy's address. The caller's `SESSION_SECRET` and
    /// `REDIS_SESSION_URL` never leak in: each test says what the services get.
    pub fn start_with_env(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut up = Up::launch(project, args, env);
        up.wait_proxy();
        up
    }

    /// Waits for the proxy's address (after the first build) and keeps its port.
    pub fn wait_proxy(&mut self) {
        let line = self.wait_for("Proxy listening on http://127.0.0.1:", BUILD_DEADLINE);
        self.port = line
            .rsplit(':')
            .next()
            .and_then(|port| port.trim().parse().ok())
            .expect("the proxy line ends with the port");
    }

    /// Starts `stack up` and returns at once: the proxy's port is not known yet (0), as
    /// during its first build.
    pub fn launch(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut full = vec!["up", "--port", "0"];
        full.extend_from_slice(args);
        Up::spawn(project, &full, env)
    }

    /// Starts any long-running `stack` command (`logs -f`), its output collected as `stack
    /// up`'s is; SIGINT on drop.
    pub fn spawn(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut child = Command::new(STACK)
            .arg("--cwd")
            .arg(project.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("SESSION_SECRET")
            .env_remove("REDIS_SESSION_URL")
            .envs(
                project
                    .target_dir
                    .iter()
                    .map(|dir| ("CARGO_TARGET_DIR", dir.as_os_str())),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stack binary runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Up {
            child,
            lines,
            port: 0,
        }
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits for a line containing `needle`; fails early if `stack up` exits.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&mut self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(needle))
                .nth(n - 1)
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "stack up exited ({status}) before `{needle}`:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {n}x `{needle}` from stack up:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&mut self, service: &str) {
        self.wait_for(&format!("> Ready! http://{service}-"), COMMAND_DEADLINE);
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "stack up did not exit:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client that sends `host` to the proxy, with a cookie jar.
    pub fn client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .resolve(host, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
