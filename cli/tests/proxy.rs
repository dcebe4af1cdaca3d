//! The proxy end to end: real sockets, small upstream servers, the proxy on a free port.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use stack::proxy::{HostRoute, ProxyConfig, RoutingTable, Target};
use support::proxy::*;
use support::wait_until_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn hop_by_hop_headers_are_removed_before_forwarding_headers_are_set() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    let raw = "GET /echo?x=1 HTTP/1.1\r\nHost: App.Localhost:3000\r\n\
               Connection: close, X-Forwarded-For, x-secret\r\n\
               X-Forwarded-For: 6.6.6.6\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\n\
               Proxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: x-sum\r\nUpgrade: h2c\r\n\
               X-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
    let answer = raw_exchange(proxy.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let echoed: serde_json::Value = serde_json::from_str(body).unwrap();
    let seen: Vec<(String, String)> = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap().into(),
                pair[1].as_str().unwrap().into(),
            )
        })
        .collect();
    let value = |name: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            value(gone).is_empty(),
            "`{gone}` reached the upstream: {seen:?}"
        );
    }
    assert_eq!(value("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(value("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(value("x-forwarded-proto"), ["http"]);
    assert_eq!(value("x-forwarded-host"), ["App.Localhost:3000"]);
    assert_eq!(value("host"), [echo.addr.to_string().as_str()]);
    assert_eq!(value("accept"), ["*/*"]);
    assert_eq!(echoed["uri"], "/echo?x=1");
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_removed() {
    let upstream = upstream(|_request: Request<Incoming>| async move {
        Response::builder()
            .header("connection", "x-upstream-secret")
            .header("x-upstream-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("upgrade", "h2c")
            .header("x-kept", "yes")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    let answer = get(proxy.addr, "app.localhost", "/").await;
    assert_eq!(answer.status, 200);
    for gone in [
        "x-upstream-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(answer.header(gone).is_none(), "`{gone}` reached the client");
    }
    assert_eq!(answer.header("x-kept"), Some("yes"));
    assert_eq!(answer.header("x-stack-deployment"), Some("app-abc"));
    assert_eq!(answer.header("x-stack-instance"), Some("1"));
}

#[tokio::test]
async fn forwarded_for_is_appended_to_the_clients_value() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    let request = Request::get("/")
        .header("host", "app.localhost")
        .header("x-forwarded-for", "10.0.0.1")
        .body(full(""))
        .unwrap();
    let answer = send(proxy.addr, request).await;
    assert_eq!(answer.echoed("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
}

#[tokio::test]
async fn every_set_cookie_and_repeated_header_comes_back_and_redirects_are_not_followed() {
    let upstream = upstream(|request: Request<Incoming>| async move {
        if request.uri().path() == "/redirect" {
            return Response::builder()
                .status(302)
                .header("location", "/elsewhere")
                .body(full(""))
                .unwrap();
        }
        Response::builder()
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; HttpOnly")
            .header("set-cookie", "connect.sid=s%3Axyz; Path=/; HttpOnly")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    let answer = get(proxy.addr, "app.localhost", "/").await;
    let cookies: Vec<&str> = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap())
        .collect();
    assert_eq!(
        cookies,
        [
            "a=1; Path=/",
            "b=2; HttpOnly",
            "connect.sid=s%3Axyz; Path=/; HttpOnly"
        ]
    );
    let multi: Vec<&str> = answer
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["one", "two"]);

    let redirect = get(proxy.addr, "app.localhost", "/redirect").await;
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/elsewhere"));
}

#[tokio::test]
async fn unknown_host_gets_404_listing_the_hosts() {
    let echo = echo_upstream().await;
    let (mut table, deployment) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    table.insert(
        "app-abc.localhost",
        HostRoute::Target(Target::Deployment(deployment)),
    );
    let proxy = TestProxy::start(table, test_config()).await;
    let answer = get(proxy.addr, "nope.localhost:3000", "/").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body = answer.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(
        body["hosts"],
        serde_json::json!(["app-abc.localhost", "app.localhost"])
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("nope.localhost:3000"));
}

#[tokio::test]
async fn host_checks_connect_and_absolute_form() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    let missing = raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    assert!(missing.contains(r#""error":"bad_request""#), "{missing}");

    let twice = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: app.localhost\r\nHost: other.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");

    let connect = raw_exchange(
        proxy.addr,
        b"CONNECT app.localhost:443 HTTP/1.1\r\nHost: app.localhost:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect}");
    assert!(
        connect.contains(r#""error":"method_not_allowed""#),
        "{connect}"
    );

    let absolute = raw_exchange(
        proxy.addr,
        b"GET http://evil.example:9999/x/y?z=1 HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 200"), "{absolute}");
    assert!(absolute.contains(r#""uri":"/x/y?z=1""#), "{absolute}");
}

#[tokio::test]
async fn websocket_echo_of_1000_messages() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    let (table, deployment) = one_deployment("ws.localhost", "ws-abc", &[ws_addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    let request = http::Request::get(format!("ws://{}/socket", proxy.addr))
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
    let (mut socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["x-stack-deployment"], "ws-abc");
    for n in 0..1000 {
        let text = format!("message {n}");
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    // The tunnel counts as a request in flight until it closes.
    assert_eq!(deployment.instances[0].in_flight(), 1);
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    drop(socket);
    server.await.unwrap();
    let instance = Arc::clone(&deployment.instances[0]);
    wait_until_async(
        "the closed tunnel to leave the in-flight count",
        Duration::from_secs(2),
        || instance.in_flight() == 0,
    )
    .await;
}

#[tokio::test]
async fn all_instances_down_gives_502_without_waiting_for_a_timeout() {
    let (table, _) = one_deployment("app.localhost", "app-abc", &[closed_port(), closed_port()]);
    // Refused connections answer at once: the 502 must come well before any timeout the
    // proxy could have waited on (the speed itself is measured in bench/, not asserted here).
    let config = ProxyConfig {
        connect_timeout: Duration::from_secs(10),
        starting_wait: Duration::from_secs(10),
        response_timeout: Duration::from_secs(10),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;
    // Warm the client connection to the proxy so the timing covers the proxy only.
    let _ = get(proxy.addr, "warm.localhost", "/").await;
    let started = Instant::now();
    let answer = get(proxy.addr, "app.localhost", "/").await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
    assert!(elapsed < Duration::from_secs(3), "502 took {elapsed:?}");
}

#[tokio::test]
async fn slow_upstream_gives_504() {
    let upstream = upstream(|_request: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let config = ProxyConfig {
        response_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;
    let started = Instant::now();
    let answer = get(proxy.addr, "app.localhost", "/").await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"], "gateway_timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connect_refused_moves_to_the_next_instance_and_takes_the_dead_one_out() {
    let echo = echo_upstream().await;
    let (table, deployment) =
        one_deployment("app.localhost", "app-abc", &[closed_port(), echo.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    for _ in 0..4 {
        let answer = get(proxy.addr, "app.localhost", "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-stack-instance"), Some("2"));
    }
    assert!(deployment.instances[0].is_out_of_rotation());
    assert!(!deployment.instances[1].is_out_of_rotation());
    assert_eq!(deployment.instances[1].served(), 4);
    // The supervisor puts it back once it is ready; it is tried again (and fails over again).
    deployment.instances[0].put_back_in_rotation();
    let answer = get(proxy.addr, "app.localhost", "/").await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn round_robin_over_ready_instances() {
    let first = echo_upstream().await;
    let second = echo_upstream().await;
    let (table, deployment) =
        one_deployment("app.localhost", "app-abc", &[first.addr, second.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            get(proxy.addr, "app.localhost", "/")
                .await
                .header("x-stack-instance")
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["1", "2", "1", "2", "1", "2"]);
    assert_eq!(
        deployment.instances[0].in_flight() + deployment.instances[1].in_flight(),
        0
    );
}

/// An upstream that counts requests, reads the request head, then resets the connection.
async fn resetting_upstream(count: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                stream.set_zero_linger().unwrap();
                drop(stream);
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_whose_bytes_went_out_is_never_replayed() {
    let count = Arc::new(AtomicUsize::new(0));
    let first = resetting_upstream(Arc::clone(&count)).await;
    let second = resetting_upstream(Arc::clone(&count)).await;
    let (table, _) = one_deployment("counter.localhost", "writer-abc", &[first, second]);
    let proxy = TestProxy::start(table, test_config()).await;
    let answer = get(proxy.addr, "counter.localhost", "/increment").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the request reached an upstream more than once"
    );
}

/// An upstream that records every request path it receives.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&paths);
    let upstream = upstream(move |request: Request<Incoming>| {
        let paths = Arc::clone(&recorded);
        async move {
            paths.lock().unwrap().push(request.uri().path().to_owned());
            let _ = http_body_util::BodyExt::collect(request.into_body()).await;
            Response::new(full("ok"))
        }
    })
    .await;
    (upstream, paths)
}

#[tokio::test]
async fn conflicting_lengths_never_smuggle_a_second_request() {
    let (upstream, paths) = recording_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    let cl_te = raw_exchange(
        proxy.addr,
        b"POST /first HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.localhost\r\n\r\n",
    )
    .await;
    // hyper follows RFC 9112 6.3: the chunked framing wins, `Content-Length` is dropped and
    // the connection is closed after one response, so `/smuggled` is never read as a request.
    assert_eq!(cl_te.matches("HTTP/1.1 ").count(), 1, "{cl_te}");
    assert!(cl_te.contains("connection: close"), "{cl_te}");

    let two_lengths = raw_exchange(
        proxy.addr,
        b"POST /second HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\nContent-Length: 45\r\n\r\n\
          abcdGET /smuggled HTTP/1.1\r\nHost: app.localhost\r\n\r\n",
    )
    .await;
    assert!(two_lengths.starts_with("HTTP/1.1 400"), "{two_lengths}");
    assert_eq!(two_lengths.matches("HTTP/1.1").count(), 1, "{two_lengths}");

    // A marker request afterwards: everything before it has been handled.
    assert_eq!(
        get(proxy.addr, "app.localhost", "/marker").await.status,
        200
    );
    let paths = paths.lock().unwrap().clone();
    assert_eq!(paths, ["/first", "/marker"], "the upstream saw {paths:?}");
}

#[tokio::test]
async fn a_header_dribbling_client_is_cut_off_at_the_header_timeout() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(400),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    for byte in head.iter().cycle().take(200) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let closed_after = closed_after.expect("the proxy never closed the dribbling connection");
    assert!(
        closed_after >= Duration::from_millis(350),
        "closed too early: {closed_after:?}"
    );
    assert!(
        closed_after < Duration::from_secs(2),
        "closed too late: {closed_after:?}"
    );
}

#[tokio::test]
async fn body_limit_gives_413() {
    let (upstream, _) = recording_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let config = ProxyConfig {
        max_body_size: Some(1024),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;

    let declared = Request::post("/upload")
        .header("host", "app.localhost")
        .body(full(vec![b'x'; 2048]))
        .unwrap();
    let answer = send(proxy.addr, declared).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"], "payload_too_large");

    let chunks =
        futures_util::stream::iter((0..4).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'x'; 512])))
        }));
    let streamed = Request::post("/upload")
        .header("host", "app.localhost")
        .body(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(chunks),
        ))
        .unwrap();
    let answer = send(proxy.addr, streamed).await;
    assert_eq!(answer.status, 413);

    let small = Request::post("/upload")
        .header("host", "app.localhost")
        .body(full(vec![b'x'; 512]))
        .unwrap();
    assert_eq!(send(proxy.addr, small).await.status, 200);
}

#[tokio::test]
async fn a_starting_deployment_makes_requests_wait_for_the_swap() {
    let echo = echo_upstream().await;
    let starting = deployment("app-abc", &[], 1);
    let mut table = RoutingTable::new();
    table.insert(
        "app.localhost",
        HostRoute::Target(Target::Deployment(starting)),
    );
    let proxy = TestProxy::start(table, test_config()).await;

    let waiting = tokio::spawn(get(proxy.addr, "app.localhost", "/"));
    // The request is parked until the supervisor swaps in a ready instance.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    let (ready, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    proxy.routing.swap(ready);
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-stack-instance"), Some("1"));
}

#[tokio::test]
async fn a_deployment_that_never_becomes_ready_gives_503_after_the_wait() {
    let mut table = RoutingTable::new();
    table.insert(
        "app.localhost",
        HostRoute::Target(Target::Deployment(deployment("app-abc", &[], 1))),
    );
    table.insert(
        "crashed.localhost",
        HostRoute::Target(Target::Unavailable {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "service `crashed` is CRASHED".into(),
        }),
    );
    let config = ProxyConfig {
        starting_wait: Duration::from_millis(200),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;
    let started = Instant::now();
    let answer = get(proxy.addr, "app.localhost", "/").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "service_unavailable");
    assert!(started.elapsed() >= Duration::from_millis(200));

    let crashed = get(proxy.addr, "crashed.localhost", "/").await;
    assert_eq!(crashed.status, 503);
    assert_eq!(crashed.json()["message"], "service `crashed` is CRASHED");
}

#[tokio::test]
async fn in_flight_counts_until_the_response_body_ends() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let upstream = upstream(move |_request: Request<Incoming>| {
        let released = released.lock().unwrap().take();
        async move {
            let first = futures_util::stream::once(async {
                Ok(http_body::Frame::data(Bytes::from_static(b"head ")))
            });
            let rest = futures_util::stream::once(async move {
                if let Some(released) = released {
                    let _ = released.await;
                }
                Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"tail")))
            });
            Response::new(http_body_util::BodyExt::boxed(
                http_body_util::StreamBody::new(first.chain(rest)),
            ))
        }
    })
    .await;
    let (table, deployment) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    let request = Request::get(format!("http://{}/", proxy.addr))
        .header("host", "app.localhost")
        .body(full(""))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let instance = Arc::clone(&deployment.instances[0]);
    assert_eq!(
        instance.in_flight(),
        1,
        "headers arrived, body still streaming"
    );
    release.send(()).unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"head tail");
    wait_until_async(
        "the ended body to leave the in-flight count",
        Duration::from_secs(2),
        || instance.in_flight() == 0,
    )
    .await;
}

#[tokio::test]
async fn a_thousand_swaps_under_fifty_clients_fail_no_request() {
    let first = echo_upstream().await;
    let second = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[first.addr]);
    let proxy = TestProxy::start(table, test_config()).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..50 {
        let done = Arc::clone(&done);
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !done.load(Ordering::Relaxed) {
                let answer = get(addr, "app.localhost", "/").await;
                if answer.status == 200 {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        }));
    }
    for n in 0..1000 {
        let (id, addr) = if n % 2 == 0 {
            ("app-two", second.addr)
        } else {
            ("app-one", first.addr)
        };
        let (table, _) = one_deployment("app.localhost", id, &[addr]);
        proxy.routing.swap(table);
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for client in clients {
        let (client_ok, client_failed) = client.await.unwrap();
        ok += client_ok;
        failed += client_failed;
    }
    assert_eq!(failed, 0);
    assert!(ok >= 50, "only {ok} requests ran during the swaps");
}

#[tokio::test]
async fn graceful_shutdown_lets_requests_in_flight_finish() {
    let upstream = upstream(|_request: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::new(full("finished"))
    })
    .await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let mut proxy = TestProxy::start(table, test_config()).await;
    let in_flight = tokio::spawn(get(proxy.addr, "app.localhost", "/"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown.cancel();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(&answer.body[..], b"finished");
    let task = proxy.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run() returns after shutdown")
        .unwrap();
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// `counter-demo.localhost` with the rules of the demo: writer paths, `/api/**` to an external
/// URL, `/broken` to a crashed service, everything else to the reader.
fn path_alias_table(writer: SocketAddr, reader: SocketAddr, external: SocketAddr) -> RoutingTable {
    let text = format!(
        r#"{{"rules": [
            {{"pathname": "/login", "method": ["GET", "POST"], "dest": "writer"}},
            {{"pathname": "/increment", "dest": "writer"}},
            {{"pathname": "/api/**", "method": "GET", "dest": "http://{external}"}},
            {{"pathname": "/broken", "dest": "crashed"}},
            {{"pathname": "/only-post", "method": "POST", "dest": "reader"}},
            {{"pathname": "/**", "method": ["GET", "HEAD"], "dest": "reader"}}
        ]}}"#
    );
    let loaded = stack::rules::RuleSet::parse("aliases.json", &text).expect("valid rules");
    let writer = Target::Deployment(deployment("writer-abc", &[writer], 0));
    let reader = Target::Deployment(deployment("reader-def", &[reader], 0));
    let crashed = Target::Unavailable {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: "service `crashed` is CRASHED".into(),
    };
    let external = Target::External {
        scheme: http::uri::Scheme::HTTP,
        authority: external.to_string().parse().unwrap(),
    };
    let targets = vec![
        writer.clone(),
        writer,
        external,
        crashed,
        reader.clone(),
        reader,
    ];
    let mut table = RoutingTable::new();
    table.insert(
        "counter-demo.localhost",
        HostRoute::rules(Arc::new(loaded.rules), targets).expect("one target per rule"),
    );
    table
}

#[tokio::test]
async fn path_rules_route_each_path_to_its_target() {
    let writer = echo_upstream().await;
    let reader = echo_upstream().await;
    let external = echo_upstream().await;
    let table = path_alias_table(writer.addr, reader.addr, external.addr);
    let proxy = TestProxy::start(table, test_config()).await;
    let host = "counter-demo.localhost:3000";

    let login = get(proxy.addr, host, "/login?next=/").await;
    assert_eq!(login.header("x-stack-deployment"), Some("writer-abc"));
    assert_eq!(login.json()["uri"], "/login?next=/");

    // Matched after normalisation, and forwarded with exactly the path that matched.
    let dotted = get(proxy.addr, host, "/static/../lo%67in").await;
    assert_eq!(dotted.header("x-stack-deployment"), Some("writer-abc"));
    assert_eq!(dotted.json()["uri"], "/login");

    let page = get(proxy.addr, host, "/").await;
    assert_eq!(page.header("x-stack-deployment"), Some("reader-def"));

    let api = get(proxy.addr, host, "/api/users?id=1").await;
    assert_eq!(api.status, 200);
    assert_eq!(api.header("x-stack-deployment"), None);
    assert_eq!(api.json()["uri"], "/api/users?id=1");
    assert_eq!(api.echoed("host"), [external.addr.to_string()]);

    // One rule failing does not take the others down.
    let broken = get(proxy.addr, host, "/broken").await;
    assert_eq!(broken.status, 503);
    assert_eq!(broken.json()["error"], "service_unavailable");
    assert_eq!(get(proxy.addr, host, "/increment").await.status, 200);

    // No rule for DELETE /: 404 no_route naming the method and path.
    let delete = send(
        proxy.addr,
        Request::delete("/")
            .header("host", host)
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(delete.status, 404);
    assert_eq!(delete.json()["error"], "no_route");

    // A path the rules module refuses: 400, never forwarded.
    let encoded_slash = get(proxy.addr, host, "/login%2F..%2Fadmin").await;
    assert_eq!(encoded_slash.status, 400);
    assert_eq!(encoded_slash.json()["error"], "bad_request");
}

#[tokio::test]
async fn swapping_rules_is_atomic_for_requests_in_flight() {
    let writer = echo_upstream().await;
    let reader = echo_upstream().await;
    let table = path_alias_table(writer.addr, reader.addr, reader.addr);
    let proxy = TestProxy::start(table, test_config()).await;
    let host = "counter-demo.localhost";
    for n in 0..50 {
        // Alternate between the rules and a plain alias to the reader.
        let table = if n % 2 == 0 {
            let (table, _) = one_deployment(host, "reader-def", &[reader.addr]);
            table
        } else {
            path_alias_table(writer.addr, reader.addr, reader.addr)
        };
        proxy.routing.swap(table);
        let answer = get(proxy.addr, host, "/").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-stack-deployment"), Some("reader-def"));
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let config = ProxyConfig {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stayed open");
    let idle_for = idle_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(250),
        "closed too early: {idle_for:?}"
    );
}

#[tokio::test]
async fn oversized_heads_are_refused_and_http10_without_host_gets_400() {
    let echo = echo_upstream().await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let config = ProxyConfig {
        max_header_size: 8 * 1024,
        max_headers: 10,
        ..test_config()
    };
    let proxy = TestProxy::start(table, config).await;

    let many: String = (0..20).map(|n| format!("X-H{n}: v\r\n")).collect();
    let answer = raw_exchange(
        proxy.addr,
        format!("GET / HTTP/1.1\r\nHost: app.localhost\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let answer = raw_exchange(proxy.addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // HTTP/1.0 without `Host`: a 400 saying so, not a 404 that lists every host.
    let old = raw_exchange(proxy.addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 400"), "{old}");
    assert!(old.contains("must carry a `Host` header"), "{old}");
    assert!(!old.contains("app.localhost"), "{old}");
}

#[tokio::test]
async fn run_on_threads_serves_and_stops() {
    let echo = echo_upstream().await;
    let (table, deployment) = one_deployment("app.localhost", "app-abc", &[echo.addr]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let routing = stack::proxy::Routing::new(table);
    let threads = std::thread::spawn(move || {
        stack::proxy::run_on_threads(listener, None, routing, test_config(), 2, stop)
    });
    for _ in 0..10 {
        assert_eq!(get(addr, "app.localhost", "/").await.status, 200);
    }
    assert_eq!(deployment.instances[0].served(), 10);
    shutdown.cancel();
    let stopped = tokio::task::spawn_blocking(move || threads.join())
        .await
        .unwrap();
    stopped.expect("no panic").expect("clean stop");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn framing_of_chunked_uploads_head_204_and_304_survives_the_proxy() {
    let upstream = upstream(|request: Request<Incoming>| async move {
        match request.uri().path() {
            "/204" => Response::builder().status(204).body(full("")).unwrap(),
            "/304" => Response::builder()
                .status(304)
                .header("etag", "\"v1\"")
                .body(full(""))
                .unwrap(),
            _ => {
                let method = request.method().clone();
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let text = format!("{method} {} bytes", body.len());
                Response::builder()
                    .header("content-length", text.len())
                    .body(full(text))
                    .unwrap()
            }
        }
    })
    .await;
    let (table, _) = one_deployment("app.localhost", "app-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    // A chunked upload, then a second request on the same keep-alive connection.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              HEAD /page HTTP/1.1\r\nHost: app.localhost\r\n\r\n\
              GET /204 HTTP/1.1\r\nHost: app.localhost\r\n\r\n\
              GET /304 HTTP/1.1\r\nHost: app.localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("the proxy answers all four and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    // Status lines wherever they start (a body without a line break runs into the next one).
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(start, _)| text[start..].split("\r\n").next().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 204 No Content",
            "HTTP/1.1 304 Not Modified"
        ],
        "{text}"
    );
    assert!(text.contains("POST 11 bytes"), "{text}");
    assert!(
        !text.contains("HEAD 0 bytes"),
        "a HEAD response carried a body: {text}"
    );
    assert!(text.contains("etag: \"v1\""), "{text}");
}
