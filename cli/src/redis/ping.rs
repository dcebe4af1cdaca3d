//! Is the Redis a user brought (`REDIS_SESSION_URL`) there? One `PING` (after `AUTH` when the URL
//! has a password) over TCP or a Unix socket, bounded in time; for Sentinel, to the master the
//! sentinels name; for a cluster, to every master. `rediss://` goes through the redis
//! crate's rustls client, the one the services use, trusting the CA the URL carries
//! ([`RedisUrl::with_tls_ca`], from `REDIS_TLS_CA_FILE`) or the webpki roots, so a certificate
//! the services would refuse fails here too. Never prints the password: callers show the URL
//! through [`RedisUrl`]'s `Display`, which masks it, and driver messages are redacted.

use std::time::Duration;

use session::redis_url::{RedisAddr, RedisUrl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::inspect::redact;
use super::topology;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingOutcome {
    /// `+PONG`.
    Answers,
    /// Why not, in a few words (never containing the password).
    Fails(String),
}

/// One round trip to the server, within `timeout`.
pub async fn ping(url: &RedisUrl, timeout: Duration) -> PingOutcome {
    let attempt = async {
        match &url.addr {
            RedisAddr::Sentinel { .. } | RedisAddr::Cluster { .. } => {
                every_server(url, timeout).await
            }
            RedisAddr::Tcp { tls: true, .. } => tls_exchange(url).await,
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

/// `AUTH` (from the URL) and `PING` over TLS, through the redis crate.
async fn tls_exchange(url: &RedisUrl) -> Result<PingOutcome, String> {
    let failed = |error: redis::RedisError| redact(url, &error.to_string());
    let mut connection = url
        .client()
        .map_err(failed)?
        .get_multiplexed_async_connection()
        .await
        .map_err(failed)?;
    redis::cmd("PING")
        .query_async::<()>(&mut connection)
        .await
        .map_err(failed)?;
    Ok(PingOutcome::Answers)
}

/// The master the sentinels name, or every master of a cluster, answers `PING`.
async fn every_server(url: &RedisUrl, timeout: Duration) -> Result<PingOutcome, String> {
    let failed = |error: redis::RedisError| redact(url, &error.to_string());
    let mut topology = topology::connect(url, timeout, timeout)
        .await
        .map_err(failed)?;
    topology
        .ping_every_server()
        .await
        .map_err(|(server, error)| format!("{server}: {}", failed(error)))?;
    Ok(PingOutcome::Answers)
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

    #[tokio::test]
    async fn pings_over_tls_trusting_only_the_given_ca() {
        let canary = "tls-ping-canary-3b1f";
        let server = session::testing::RedisServer::start_tls_with_password(canary);
        let ca = session::redis_url::load_tls_ca_file(&server.ca_file()).unwrap();
        let url = RedisUrl::parse(&server.url()).unwrap();
        assert_eq!(
            ping(&url.clone().with_tls_ca(ca.clone()), Duration::from_secs(5)).await,
            PingOutcome::Answers
        );
        // Without the CA the certificate is not trusted (as the services would find).
        match ping(&url, Duration::from_secs(5)).await {
            PingOutcome::Fails(reason) => {
                assert!(reason.contains("certificate"), "{reason}");
                assert!(!reason.contains(canary), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A wrong password: refused, and the password never shows.
        let wrong = RedisUrl::parse(&server.url().replace(canary, "wrong-pw-canary"))
            .unwrap()
            .with_tls_ca(ca);
        match ping(&wrong, Duration::from_secs(5)).await {
            PingOutcome::Fails(reason) => assert!(!reason.contains("wrong-pw-canary"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
