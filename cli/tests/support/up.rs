//! A long-running `stack` command (`stack up`, `stack logs -f`, `stack redis watch`) whose
//! output is collected line by line and waited on with deadline-bounded polling.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{ChildGuard, Project, BUILD_DEADLINE, COMMAND_DEADLINE};

/// A running `stack up --port 0` (or another long-running `stack` command), its stdout and
/// stderr collected line by line; stopped with SIGINT on drop.
pub struct Up {
    child: ChildGuard,
    /// `stack <args>`, for messages.
    what: String,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    pub port: u16,
}

impl Up {
    pub fn start(project: &Project, args: &[&str]) -> Up {
        Up::start_with_env(project, args, &[])
    }

    /// Starts `stack up` and waits for the proxy's address. Only the project's variables and
    /// `env` are set: see [`Project::command`].
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

    /// The HTTPS port `stack up` printed.
    pub fn https_port(&mut self) -> u16 {
        let line = self.wait_for("Proxy listening on https://localhost:", BUILD_DEADLINE);
        line.split("https://localhost:")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("a port in {line}"))
    }

    /// Starts `stack up` and returns at once: the proxy's port is not known yet (0), as
    /// during its first build.
    pub fn launch(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Up {
        let mut full = vec!["up", "--port", "0"];
        full.extend_from_slice(args);
        Up::spawn(project, &full, env)
    }

    /// Starts any long-running `stack` command (`logs -f`, `redis watch`), its output
    /// collected as `stack up`'s is; SIGINT on drop.
    pub fn spawn(project: &Project, args: &[&str], env: &[(&str, &str)]) -> Up {
        let what = format!("`stack {}`", args.join(" "));
        let mut command = project.command(args);
        command.envs(env.iter().copied());
        Up::spawn_command(command, what)
    }

    /// [`Up::spawn`] for a command built by the test (`stack` under `prlimit`, say).
    pub fn spawn_command(mut command: std::process::Command, what: String) -> Up {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut command, &what)
            .stopped_by(Signal::SIGINT, Duration::from_secs(15));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            Box::new(child.child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.child.stderr.take().expect("piped stderr")),
        ]
        .into_iter()
        .map(|stream| {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .collect();
        Up {
            child,
            what,
            lines,
            readers,
            port: 0,
        }
    }

    /// Everything printed so far, stdout and stderr interleaved as read.
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

    /// Waits for a line containing `needle`; fails early if the command exits.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until `n` lines contain `needle`; returns the n-th.
    pub fn wait_for_nth(&mut self, needle: &str, n: usize, timeout: Duration) -> String {
        self.wait_for_parts(&[needle], n, timeout)
    }

    /// Waits until `n` lines contain every one of `parts`; returns the n-th.
    pub fn wait_for_parts(&mut self, parts: &[&str], n: usize, timeout: Duration) -> String {
        let nth = |lines: &[String]| {
            lines
                .iter()
                .filter(|line| parts.iter().all(|part| line.contains(part)))
                .nth(n - 1)
                .cloned()
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = nth(&self.lines.lock().unwrap()) {
                return line;
            }
            if let Some(status) = self.child.exited() {
                // What it printed last may still be on its way through the pipes.
                self.wait_for_readers(Duration::from_secs(1));
                if let Some(line) = nth(&self.lines.lock().unwrap()) {
                    return line;
                }
                panic!(
                    "{} exited ({status}) before {n}x {parts:?}:\n{}",
                    self.what,
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {n}x {parts:?} from {}:\n{}",
                self.what,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_ready(&mut self, service: &str) {
        self.wait_for(&format!("> Ready! http://{service}-"), COMMAND_DEADLINE);
    }

    pub fn pid(&self) -> Pid {
        self.child.pid()
    }

    /// Waits for it to exit on its own; fails with its output after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.child.exit_within(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit in {timeout:?}:\n{}",
                self.what,
                self.output()
            )
        })
    }

    /// `signal` to it (SIGKILL 15 s later if it still runs); then everything it printed, the
    /// last lines included.
    pub fn stop(&mut self, signal: Signal) -> String {
        self.child.stop(signal, Duration::from_secs(15));
        self.wait_for_readers(Duration::from_secs(5));
        self.output()
    }

    /// Until both pipes are read to their end, at most `timeout` (a process it left may hold
    /// them open).
    fn wait_for_readers(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
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
