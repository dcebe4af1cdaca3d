//! Test harness: a real `redis-server` on a free loopback port in a temp dir (feature `testing`).
//!
//! Owns starting, stopping, killing, restarting (same port), pausing (SIGSTOP) and resuming a
//! throwaway server, and stopping it on drop. It persists nothing unless asked (`--save '' --appendonly
//! no`; `start_persistent` keeps an fsynced append-only file in the temp dir) and never skips: without `redis-server` on PATH it panics with an install
//! hint, so a test that needs Redis fails loudly. `start_tls` serves TLS only, with a throwaway CA
//! and server certificate made by `openssl` in the temp dir.
//!
//! Past one server: [`RedisCluster`] (3 masters and 3 replicas made by `redis-cli --cluster
//! create`) and [`SentinelSet`] (a master, a replica and 3 sentinels), each node a
//! `RedisServer` in its own temp dir, with short failure detection so failover tests are quick.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod sentinel;
pub use cluster::RedisCluster;
pub use sentinel::SentinelSet;

const START_DEADLINE: Duration = Duration::from_secs(10);
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A `redis-server` child process for one test.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    password: Option<String>,
    persistent: bool,
    /// TLS only (`--port 0 --tls-port`), with the certificates in `dir`.
    tls: bool,
    /// More `redis-server` arguments (cluster and replica settings).
    extra_args: Vec<String>,
    /// A config file to write to `dir` and start from (a sentinel rewrites its own).
    config: Option<String>,
    child: Option<Child>,
}

const CA_FILE: &str = "ca.crt";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_inner(None, false, false)
    }

    /// Starts a server that requires `password` (`requirepass`).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_owned()), false, false)
    }

    /// Starts a server that keeps its data across `kill()` + `restart()` (append-only file,
    /// fsync on every write), for tests where sessions must outlive a crash.
    pub fn start_persistent() -> Self {
        Self::start_inner(None, true, false)
    }

    /// Starts a TLS-only server requiring `password`, its certificate (for `127.0.0.1` and
    /// `localhost`) signed by a fresh CA whose PEM file is [`RedisServer::ca_file`].
    /// [`RedisServer::url`] is then `rediss://`. Needs `openssl` on PATH.
    pub fn start_tls_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_owned()), false, true)
    }

    /// The CA certificate (PEM) that signed a `start_tls_with_password` server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        assert!(self.tls, "only a TLS server has a CA file");
        self.dir.path().join(CA_FILE)
    }

    fn start_inner(password: Option<String>, persistent: bool, tls: bool) -> Self {
        Self::start_node(password, persistent, tls, free_port, |_| (Vec::new(), None))
    }

    /// Starts a server on a port from `port`, with the extra arguments and config file that
    /// `setup` makes for that port.
    fn start_node(
        password: Option<String>,
        persistent: bool,
        tls: bool,
        port: fn() -> u16,
        setup: impl Fn(u16) -> (Vec<String>, Option<String>),
    ) -> Self {
        // The port is free when probed; another process could take it before redis-server
        // binds, so a failed start retries on a new port.
        for _ in 0..5 {
            let port = port();
            let (extra_args, config) = setup(port);
            let mut server = Self {
                dir: tempfile::tempdir().expect("a temp dir can be created for redis-server"),
                port,
                password: password.clone(),
                persistent,
                tls,
                extra_args,
                config,
                child: None,
            };
            if tls {
                make_certificates(server.dir.path());
            }
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on a free port after 5 tries; see its output above");
    }

    /// `redis://127.0.0.1:<port>` (with the password, if any: this is for tests, not logs).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// A client for [`RedisServer::url`], trusting the test CA for a TLS server.
    fn client(&self) -> redis::RedisResult<redis::Client> {
        if !self.tls {
            return redis::Client::open(self.url());
        }
        let pem = std::fs::read(self.ca_file()).expect("start_tls wrote the CA file");
        redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (not stopped or killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A blocking client connection, for a test's own checks.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|error| {
                panic!(
                    "cannot connect to the test redis-server on port {}: {error}",
                    self.port
                )
            })
    }

    /// Stops the server with SIGTERM (SIGKILL after a deadline) and waits for it.
    pub fn stop(&mut self) {
        self.signal_and_reap(Signal::SIGTERM);
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        self.signal_and_reap(Signal::SIGKILL);
    }

    /// Starts the server again on the same port (after `stop` or `kill`).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs a stopped server: call stop() or kill() first"
        );
        let deadline = Instant::now() + START_DEADLINE;
        // The old socket may linger briefly; retry until the port can be bound again.
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server could not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.send(Signal::SIGSTOP);
    }

    /// Thaws a server frozen by `pause`.
    pub fn resume(&self) {
        self.send(Signal::SIGCONT);
    }

    fn send(&self, signal: Signal) {
        let child = self
            .child
            .as_ref()
            .expect("the test redis-server is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        kill(pid, signal)
            .unwrap_or_else(|error| panic!("cannot send {signal} to redis-server: {error}"));
    }

    fn signal_and_reap(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        // A paused server must be able to act on SIGTERM.
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, signal);
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Spawns redis-server and waits until it answers PING. False if it exited (port taken).
    fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        if let Some(config) = &self.config {
            let file = self.dir.path().join("redis.conf");
            // Written once: a sentinel rewrites it with what it learns, and a restart keeps that.
            if !file.exists() {
                std::fs::write(&file, config).expect("the temp dir is writable");
            }
            command.arg(file);
        }
        if self.tls {
            let dir = self.dir.path();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.join(SERVER_CERT))
                .arg("--tls-key-file")
                .arg(dir.join(SERVER_KEY))
                .arg("--tls-ca-cert-file")
                .arg(dir.join(CA_FILE))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        command.args(&self.extra_args);
        // Its own process group: a Ctrl-C aimed at the test runner's terminal is not its business.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH; these tests need a real Redis.\n\
                 Install it: `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)."
            ),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_status)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if self.answers_ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        use std::io::{Read, Write};
        if self.tls {
            return self
                .client()
                .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
                .is_ok();
        }
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut request = String::new();
        if let Some(password) = &self.password {
            request.push_str(&format!("AUTH {password}\r\n"));
        }
        request.push_str("PING\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = [0_u8; 64];
        let mut read = 0;
        while read < answer.len() {
            match stream.read(&mut answer[read..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if answer[..read].windows(5).any(|w| w == b"+PONG") {
                return true;
            }
        }
        false
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A throwaway CA and a server certificate it signs (for 127.0.0.1 and localhost), in `dir`.
/// EC P-256 keys: quick to generate, so TLS tests stay fast.
fn make_certificates(dir: &Path) {
    const KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("the temp dir is writable");
    let steps: [&[&str]; 3] = [
        &[
            &[
                "req",
                "-x509",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=stack test CA",
            ][..],
            &KEY,
            &["-keyout", "ca.key", "-out", CA_FILE],
        ]
        .concat(),
        &[
            &["req", "-nodes", "-subj", "/CN=localhost"][..],
            &KEY,
            &["-keyout", SERVER_KEY, "-out", "server.csr"],
        ]
        .concat(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            CA_FILE,
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            SERVER_CERT,
        ],
    ];
    for args in steps {
        let output = match Command::new("openssl").args(args).current_dir(dir).output() {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "openssl is not on PATH; the TLS tests need it to make certificates.\n\
                 Install it: `apt-get install openssl` (Debian/Ubuntu) or `brew install openssl` (macOS)."
            ),
            Err(error) => panic!("cannot run openssl: {error}"),
        };
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Polls `check` every 50 ms until it passes; panics with `what` and its last reason after
/// `deadline` (the cluster and Sentinel set wait for their health this way).
fn poll_until(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + deadline;
    loop {
        match check() {
            Ok(()) => return,
            Err(why) if Instant::now() >= until => panic!("{what} after {deadline:?}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS hands out a free loopback port")
}
