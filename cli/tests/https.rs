//! HTTPS end to end: the proxy's TLS port in process (HTTP/2, `X-Forwarded-Proto`, TLS alerts,
//! a dribbling handshake, WebSocket over TLS), then the real `stack` binary: every kind of host
//! over HTTPS with a client that trusts only the local CA, `Secure` cookies with `auto`, one
//! login shared by the Rust writer, the Rust reader and the Node reader, the 2017 demo flow in
//! headless Chromium trusting the CA through its NSS database, `stack trust` into a temporary
//! NSS database and system store and out again, and the bad-input errors. The CA
//! always lives in a temp `STACK_HOME`; no real trust store is touched.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use stack::proxy::{ProxyConfig, Routing, RoutingTable, TlsListener};
use stack::tls::{self, Ca};

mod support;
use support::proxy::{echo_upstream, one_deployment, test_config};
use support::{browser, require, workspace, Project, Up};

/// The proxy on two loopback ports (plain and TLS) with a CA in a temp dir, on its threads.
struct TlsProxy {
    plain: SocketAddr,
    tls: SocketAddr,
    ca: Arc<Ca>,
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    _home: tempfile::TempDir,
}

impl TlsProxy {
    fn start(table: RoutingTable, config: ProxyConfig) -> TlsProxy {
        let home = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::load_or_create(home.path()).unwrap());
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tls_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (plain_addr, tls_addr) = (
            plain.local_addr().unwrap(),
            tls_listener.local_addr().unwrap(),
        );
        let tls = TlsListener {
            listener: tls_listener,
            config: tls::server_config(Arc::clone(&ca)).unwrap(),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let routing = Routing::new(table);
        let thread = std::thread::spawn(move || {
            stack::proxy::run_on_threads(plain, Some(tls), routing, config, 2, stop)
        });
        TlsProxy {
            plain: plain_addr,
            tls: tls_addr,
            ca,
            shutdown,
            thread: Some(thread),
            _home: home,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client that trusts only `ca_pem` and sends `hosts` to `addr`.
fn tls_client(ca_pem: &str, hosts: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    builder
}

fn header<'a>(echoed: &'a Value, name: &str) -> Vec<&'a str> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_over_tls_forward_as_https_whatever_the_client_claims() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abcdefghij", &[echo.addr]);
    let proxy = TlsProxy::start(table, test_config());
    let url = format!("https://app.localhost:{}/x?y=1", proxy.tls.port());

    let h2 = tls_client(proxy.ca.cert_pem(), &["app.localhost"], proxy.tls)
        .build()
        .unwrap();
    let response = h2
        .get(&url)
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["x-stack-deployment"], "app-abcdefghij");
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["uri"], "/x?y=1");
    assert_eq!(header(&echoed, "x-forwarded-proto"), ["https"]);
    let host = format!("app.localhost:{}", proxy.tls.port());
    assert_eq!(header(&echoed, "x-forwarded-host"), [host.as_str()]);
    assert_eq!(header(&echoed, "host").len(), 1, "{echoed}");

    // Many streams at once on one connection.
    let requests = (0..50).map(|n| {
        let h2 = h2.clone();
        let url = format!("https://app.localhost:{}/n/{n}", proxy.tls.port());
        async move { h2.get(&url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");

    let h1 = tls_client(proxy.ca.cert_pem(), &["app.localhost"], proxy.tls)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(header(&echoed, "x-forwarded-proto"), ["https"]);

    // The plain port says `http`, whatever the client sent.
    let plain = reqwest::Client::builder()
        .resolve("app.localhost", proxy.plain)
        .build()
        .unwrap();
    let echoed: Value = plain
        .get(format!("http://app.localhost:{}/", proxy.plain.port()))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&echoed, "x-forwarded-proto"), ["http"]);
}

/// `openssl s_client` against `addr` with `servername` (`None`: no SNI); its output.
fn s_client(addr: SocketAddr, servername: Option<&str>, ca_file: &Path) -> (bool, String) {
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca_file);
    match servername {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sni_or_a_name_outside_localhost_gets_an_alert_and_a_local_name_verifies() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abcdefghij", &[echo.addr]);
    let proxy = TlsProxy::start(table, test_config());
    let ca_file = proxy.ca.cert_path();
    let tls = proxy.tls;
    let (ok, text) = tokio::task::spawn_blocking(move || {
        s_client(tls, Some("writer-abcdefghij.localhost"), &ca_file)
    })
    .await
    .unwrap();
    assert!(ok && text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(
        text.contains("CN=writer-abcdefghij.localhost")
            || text.contains("CN = writer-abcdefghij.localhost"),
        "{text}"
    );
    for servername in [Some("example.com"), None] {
        let ca_file = proxy.ca.cert_path();
        let (ok, text) = tokio::task::spawn_blocking(move || s_client(tls, servername, &ca_file))
            .await
            .unwrap();
        // rustls refuses with an `access_denied` alert (49) and sends no certificate at all;
        // s_client's exit status says nothing more.
        let _ = ok;
        assert!(
            text.contains("tlsv1 alert access denied")
                && text.contains("no peer certificate available"),
            "{servername:?}: {text}"
        );
        assert!(
            !text.contains("BEGIN CERTIFICATE"),
            "{servername:?}: {text}"
        );
    }
}

/// An upstream that answers before it reads a large body and closes with the body unread, as
/// hyper and axum do for an unknown path (its kernel then resets the connection): its own
/// answer reaches curl, every time, over plain HTTP/1.1, HTTP/2 and HTTP/1.1 over TLS, and
/// curl's upload ends cleanly (before, a mix of 502 `closed the connection while the request
/// was being sent` and, over HTTP/2, curl's "Stream error in the HTTP/2 framing layer").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_was_read_reaches_the_client_over_http1_and_http2() {
    require("curl");
    let early = support::proxy::upstream(|_request| async {
        http::Response::builder()
            .status(404)
            .body(support::proxy::full("not here"))
            .unwrap()
    })
    .await;
    let (table, _) = one_deployment("early.localhost", "early-abcdefghij", &[early.addr]);
    let proxy = TlsProxy::start(table, test_config());
    let files = tempfile::tempdir().unwrap();
    let large = files.path().join("5MB.bin");
    std::fs::write(&large, vec![0u8; 5_000_000]).unwrap();
    let small = files.path().join("200KB.bin");
    std::fs::write(&small, vec![0u8; 200_000]).unwrap();
    let plain = format!("http://early.localhost:{}/x", proxy.plain.port());
    let secure = format!("https://early.localhost:{}/x", proxy.tls.port());
    let ca_file = proxy.ca.cert_path();
    let resolve = format!("early.localhost:{}:127.0.0.1", proxy.tls.port());
    let runs = [
        ("HTTP/1.1", plain.clone(), large.clone(), "--http1.1"),
        ("HTTP/2", secure.clone(), small.clone(), "--http2"),
        ("HTTP/2", secure.clone(), large.clone(), "--http2"),
        (
            "HTTP/1.1 over TLS",
            secure.clone(),
            large.clone(),
            "--http1.1",
        ),
    ];
    for (what, url, body, version) in runs {
        for attempt in 0..10 {
            let (ca_file, resolve, url, body) =
                (ca_file.clone(), resolve.clone(), url.clone(), body.clone());
            let port = proxy.plain.port();
            let output = tokio::task::spawn_blocking(move || {
                Command::new("curl")
                    .args(["-sS", "--max-time", "20", "-w", " %{http_code}", version])
                    .arg("--cacert")
                    .arg(&ca_file)
                    .args(["--resolve", &resolve])
                    .args(["--resolve", &format!("early.localhost:{port}:127.0.0.1")])
                    .args(["-X", "POST", "--data-binary"])
                    .arg(format!("@{}", body.display()))
                    .arg(&url)
                    .output()
                    .expect("curl runs")
            })
            .await
            .unwrap();
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                output.status.success() && said == "not here 404",
                "{what}, attempt {attempt}: {said}"
            );
        }
    }
}

/// A header block past the head size limit (64 KiB) gets 431 over HTTP/2 as over HTTP/1.1:
/// not a stream reset (REFUSED_STREAM), which a client takes for "not processed, send it
/// again". (curl cannot show it: its nghttp2 refuses to send a header block over 64 KiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_get_431_over_http2_too() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abcdefghij", &[echo.addr]);
    let proxy = TlsProxy::start(table, test_config());
    let url = format!("https://app.localhost:{}/", proxy.tls.port());
    let h2 = tls_client(proxy.ca.cert_pem(), &["app.localhost"], proxy.tls)
        .build()
        .unwrap();
    let h1 = tls_client(proxy.ca.cert_pem(), &["app.localhost"], proxy.tls)
        .http1_only()
        .build()
        .unwrap();
    for (client, version, size, expected) in [
        (&h2, reqwest::Version::HTTP_2, 40_000, 200),
        (&h2, reqwest::Version::HTTP_2, 100_000, 431),
        (&h1, reqwest::Version::HTTP_11, 100_000, 431),
    ] {
        let response = client
            .get(&url)
            .header("x-big", "a".repeat(size))
            .send()
            .await
            .unwrap_or_else(|error| panic!("{version:?} with {size} bytes: {error:?}"));
        assert_eq!(response.version(), version);
        let status = response.status().as_u16();
        assert_eq!(status, expected, "{version:?} with {size} bytes");
        if version == reqwest::Version::HTTP_2 && status == 431 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "request_header_fields_too_large", "{body}");
        }
    }
}

/// Each port says what it is to a client of the other: a TLS handshake on the plain port gets a
/// plain-text 400 naming the HTTPS port (not hyper's empty 400), plain HTTP on the TLS port a
/// 400 saying to use `https://` (not a bare TLS alert); both then close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_answers_the_other_protocol_with_a_plain_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abcdefghij", &[echo.addr]);
    let proxy = TlsProxy::start(table, test_config());
    let exchange = |addr: SocketAddr, sent: Vec<u8>| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
            .await
            .expect("the proxy closes the connection")
            .unwrap();
        String::from_utf8_lossy(&received).into_owned()
    };
    // The start of a ClientHello: a handshake record, TLS 1.0 framing, as every client sends.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ];
    hello.extend_from_slice(&[0u8; 60]);
    let answer = exchange(proxy.plain, hello).await;
    let port = proxy.tls.port();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(&format!(
            "This port serves plain HTTP; for HTTPS use port {port} (https://<host>.localhost:{port}/).\n"
        )),
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");

    let request = b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n".to_vec();
    let answer = exchange(proxy.tls, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("This port serves HTTPS only: use https:// in the URL.\n"),
        "{answer}"
    );

    // TLS still works on the TLS port.
    let h2 = tls_client(proxy.ca.cert_pem(), &["app.localhost"], proxy.tls)
        .build()
        .unwrap();
    let url = format!("https://app.localhost:{port}/");
    assert_eq!(h2.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_dribbles_is_cut_off_at_the_header_timeout() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abcdefghij", &[echo.addr]);
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(400),
        ..test_config()
    };
    let proxy = TlsProxy::start(table, config);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    // The first bytes of a ClientHello, then nothing.
    stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("the proxy closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
}

/// A WebSocket echo server for one connection, and a proxy in front of it as `ws.localhost`.
async fn websocket_behind_the_proxy() -> (TlsProxy, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            socket.send(message).await.unwrap();
        }
    });
    let (table, _) = one_deployment("ws.localhost", "ws-abcdefghij", &[ws_addr]);
    (TlsProxy::start(table, test_config()), server)
}

/// A TLS connection to the proxy as `ws.localhost`, trusting only its CA, offering `alpn`.
async fn tls_to(
    proxy: &TlsProxy,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(proxy.ca.cert_der().clone()).unwrap();
    let mut client_config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(proxy.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("ws.localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("TLS with the local CA")
}

/// 100 messages there and back, then a clean close.
async fn echo_100<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    server: tokio::task::JoinHandle<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for n in 0..100 {
        let text = format!("message {n}");
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_over_tls() {
    let (proxy, server) = websocket_behind_the_proxy().await;
    let stream = tls_to(&proxy, b"http/1.1").await;
    let request = http::Request::get(format!("wss://ws.localhost:{}/socket", proxy.tls.port()))
        .header("host", "ws.localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("handshake through the proxy over TLS");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    echo_100(socket, server).await;
}

/// RFC 8441: the client opens a WebSocket as an HTTP/2 stream (`CONNECT` with `:protocol
/// websocket`, hyper's client), the proxy forwards it as an HTTP/1.1 `Upgrade: websocket` and
/// answers `200`; WebSocket frames then flow in the stream's DATA frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_over_http2_extended_connect() {
    let (proxy, server) = websocket_behind_the_proxy().await;
    let stream = tls_to(&proxy, b"h2").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request =
        http::Request::connect(format!("https://ws.localhost:{}/socket", proxy.tls.port()))
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = sender
        .send_request(request)
        .await
        .expect("the proxy takes extended CONNECT");
    assert_eq!(response.status(), http::StatusCode::OK, "{response:?}");
    assert!(response.headers().get("x-stack-deployment").is_some());
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(response).await.unwrap();
    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    echo_100(socket, server).await;
}

// The real binary from here on.

const DEADLINE: Duration = Duration::from_secs(60);

/// The Node reader of `templates/node` as `services/node-reader`, with the template's installed
/// `node_modules` linked in (so nothing is downloaded).
fn add_node_reader(project: &Project) {
    let template = workspace().join("templates/node");
    let modules = template.join("node_modules");
    assert!(
        modules.is_dir(),
        "run `(cd templates/node && npm ci)` first (as .ci/run does)"
    );
    let dir = project.path().join("services/node-reader");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["index.js", "session.js", "package.json"] {
        std::fs::copy(template.join("services/reader").join(file), dir.join(file)).unwrap();
    }
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
}

fn cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .find(|value| value.starts_with("connect.sid="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_host_over_https_with_http2_and_one_secure_login_for_rust_and_node() {
    for tool in ["redis-server", "node", "npm"] {
        require(tool);
    }
    let project = Project::demo("canary-https-secret-5d1e");
    add_node_reader(&project);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let writer = workspace().join("services/writer").display().to_string();
    let reader = workspace().join("services/reader").display().to_string();
    let node = project
        .path()
        .join("services/node-reader")
        .display()
        .to_string();
    let mut up = Up::start(
        &project,
        &[&writer, &reader, &node, "--dotenv", "--no-watch"],
    );
    let port = up.https_port();
    let ready = up.wait_for("> Ready! http://writer-", DEADLINE);
    assert!(
        ready.contains(&format!(".localhost:{port}")) && ready.contains(" https://writer-"),
        "{ready}"
    );
    up.wait_ready("reader");
    up.wait_ready("node-reader");
    assert!(
        up.output().contains("run `stack trust` once"),
        "{}",
        up.output()
    );
    let writer_id = project.live("writer")["id"].as_str().unwrap().to_string();
    let writer_host = format!("{writer_id}.localhost");

    let ca = std::fs::read_to_string(project.stack_home.path().join(tls::CA_CERT_FILE)).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let hosts = [
        "counter-demo.localhost",
        writer_host.as_str(),
        "reader.localhost",
        "node-reader.localhost",
        "stack.localhost",
    ];
    let browser = tls_client(&ca, &hosts, addr)
        .cookie_store(true)
        .build()
        .unwrap();
    let https = |host: &str, path: &str| format!("https://{host}:{port}{path}");

    // The alias: the 2017 flow, every answer over HTTP/2, the cookie `Secure`.
    let home = browser
        .get(https("counter-demo.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(home.version(), reqwest::Version::HTTP_2);
    assert_eq!(home.status(), 403);
    let login = browser
        .get(https("counter-demo.localhost", "/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = cookie_of(&login).expect("login sets the session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    let increment = browser
        .get(https("counter-demo.localhost", "/increment"))
        .send()
        .await
        .unwrap();
    assert_eq!(increment.status(), 200);
    let home: Value = browser
        .get(https("counter-demo.localhost", "/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(home["count"], 1, "{home}");

    // A deployment's host and a service's host validate too; the Node reader and the Rust
    // reader read the login made over HTTPS on the Rust writer.
    let session = cookie.split(';').next().unwrap().to_string();
    for host in [
        writer_host.as_str(),
        "reader.localhost",
        "node-reader.localhost",
    ] {
        let response = browser
            .get(https(host, "/"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{host}: {error:?}"));
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{host}");
        if host == writer_host {
            continue;
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status.as_u16(), &body["count"]),
            (200, &Value::from(1)),
            "{host}: {body}"
        );
    }

    // The dashboard answers over HTTP/2 too (its host in `:authority`, no `Host` header).
    let dashboard = browser
        .get(https("stack.localhost", "/api/env"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.version(), reqwest::Version::HTTP_2);
    assert_eq!(dashboard.status(), 200);
    let env: Value = dashboard.json().await.unwrap();
    assert!(env["services"].as_array().unwrap().len() == 3, "{env}");
    assert!(!env.to_string().contains("canary-https-secret"), "{env}");

    // Over plain HTTP, `auto` leaves `Secure` off, even when the client claims HTTPS.
    let plain = up.client("counter-demo.localhost");
    let login = plain
        .get(up.url("counter-demo.localhost", "/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = cookie_of(&login).expect("login sets the session cookie");
    assert!(!cookie.contains("Secure"), "{cookie}");

    // `stack ls` and `stack alias ls` show the https URL beside the http one.
    let ls = project.stack_ok(&["ls"]);
    assert!(
        ls.contains(&format!("https://{writer_host}:{port}")),
        "{ls}"
    );
    let aliases = project.stack_ok(&["alias", "ls"]);
    assert!(
        aliases.contains(&format!(
            "http://counter-demo.localhost:{} https://counter-demo.localhost:{port}",
            up.port
        )),
        "{aliases}"
    );
}

/// The 2017 demo flow in headless Chromium over `https://counter-demo.localhost:PORT`
/// (tests/browser/https_demo.mjs through playwright-core), certificate errors not ignored: the
/// browser whose NSS database got the CA from `stack trust` logs in (a `Secure` cookie),
/// increments twice, reads 2 on the reader and logs out, every page over HTTP/2; a browser
/// with an empty database refuses the certificate.
#[test]
fn headless_chromium_runs_the_demo_over_https_once_stack_trust_put_the_ca_in_its_nss_database() {
    require("certutil");
    browser::browser_dir();
    let project = Project::demo("canary-chromium-secret-7a2f");
    let mut up = browser::demo_up(&project);
    let port = up.https_port();

    let trusting = tempfile::tempdir().unwrap();
    let stranger = tempfile::tempdir().unwrap();
    let mut trust = project.command(&["trust"]);
    trust
        .env("STACK_TRUST_NSS_DBS", trusting.path().join(".pki/nssdb"))
        .env("STACK_TRUST_SYSTEM_DIR", "")
        .env("STACK_TRUST_UPDATE_COMMAND", "");
    let trusted = project.run(&mut trust);
    assert_eq!(trusted.code, 0, "{}", trusted.all());

    let port = port.to_string();
    browser::run_script(
        "https_demo.mjs",
        &[
            port.as_ref(),
            trusting.path().as_os_str(),
            stranger.path().as_os_str(),
        ],
    );
    assert!(
        !up.output().contains("canary-chromium-secret-7a2f"),
        "the secret shows in stack up's output"
    );
}

#[test]
fn trust_installs_into_a_temporary_nss_database_and_store_then_uninstall_leaves_nothing() {
    require("certutil");
    let project = Project::empty();
    let stores = tempfile::tempdir().unwrap();
    let nss = stores.path().join("nssdb");
    let system = stores.path().join("ca-certificates");
    let project = project
        .with_env("STACK_TRUST_NSS_DBS", nss.to_str().unwrap())
        .with_env("STACK_TRUST_SYSTEM_DIR", system.to_str().unwrap());
    let printed = project.stack_ok(&["trust", "--print"]);
    let ca_path = project.stack_home.path().join(tls::CA_CERT_FILE);
    assert_eq!(printed.trim(), ca_path.display().to_string());

    let run = project.stack(&["trust"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout
            .contains(&format!("the NSS database `{}`", nss.display())),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("> Success!"), "{}", run.all());
    let listed = Command::new("certutil")
        .args(["-L", "-n", "stack local CA", "-d"])
        .arg(format!("sql:{}", nss.display()))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let installed = system.join("stack-local-ca.crt");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&ca_path).unwrap()
    );
    assert!(project
        .stack_home
        .path()
        .join(tls::trust::TRUSTED_FILE)
        .is_file());

    let run = project.stack(&["trust", "--uninstall"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let listed = Command::new("certutil")
        .args(["-L", "-d"])
        .arg(format!("sql:{}", nss.display()))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(!listed.contains("stack local CA"), "{listed}");
    assert!(!installed.exists());
    assert!(!project
        .stack_home
        .path()
        .join(tls::trust::TRUSTED_FILE)
        .exists());
}

#[test]
fn a_busy_https_port_one_port_for_both_or_a_key_others_can_read_fails_before_anything_starts() {
    let project = Project::empty();
    // Something to run (a project with nothing fails before the ports are looked at).
    project.write(
        "stack.toml",
        "[services.api]\npath = \".\"\nrun = \"sleep 30\"\n",
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let run = project.stack(&["up", "--port", "0", "--https-port", &busy_port]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("cannot listen on 127.0.0.1:{busy_port} for HTTPS"))
            && run.stderr.contains("`--https-port`"),
        "{}",
        run.all()
    );

    // One port for both is an argument error, said before anything starts.
    let port = support::free_port().to_string();
    let run = project.stack(&["up", "--port", &port, "--https-port", &port]);
    run.assert_refused(&[&format!(
        "`--port` and `--https-port` (or `STACK_HTTPS_PORT`) are both {port}: the plain and the HTTPS port must differ"
    )]);
    assert!(!run.all().contains("cannot listen"), "{}", run.all());

    let key = project.stack_home.path().join(tls::CA_KEY_FILE);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = project.stack(&["up", "--port", "0"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("`{}` can be read by other users", key.display()))
            && run.stderr.contains(&format!("chmod 600 {}", key.display())),
        "{}",
        run.all()
    );
    assert!(!project
        .path()
        .join(".stack/pids")
        .read_dir()
        .is_ok_and(|mut dir| dir.next().is_some()));
}

/// A `ca.pem` stack did not make, without the name constraints (here `openssl req`'s own):
/// `stack up` starts nothing and says how to make a new one; `stack doctor` reports it.
#[test]
fn a_ca_without_name_constraints_stops_up_and_doctor_names_it() {
    let project = Project::empty();
    project.write(
        "stack.toml",
        "[services.api]\npath = \".\"\nrun = \"sleep 30\"\n",
    );
    let home = project.stack_home.path();
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "365", "-subj", "/CN=my own CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(home.join(tls::CA_KEY_FILE))
        .arg("-out")
        .arg(home.join(tls::CA_CERT_FILE))
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(output.status.success(), "{output:?}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.join(tls::CA_KEY_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let said = format!(
        "the local CA `{}` has no name constraints",
        home.join(tls::CA_CERT_FILE).display()
    );
    let run = project.stack(&["up", "--port", "0", "--https-port", "0"]);
    run.assert_refused(&[&said, "`stack trust --uninstall`"]);
    assert!(!project
        .path()
        .join(".stack/pids")
        .read_dir()
        .is_ok_and(|mut dir| dir.next().is_some()));
    let doctor = project.stack(&["doctor", "--port", "0", "--https-port", "0"]);
    assert_eq!(doctor.code, 1, "{}", doctor.all());
    assert!(doctor.all().contains(&said), "{}", doctor.all());
}
