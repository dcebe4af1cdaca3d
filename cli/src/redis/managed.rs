//! The managed Redis: when `REDIS_SESSION_URL` is unset, `stack up` runs a `redis-server` bound
//! to 127.0.0.1 on a free port, with its data in `.stack/redis` (append-only file on, so
//! sessions survive `stack down` + `stack up`) and keyspace notifications enabled (for
//! `stack redis watch`). It is started first and stopped last.
//!
//! This module describes the command and speaks just enough RESP to PING; the process itself is
//! run by [`crate::supervisor::process`], the only place that spawns.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::supervisor::logs::DeploymentLog;
use crate::supervisor::process::{self, ChildSpec, RunningChild};

/// Where the managed server keeps its data, under `.stack/`.
pub const DATA_DIR: &str = "redis";
/// Enough notifications for `stack redis watch`: keyspace and keyevent, every class.
pub const NOTIFY_KEYSPACE_EVENTS: &str = "KEA";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// `redis-server` on PATH.
pub fn find_server(path_variable: Option<&str>) -> Result<PathBuf, RedisError> {
    let path_variable = path_variable.ok_or(RedisError::NotInstalled)?;
    std::env::split_paths(path_variable)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(RedisError::NotInstalled)
}

/// The command line of the managed server.
pub fn command(
    server: &Path,
    data_dir: &Path,
    port: u16,
    env: BTreeMap<String, String>,
) -> ChildSpec {
    let args = [
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
    .map(Into::into)
    .collect();
    ChildSpec {
        program: server.to_path_buf(),
        args,
        cwd: data_dir.to_path_buf(),
        env,
        label: "redis".into(),
    }
}

/// The URL services get for the managed server.
pub fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A running managed server.
#[derive(Debug)]
pub struct ManagedRedis {
    pub port: u16,
    child: RunningChild,
}

impl ManagedRedis {
    /// Starts the server and waits until it answers PING. Its output goes to `log`.
    pub async fn start(
        stack_dir: &Path,
        pids_dir: &Path,
        env: BTreeMap<String, String>,
        log: DeploymentLog,
    ) -> Result<ManagedRedis, RedisError> {
        let server = find_server(env.get("PATH").map(String::as_str))?;
        let data_dir = stack_dir.join(DATA_DIR);
        std::fs::create_dir_all(&data_dir).map_err(|source| RedisError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let port = crate::supervisor::instance::free_port().unwrap_or(6379);
        let mut child = process::spawn(&command(&server, &data_dir, port, env), pids_dir)?;
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(log.clone().pump("redis".into(), stdout));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log.clone().pump("redis".into(), stderr));
        }
        let last_lines = |log: &DeploymentLog| {
            let lines: Vec<String> = log
                .recent(10, None)
                .into_iter()
                .map(|line| format!("\n  {}", line.text))
                .collect();
            lines.concat()
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping_tcp(port, Duration::from_millis(500)).await.is_ok() {
                return Ok(ManagedRedis { port, child });
            }
            if let Ok(Some(_)) = child.try_exited() {
                return Err(RedisError::Exited {
                    last_lines: last_lines(&log),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.stop(Duration::from_secs(2)).await;
                return Err(RedisError::NotReady {
                    seconds: READY_TIMEOUT.as_secs(),
                    last_lines: last_lines(&log),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// SIGTERM (redis-server writes its files and exits), SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.child.stop(grace).await;
    }
}

/// Sends `PING` to 127.0.0.1:`port` and expects `+PONG` (a password-protected server answers
/// `-NOAUTH`, which also proves it is up).
pub async fn ping_tcp(port: u16, timeout: Duration) -> io::Result<()> {
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut answer = [0u8; 64];
        let read = stream.read(&mut answer).await?;
        if answer[..read].starts_with(b"+PONG") || answer[..read].starts_with(b"-NOAUTH") {
            Ok(())
        } else {
            Err(io::Error::other("unexpected answer to PING"))
        }
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "PING timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::logs::Redactor;

    #[tokio::test]
    async fn starts_with_persistence_and_notifications_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> = [(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        )]
        .into();
        let log = DeploymentLog::open(&dir.path().join("logs"), "redis", None, Redactor::default())
            .unwrap();
        let redis = match ManagedRedis::start(dir.path(), &dir.path().join("pids"), env, log).await
        {
            Ok(redis) => redis,
            Err(RedisError::NotInstalled) => {
                panic!("redis-server is needed: sudo apt-get install redis-server")
            }
            Err(other) => panic!("{other}"),
        };
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
        stream
            .write_all(b"CONFIG GET notify-keyspace-events\r\nCONFIG GET appendonly\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).contains("yes") {
            let mut chunk = [0u8; 256];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "{}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..read]);
        }
        let answer = String::from_utf8_lossy(&answer);
        // Redis normalises `KEA` to its own spelling of the same classes.
        assert!(answer.contains("AKE") || answer.contains("KEA"), "{answer}");
        let port = redis.port;
        redis.stop(Duration::from_secs(5)).await;
        assert!(ping_tcp(port, Duration::from_millis(200)).await.is_err());
        assert!(dir.path().join("redis").is_dir());
    }
}
