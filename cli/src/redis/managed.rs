//! The managed Redis: when `REDIS_SESSION_URL` is unset, `stack up` runs a `redis-server` bound
//! to 127.0.0.1 on a free port, with its data in `.stack/redis` (append-only file on, so
//! sessions survive `stack down` + `stack up`, and a crash) and keyspace notifications enabled
//! (for `stack redis watch`). It is started first and stopped last, and supervised like an
//! instance: a server that dies is restarted on the same port with backoff, each change is
//! published as a [`RedisStatus`], and what it wrote to its append-only file is there again.
//!
//! Other users of the machine get nothing from it: it requires a password (generated once per
//! project, kept in `.stack/redis-password`, given to redis-server through a 0600 config file,
//! never on its command line), and it runs with umask 077 in a 0700 directory, so its files are
//! 0600.
//!
//! This module describes the command and speaks just enough RESP to PING; the process itself is
//! run by [`crate::supervisor::process`].

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::state::{self, secret};
use crate::supervisor::instance::{backoff, free_port};
use crate::supervisor::logs::{DeploymentLog, Redactor, Rotation};
use crate::supervisor::process::{self, ChildSpec, RunningChild};

/// Where the managed server keeps its data, under `.stack/`.
pub const DATA_DIR: &str = "redis";
/// Its config file (the password), under the data directory.
const CONFIG_FILE: &str = "redis.conf";
/// Enough notifications for `stack redis watch`: keyspace and keyevent, every class.
pub const NOTIFY_KEYSPACE_EVENTS: &str = "KEA";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A server that ran this long before it died starts the backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Its log's name (`.stack/logs/redis.log`) and line prefix.
const LABEL: &str = "redis";

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("`redis-server` is not installed (not found on PATH)")]
    NotInstalled,
    #[error("cannot prepare `{path}`: {source}")]
    DataDir { path: String, source: io::Error },
    #[error(transparent)]
    Spawn(#[from] process::ProcessError),
    #[error("redis-server did not answer PING within {seconds}s{last_lines}")]
    NotReady { seconds: u64, last_lines: String },
    #[error("redis-server exited at start{last_lines}")]
    Exited { last_lines: String },
}

impl RedisError {
    /// What the user can do about it, in now's voice.
    pub fn hint(&self) -> &'static str {
        match self {
            RedisError::NotInstalled => "Install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`), or set `REDIS_SESSION_URL` to a Redis you run yourself.",
            _ => "See `.stack/logs/redis.log`, or set `REDIS_SESSION_URL` to a Redis you run yourself.",
        }
    }
}

/// Whether the managed server takes commands right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedisState {
    Ready,
    /// It died; a new one starts after the backoff (the services answer 503 meanwhile).
    Restarting,
    Stopped,
}

impl std::fmt::Display for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisState::Ready => "READY",
            RedisState::Restarting => "RESTARTING",
            RedisState::Stopped => "STOPPED",
        })
    }
}

/// What `stack ls` shows of the managed server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisStatus {
    pub state: RedisState,
    pub port: u16,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How the last server ended, and when a new one starts.
    pub last_exit: Option<String>,
}

/// `redis-server` on PATH.
pub fn find_server(path_variable: Option<&str>) -> Result<PathBuf, RedisError> {
    let path_variable = path_variable.ok_or(RedisError::NotInstalled)?;
    std::env::split_paths(path_variable)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(RedisError::NotInstalled)
}

/// How to run the managed server: through `sh` only to set umask 077 before `exec` (the pid
/// stays the server's), the password in `config`, everything else on the command line.
pub fn command(
    server: &Path,
    config: &Path,
    data_dir: &Path,
    port: u16,
    env: BTreeMap<String, String>,
) -> ChildSpec {
    let mut args: Vec<String> = vec![
        "-c".into(),
        r#"umask 077 && exec "$0" "$@""#.into(),
        server.display().to_string(),
        config.display().to_string(),
    ];
    args.extend(
        [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dir",
            &data_dir.display().to_string(),
            "--appendonly",
            "yes",
            "--notify-keyspace-events",
            NOTIFY_KEYSPACE_EVENTS,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            "",
        ]
        .into_iter()
        .map(String::from),
    );
    ChildSpec {
        program: PathBuf::from("/bin/sh"),
        args: args.into_iter().map(Into::into).collect(),
        cwd: data_dir.to_path_buf(),
        env,
        label: LABEL.into(),
    }
}

/// The URL services get for the managed server (the password is masked wherever it is shown).
pub fn url(port: u16, password: &str) -> String {
    format!("redis://:{password}@127.0.0.1:{port}")
}

/// A supervised managed server.
#[derive(Debug)]
pub struct ManagedRedis {
    pub port: u16,
    url: String,
    status: watch::Receiver<RedisStatus>,
    stop: Option<oneshot::Sender<Duration>>,
    task: JoinHandle<()>,
}

/// What it takes to start the server again after it died.
struct Launcher {
    spec: ChildSpec,
    pids_dir: PathBuf,
    port: u16,
    /// For the readiness check only.
    password: String,
    log: DeploymentLog,
}

impl ManagedRedis {
    /// Starts the server and waits until it serves (data loaded), then supervises it. Its output goes
    /// to `.stack/logs/redis.log` (the password masked).
    pub async fn start(
        stack_dir: &Path,
        pids_dir: &Path,
        logs_dir: &Path,
        env: BTreeMap<String, String>,
    ) -> Result<ManagedRedis, RedisError> {
        let server = find_server(env.get("PATH").map(String::as_str))?;
        let data_dir = stack_dir.join(DATA_DIR);
        let prepare_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| RedisError::DataDir { path, source }
        };
        state::create_private_dir(&data_dir).map_err(prepare_error(&data_dir))?;
        let (password, _) = secret::load_or_create_named(stack_dir, secret::REDIS_PASSWORD)
            .map_err(prepare_error(&stack_dir.join(secret::REDIS_PASSWORD)))?;
        let config = data_dir.join(CONFIG_FILE);
        write_config(&config, &password).map_err(prepare_error(&config))?;
        let redactor = Redactor::new([password.clone()]);
        let log = DeploymentLog::open(logs_dir, LABEL, None, redactor, Rotation::default())
            .map_err(prepare_error(logs_dir))?;
        let port = free_port().unwrap_or(6379);
        let launcher = Launcher {
            spec: command(&server, &config, &data_dir, port, env),
            pids_dir: pids_dir.to_path_buf(),
            port,
            password: password.clone(),
            log,
        };
        let child = launcher.launch().await?;
        let (status_tx, status) = watch::channel(RedisStatus {
            state: RedisState::Ready,
            port,
            pid: Some(child.pid),
            restarts: 0,
            last_exit: None,
        });
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(launcher.supervise(child, status_tx, stop_rx));
        Ok(ManagedRedis {
            port,
            url: url(port, &password),
            status,
            stop: Some(stop),
            task,
        })
    }

    /// The URL the services get; it carries the password (show it through `RedisUrl`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every change of the server's state, from now on.
    pub fn subscribe(&self) -> watch::Receiver<RedisStatus> {
        self.status.clone()
    }

    /// SIGTERM (redis-server writes its files and exits), SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        let _ = self.task.await;
    }
}

impl Launcher {
    /// Spawns the server and waits until it answers an authenticated PING (its data loaded).
    async fn launch(&self) -> Result<RunningChild, RedisError> {
        let mut child = process::spawn(&self.spec, &self.pids_dir)?;
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(self.log.clone().pump(LABEL.into(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(self.log.clone().pump(LABEL.into(), stderr));
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(self.port, &self.password, Duration::from_millis(500))
                .await
                .is_ok()
            {
                return Ok(child);
            }
            if let Ok(Some(_)) = child.try_exited() {
                return Err(RedisError::Exited {
                    last_lines: self.last_lines(),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.stop(Duration::from_secs(2)).await;
                return Err(RedisError::NotReady {
                    seconds: READY_TIMEOUT.as_secs(),
                    last_lines: self.last_lines(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn last_lines(&self) -> String {
        self.log
            .recent(10, None)
            .into_iter()
            .map(|line| format!("\n  {}", line.text))
            .collect()
    }

    /// Waits for the server to exit, and starts it again after the backoff (1, 2, 4 .. 30 s)
    /// until told to stop; each change goes to `status` and to the log.
    async fn supervise(
        self,
        child: RunningChild,
        status: watch::Sender<RedisStatus>,
        mut stop: oneshot::Receiver<Duration>,
    ) {
        let mut child = Some(child);
        let mut started = Instant::now();
        let mut failures = 0u32;
        let mut last_failure = String::new();
        loop {
            let reason = match child.as_mut() {
                Some(running) => tokio::select! {
                    exited = running.wait() => match exited {
                        Ok(exit) => format!("exited ({exit})"),
                        Err(error) => format!("could not be waited on: {error}"),
                    },
                    grace = &mut stop => {
                        let _ = running.stop(grace.unwrap_or(READY_TIMEOUT)).await;
                        status.send_modify(|status| {
                            status.state = RedisState::Stopped;
                            status.pid = None;
                        });
                        return;
                    }
                },
                None => std::mem::take(&mut last_failure),
            };
            child = None;
            failures = if started.elapsed() >= STABLE_AFTER {
                1
            } else {
                failures + 1
            };
            let delay = backoff(failures);
            let note = format!("redis-server {reason}; restarting in {}s", delay.as_secs());
            self.log.push(LABEL, &format!("[stack] {note}"));
            status.send_modify(|status| {
                status.state = RedisState::Restarting;
                status.pid = None;
                status.last_exit = Some(note);
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = &mut stop => {
                    status.send_modify(|status| status.state = RedisState::Stopped);
                    return;
                }
            }
            started = Instant::now();
            match self.launch().await {
                Ok(running) => {
                    self.log.push(LABEL, "[stack] redis-server is back");
                    status.send_modify(|status| {
                        status.state = RedisState::Ready;
                        status.pid = Some(running.pid);
                        status.restarts += 1;
                    });
                    child = Some(running);
                }
                Err(error) => last_failure = format!("did not start again: {error}"),
            }
        }
    }
}

/// The config file holds what must not be on a command line: the password.
fn write_config(path: &Path, password: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(
        file,
        "# Written by `stack up` at every start; the password is .stack/redis-password."
    )?;
    writeln!(file, "requirepass {password}")
}

/// Logs in to 127.0.0.1:`port` with `password` and expects `PING` to answer `+PONG`. Only an
/// authenticated `PING` says the server serves: before `AUTH` a server still loading its
/// append-only file answers `-NOAUTH` like a ready one, and after it, `-LOADING`.
async fn ping(port: u16, password: &str, timeout: Duration) -> io::Result<()> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let login = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
            password.len()
        );
        stream.write_all(login.as_bytes()).await?;
        // Two one-line answers: AUTH's, then PING's.
        let mut answer = Vec::new();
        while answer.windows(2).filter(|pair| pair == b"\r\n").count() < 2 {
            let mut chunk = [0u8; 128];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::other("closed before answering PING"));
            }
            answer.extend_from_slice(&chunk[..read]);
        }
        if answer.starts_with(b"+OK\r\n+PONG\r\n") {
            Ok(())
        } else {
            Err(io::Error::other(
                "not serving yet (loading, or refused the login)",
            ))
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "PING timed out"))?
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    async fn start(dir: &Path) -> ManagedRedis {
        let env: BTreeMap<String, String> = [(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )]
        .into();
        match ManagedRedis::start(dir, &dir.join("pids"), &dir.join("logs"), env).await {
            Ok(redis) => redis,
            Err(RedisError::NotInstalled) => {
                panic!("redis-server is needed: sudo apt-get install redis-server")
            }
            Err(other) => panic!("{other}"),
        }
    }

    /// Sends RESP commands and reads until `until` shows up in the answer.
    async fn talk(port: u16, commands: &str, until: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(commands.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).contains(until) {
            let mut chunk = [0u8; 256];
            // Another answer than `until` would otherwise wait here for ever.
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no `{until:?}` in 10 s: {:?}",
                        String::from_utf8_lossy(&answer)
                    )
                })
                .unwrap();
            assert!(read > 0, "{}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..read]);
        }
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn password(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(secret::REDIS_PASSWORD)).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn starts_private_with_persistence_and_notifications_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let redis = start(dir.path()).await;
        let port = redis.port;
        // Nobody gets in without the password, and it is nowhere on the command line.
        let refused = talk(port, "GET sess:x\r\n", "\r\n").await;
        assert!(refused.starts_with("-NOAUTH"), "{refused}");
        let pid = redis.subscribe().borrow().pid.unwrap();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!String::from_utf8_lossy(&cmdline).contains(&password(dir.path())));
        let answer = talk(
            port,
            &format!(
                "AUTH {}\r\nCONFIG GET notify-keyspace-events\r\nCONFIG GET appendonly\r\n",
                password(dir.path())
            ),
            "yes",
        )
        .await;
        // Redis normalises `KEA` to its own spelling of the same classes.
        assert!(answer.contains("AKE") || answer.contains("KEA"), "{answer}");
        let data_dir = dir.path().join(DATA_DIR);
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&dir.path().join(secret::REDIS_PASSWORD)), 0o600);
        let aof = std::fs::read_dir(data_dir.join("appendonlydir")).unwrap();
        for file in aof.flatten() {
            assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
        }
        redis.stop(Duration::from_secs(5)).await;
        let password = password(dir.path());
        assert!(ping(port, &password, Duration::from_millis(200))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_killed_server_comes_back_on_its_port_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let redis = start(dir.path()).await;
        let auth = format!("AUTH {}\r\n", password(dir.path()));
        talk(
            redis.port,
            &format!("{auth}SET sess:kept 1\r\n"),
            "+OK\r\n+OK",
        )
        .await;
        // Enough data that loading it again takes a while: until it is loaded, the server
        // answers `-LOADING`, and is not ready.
        let fill = "for i = 1, 200000 do redis.call('SET', 'filler:' .. i, i) end return 1";
        talk(
            redis.port,
            &format!("{auth}EVAL \"{fill}\" 0\r\nDBSIZE\r\n"),
            ":200001\r\n",
        )
        .await;
        // In the append-only file (the page cache, which a kill -9 keeps) before the kill:
        // with `appendfsync everysec` Redis may hold a write back while a slow fsync runs
        // (up to 2 s, on a busy disk), so a fixed sleep would not do.
        let aof_dir = dir.path().join(DATA_DIR).join("appendonlydir");
        let written = Instant::now();
        while !std::fs::read_dir(&aof_dir).is_ok_and(|files| {
            files.flatten().any(|file| {
                std::fs::read(file.path())
                    .is_ok_and(|bytes| bytes.windows(9).any(|window| window == b"sess:kept"))
            })
        }) {
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "the SET never reached {}",
                aof_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut status = redis.subscribe();
        let pid = status.borrow().pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(15),
            status.wait_for(|status| status.state == RedisState::Restarting),
        )
        .await
        .expect("redis-server restarting within 15 s of the kill")
        .unwrap();
        let back = tokio::time::timeout(
            Duration::from_secs(15),
            status.wait_for(|status| status.state == RedisState::Ready),
        )
        .await
        .expect("redis-server ready within 15 s of the kill")
        .unwrap()
        .clone();
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "{:?}",
            killed.elapsed()
        );
        assert_eq!(back.restarts, 1);
        assert_ne!(back.pid, Some(pid));
        assert!(back.last_exit.unwrap().contains("SIGKILL"));
        let kept = talk(redis.port, &format!("{auth}GET sess:kept\r\n"), "$1\r\n1").await;
        assert!(kept.ends_with("$1\r\n1\r\n"), "{kept}");
        redis.stop(Duration::from_secs(5)).await;
    }
}
