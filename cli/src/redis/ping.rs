//! Is the Redis a user brought (`REDIS_SESSION_URL`) there? One `PING` (after `AUTH` when the URL
//! has a password) over TCP or a Unix socket, bounded in time. `rediss://` is not probed (no TLS
//! client here); the services report it themselves. Never prints the password: callers show the
//! URL through [`RedisUrl`]'s `Display`, which masks it.

use std::time::Duration;

use session::redis_url::{RedisAddr, RedisUrl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingOutcome {
    /// `+PONG`.
    Answers,
    /// TLS: not probed.
    NotProbed,
    /// Why not, in a few words (never containing the password).
    Fails(String),
}

/// One round trip to the server, within `timeout`.
pub async fn ping(url: &RedisUrl, timeout: Duration) -> PingOutcome {
    let attempt = async {
        match &url.addr {
            RedisAddr::Tcp { tls: true, .. } => Ok(PingOutcome::NotProbed),
            RedisAddr::Tcp { host, port, .. } => {
                let stream = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|error| error.to_string())?;
                exchange(stream, url).await
            }
            RedisAddr::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|error| error.to_string())?;
                exchange(stream, url).await
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => PingOutcome::Fails(reason),
        Err(_) => PingOutcome::Fails(format!("no answer within {}s", timeout.as_secs())),
    }
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    url: &RedisUrl,
) -> Result<PingOutcome, String> {
    let mut request = Vec::new();
    if let Some(password) = url.password() {
        let mut parts: Vec<&str> = vec!["AUTH"];
        if let Some(user) = &url.username {
            parts.push(user);
        }
        parts.push(password);
        request.extend(resp_command(&parts));
    }
    request.extend(resp_command(&["PING"]));
    stream
        .write_all(&request)
        .await
        .map_err(|error| error.to_string())?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| error.to_string())?;
        if read == 0 {
            return Err("the connection closed".into());
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if text.contains("+PONG") {
            return Ok(PingOutcome::Answers);
        }
        if let Some(error) = text.lines().find(|line| line.starts_with('-')) {
            // Redis error lines name the problem (`-WRONGPASS ...`), never the password.
            return Err(error.trim_start_matches('-').to_string());
        }
    }
}

/// A RESP array of bulk strings.
fn resp_command(parts: &[&str]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        bytes.extend(format!("${}\r\n", part.len()).into_bytes());
        bytes.extend(part.as_bytes());
        bytes.extend(b"\r\n");
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pings_with_and_without_the_right_password() {
        let server = session::testing::RedisServer::start_with_password("pw-for-ping");
        let good =
            RedisUrl::parse(&format!("redis://:pw-for-ping@127.0.0.1:{}", server.port())).unwrap();
        assert_eq!(
            ping(&good, Duration::from_secs(2)).await,
            PingOutcome::Answers
        );
        let wrong = RedisUrl::parse(&format!("redis://:nope@127.0.0.1:{}", server.port())).unwrap();
        match ping(&wrong, Duration::from_secs(2)).await {
            PingOutcome::Fails(reason) => assert!(!reason.contains("nope"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let closed = RedisUrl::parse("redis://127.0.0.1:1").unwrap();
        assert!(matches!(
            ping(&closed, Duration::from_secs(2)).await,
            PingOutcome::Fails(_)
        ));
    }
}
