//! One health check of one instance: `GET path` answering 2xx or 3xx, a TCP connect, or a
//! command exiting 0, each bounded by the check's timeout. A failure says what it saw (the
//! status, the refused connection, the command's exit and last output line), for the log line
//! and for a dependent's start error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    /// Where the instance listens (127.0.0.1 or [::1], its port); `None` for a worker.
    pub addr: Option<SocketAddr>,
    /// The deployment's directory, where a `cmd` check runs.
    pub dir: &'a Path,
    /// The instance's environment (a `cmd` check sees `PORT` too), made only for a `cmd`
    /// check: 50 instances checked every second should not copy it 50 times a second.
    pub env: &'a (dyn Fn() -> BTreeMap<String, String> + Sync),
    pub pids_dir: &'a Path,
}

/// Runs `check` once: `Ok` when it passes, else what it saw.
pub async fn run(
    check: &Check,
    target: &Target<'_>,
    timeout: Duration,
    http: &mut HttpConnection,
) -> Result<(), String> {
    let timed_out = || format!("{check} did not answer within {}ms", timeout.as_millis());
    match check {
        Check::Http(path) => {
            let addr = target.addr.ok_or("a worker has no port to check")?;
            match http.status(addr, path, timeout).await {
                Ok(status) if (200..400).contains(&status) => Ok(()),
                Ok(status) => Err(format!("GET {path} answered {status}")),
                Err(HttpFailure::TimedOut) => Err(timed_out()),
                Err(HttpFailure::Io(error)) => Err(format!("GET {path}: {error}")),
            }
        }
        Check::Tcp => {
            let addr = target.addr.ok_or("a worker has no port to check")?;
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(format!("connecting to port {}: {error}", addr.port())),
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

/// A health answer's body is read (and dropped) up to this much; a longer one ends the connection.
const MAX_DRAINED: usize = 64 * 1024;
/// A response head longer than this is not a health answer.
const MAX_HEAD: usize = 16 * 1024;

pub enum HttpFailure {
    TimedOut,
    Io(String),
}

/// The status of `GET path` on `addr`, once, on a connection of its own.
pub async fn http_status(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, HttpFailure> {
    HttpConnection::default().status(addr, path, timeout).await
}

/// One instance's keep-alive connection for its HTTP health check, reused check after check:
/// 50 instances checked every second cost no connect, accept and close each, and no
/// allocation once warm (the request is written once, the read buffer kept). A new connection
/// after an error, a timeout, or an answer that ends the connection (`Connection: close`,
/// HTTP/1.0, a body without a length).
#[derive(Default)]
pub struct HttpConnection {
    stream: Option<TcpStream>,
    /// The address and path `request` is for.
    addr: Option<SocketAddr>,
    path: String,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

/// How a response's body ends.
enum Body {
    Length(usize),
    Chunked,
    AtClose,
}

impl HttpConnection {
    /// Closes the connection (before the instance is stopped: a server draining its
    /// connections should not wait for this one).
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// The status of `GET path` on `addr` within `timeout`. A reused connection that the
    /// server closed meanwhile (an idle timeout) is retried once on a new one, within the same
    /// timeout.
    pub async fn status(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<u16, HttpFailure> {
        if self.request.is_empty() || self.addr != Some(addr) || self.path != path {
            self.stream = None;
            self.addr = Some(addr);
            self.path = path.to_string();
            self.request =
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: stack-health\r\n\r\n")
                    .into_bytes();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let reused = self.stream.is_some();
        let mut outcome = tokio::time::timeout_at(deadline, self.exchange()).await;
        if reused && matches!(outcome, Ok(Err(_))) {
            self.stream = None;
            outcome = tokio::time::timeout_at(deadline, self.exchange()).await;
        }
        match outcome {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(error)) => {
                self.stream = None;
                Err(HttpFailure::Io(error))
            }
            Err(_) => {
                self.stream = None;
                Err(HttpFailure::TimedOut)
            }
        }
    }

    /// Writes the request and reads the whole answer; the connection is kept when the answer
    /// allows it.
    async fn exchange(&mut self) -> Result<u16, String> {
        let Self {
            stream,
            addr,
            request,
            buffer,
            ..
        } = self;
        let io = |error: std::io::Error| error.to_string();
        let connection = match stream {
            Some(connection) => connection,
            None => {
                let address = addr.ok_or("no address to check")?;
                stream.insert(TcpStream::connect(address).await.map_err(io)?)
            }
        };
        connection.write_all(request).await.map_err(io)?;
        buffer.clear();
        let head_end = loop {
            if let Some(at) = find(buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > MAX_HEAD {
                return Err("the answer's head is too long".into());
            }
            read_more(connection, buffer).await?;
        };
        let (status, body, mut close) =
            parse_head(&buffer[..head_end]).ok_or("the answer is not HTTP")?;
        match body {
            Body::Length(length) if length > MAX_DRAINED => close = true,
            Body::Length(length) => {
                while buffer.len() - head_end < length {
                    read_more(connection, buffer).await?;
                }
                // Bytes beyond the body answer nothing we asked: start again next time.
                close |= buffer.len() - head_end > length;
            }
            Body::Chunked => loop {
                match chunked_end(&buffer[head_end..]) {
                    Some(Ok(end)) => {
                        close |= buffer.len() - head_end > end;
                        break;
                    }
                    Some(Err(())) => return Err("the answer's chunked body is malformed".into()),
                    None if buffer.len() - head_end > MAX_DRAINED => {
                        close = true;
                        break;
                    }
                    None => read_more(connection, buffer).await?,
                }
            },
            Body::AtClose => {
                // Read to the server's close: closing with unread bytes would reset the
                // connection, and a server such as Python's logs every reset as an error.
                close = true;
                let mut drained = buffer.len() - head_end;
                while drained < MAX_DRAINED {
                    buffer.clear();
                    match connection.read_buf(buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            }
        }
        if close {
            *stream = None;
        }
        Ok(status)
    }
}

/// Reads what has arrived onto `buffer`; the server closing first is an error.
async fn read_more(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    buffer.reserve(4096);
    match connection.read_buf(buffer).await {
        Ok(0) => Err("the connection closed before a whole answer".into()),
        Ok(_) => Ok(()),
        Err(error) => Err(error.to_string()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The status, how the body ends, and whether the server ends the connection after it.
fn parse_head(head: &[u8]) -> Option<(u16, Body, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut status_line = lines.next()?.splitn(3, ' ');
    let version = status_line.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.next()?.get(..3)?.parse().ok()?;
    let mut close = version == "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            close = value.contains("close") || (close && !value.contains("keep-alive"));
        }
    }
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Body::Length(0)
    } else if chunked {
        Body::Chunked
    } else {
        match length {
            Some(length) => Body::Length(length),
            None => Body::AtClose,
        }
    };
    Some((status, body, close))
}

/// Where a chunked body in `data` ends: `None` while incomplete.
fn chunked_end(data: &[u8]) -> Option<Result<usize, ()>> {
    let mut at = 0;
    loop {
        let line = find(&data[at..], b"\r\n")?;
        let size_text = std::str::from_utf8(&data[at..at + line]).ok();
        let size = size_text
            .and_then(|text| usize::from_str_radix(text.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return Some(Err(()));
        };
        at += line + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let line = find(&data[at..], b"\r\n")?;
                at += line + 2;
                if line == 0 {
                    return Some(Ok(at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Some(Err(()));
        }
        at += size + 2;
    }
}
