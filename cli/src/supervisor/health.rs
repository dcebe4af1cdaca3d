//! One health check of one instance: `GET path` answering 2xx or 3xx, a TCP connect, or a
//! command exiting 0, each bounded by the check's timeout. A failure says what it saw (the
//! status, the refused connection, the command's exit and last output line), for the log line
//! and for a dependent's start error.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::process;
use crate::config::model::Check;

/// Where and how an instance is checked.
pub struct Target<'a> {
    /// The instance's port; `None` for a worker.
    pub port: Option<u16>,
    /// The deployment's directory, where a `cmd` check runs.
    pub dir: &'a Path,
    /// The instance's environment (a `cmd` check sees `PORT` too), made only for a `cmd`
    /// check: 50 instances checked every second should not copy it 50 times a second.
    pub env: &'a (dyn Fn() -> BTreeMap<String, String> + Sync),
    pub pids_dir: &'a Path,
}

/// Runs `check` once: `Ok` when it passes, else what it saw.
pub async fn run(check: &Check, target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    let timed_out = || format!("{check} did not answer within {}ms", timeout.as_millis());
    match check {
        Check::Http(path) => {
            let port = target.port.ok_or("a worker has no port to check")?;
            match http_status(port, path, timeout).await {
                Ok(status) if (200..400).contains(&status) => Ok(()),
                Ok(status) => Err(format!("GET {path} answered {status}")),
                Err(HttpFailure::TimedOut) => Err(timed_out()),
                Err(HttpFailure::Io(error)) => Err(format!("GET {path}: {error}")),
            }
        }
        Check::Tcp => {
            let port = target.port.ok_or("a worker has no port to check")?;
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!("connecting to port {port}: {error}")),
                Err(_) => Err(timed_out()),
            }
        }
        Check::Cmd(command) => run_command(command, target, timeout).await,
    }
}

async fn run_command(command: &str, target: &Target<'_>, timeout: Duration) -> Result<(), String> {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .current_dir(target.dir)
        .env_clear()
        .envs((target.env)())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, _group) = process::spawn_tool(&mut shell, "health check", target.pids_dir)
        .map_err(|error| format!("cannot run `{command}`: {error}"))?;
    // The group (and so any child the command left) goes with `_group` when this returns.
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{command}` did not finish within {}ms",
            timeout.as_millis()
        )),
        Ok(Err(error)) => Err(format!("`{command}` could not be waited on: {error}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            let last = text.lines().rev().find(|line| !line.trim().is_empty());
            Err(match last {
                Some(line) => format!("`{command}` {}: {}", output.status, line.trim()),
                None => format!("`{command}` {}", output.status),
            })
        }
    }
}

/// A health answer's body is read (and dropped) up to this much.
const MAX_DRAINED: usize = 64 * 1024;

pub enum HttpFailure {
    TimedOut,
    Io(String),
}

/// The status of `GET path` on 127.0.0.1:`port`, if a response head arrives within `timeout`.
pub async fn http_status(port: u16, path: &str, timeout: Duration) -> Result<u16, HttpFailure> {
    let check = async {
        let io = |error: std::io::Error| HttpFailure::Io(error.to_string());
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect(address).await.map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: stack-health\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut head = [0u8; 16];
        let read = stream.read(&mut head).await.map_err(io)?;
        // `HTTP/1.1 200 ...`: the status is the 3 digits after the first space.
        let status = std::str::from_utf8(&head[..read])
            .ok()
            .and_then(|text| text.split(' ').nth(1)?.get(..3)?.parse().ok())
            .ok_or_else(|| HttpFailure::Io("the answer is not HTTP".into()))?;
        // Read the rest (`Connection: close` ends it): closing with unread bytes would reset
        // the connection, and a server such as Python's logs every reset as an error.
        let mut rest = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_DRAINED {
            match stream.read(&mut rest).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        Ok(status)
    };
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or(Err(HttpFailure::TimedOut))
}
