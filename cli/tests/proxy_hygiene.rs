//! What the proxy answers to broken framing and to headers that must not pass, through the
//! real binary and a real upstream that writes raw bytes (`tests/fixtures/raw`): each answer
//! names what was wrong, and blames the side that was.

use std::net::SocketAddr;
use std::time::Duration;

mod support;
use support::proxy::raw_exchange;
use support::{require, Project, Up};

async fn exchange(up: &Up, raw: String) -> String {
    let proxy = SocketAddr::from(([127, 0, 0, 1], up.port));
    tokio::time::timeout(Duration::from_secs(10), raw_exchange(proxy, raw.as_bytes()))
        .await
        .expect("the proxy answers")
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: raw.localhost\r\n{extra}Connection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_is_blamed_on_the_side_that_sent_it() {
    require("redis-server");
    let project = Project::fixture("raw");
    let mut up = Up::start(
        &project,
        &["--no-watch", "-e", "SESSION_SECRET=canary-secret"],
    );
    up.wait_ready("raw");

    // The upstream's fault: 502 JSON naming the framing error.
    let both = exchange(&up, get("/both", "")).await;
    assert!(both.starts_with("HTTP/1.1 502"), "{both}");
    assert!(
        both.contains("`raw")
            && both.contains(
                "sent an invalid response: it has both `Transfer-Encoding` and `Content-Length`"
            ),
        "{both}"
    );

    // The client's fault: a chunked body that does not parse is a 400, not a 502.
    for body in [
        format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(100 * 1024)),
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_string(),
    ] {
        let raw = format!(
            "POST /body HTTP/1.1\r\nHost: raw.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        );
        let answer = exchange(&up, raw).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}",
            &answer[..answer.len().min(300)]
        );
        assert!(!answer.contains("bad_gateway"), "{answer}");
    }

    // A refused path says why.
    for (path, why) in [
        ("/a%2Fb", "an encoded `/` (`%2F`) is not allowed"),
        ("/a%00", "an encoded NUL (`%00`) is not allowed"),
        ("/a%zz", "`%` must be followed by two hex digits"),
    ] {
        let answer = exchange(&up, get(path, "")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains(why), "{path}: {answer}");
    }

    // HTTP/1.0 without `Host`: a 400 that names what is missing, not every host there is.
    let old = exchange(&up, "GET / HTTP/1.0\r\n\r\n".to_string()).await;
    assert!(old.starts_with("HTTP/1.0 400"), "{old}");
    assert!(
        old.contains("must carry a `Host` header") && !old.contains("raw.localhost"),
        "{old}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_for_a_proxy_and_forged_stack_headers_never_reach_an_upstream() {
    require("redis-server");
    let project = Project::fixture("raw");
    let mut up = Up::start(
        &project,
        &["--no-watch", "-e", "SESSION_SECRET=canary-secret"],
    );
    up.wait_ready("raw");
    let answer = exchange(
        &up,
        get(
            "/headers",
            "Proxy-Authorization: Basic Y2FuYXJ5OnB3\r\nX-Stack-Deployment: forged\r\nx-stack-anything: forged\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer kept\r\n",
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, seen) = answer.split_once("\r\n\r\n").unwrap();
    let lower = seen.to_ascii_lowercase();
    for gone in [
        "proxy-authorization",
        "x-stack-",
        "forwarded: ",
        "forged",
        "y2fuyxj5onb3",
    ] {
        assert!(
            !lower.contains(gone),
            "`{gone}` reached the upstream:\n{seen}"
        );
    }
    assert!(lower.contains("authorization: bearer kept"), "{seen}");
    assert!(
        lower.contains("x-forwarded-for: 6.6.6.6, 127.0.0.1"),
        "{seen}"
    );
}

/// `curl --http2-prior-knowledge` on the plain port: HTTP/2 is served over TLS only, so the
/// preface is answered with a GOAWAY (`HTTP_1_1_REQUIRED`) whose text names the HTTPS port,
/// not a silent close; HTTP/1.1 on the same port goes on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_the_plain_port_is_told_to_use_https() {
    require("redis-server");
    require("curl");
    let project = Project::fixture("raw");
    let mut up = Up::start(
        &project,
        &["--no-watch", "-e", "SESSION_SECRET=canary-secret"],
    );
    up.wait_ready("raw");
    let https_port = up.https_port();
    let url = format!("http://raw.localhost:{}/", up.port);
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "-v", "--max-time", "10", "--connect-to"])
            .arg(format!("raw.localhost:{}:127.0.0.1:{}", up.port, up.port))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let refused = curl(&["--http2-prior-knowledge"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("GOAWAY") && said.contains("error=13"),
        "{said}"
    );
    // The GOAWAY's debug text (curl does not print it) names the HTTPS port.
    let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_string();
    let answer = exchange(&up, preface).await;
    assert!(
        answer.contains(&format!("for HTTP/2 use HTTPS on port {https_port}")),
        "{answer:?}"
    );
    let plain = curl(&["--http1.1"]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
}
