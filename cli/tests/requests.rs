//! Issue 17 through the real binary: `stack requests` after a scripted sequence (a 200 with a
//! signed session cookie, a 404, a 502, a forged cookie), its filters, and the dashboard's
//! safety rules (only `Host: stack.localhost`, actions only with the page's token and its own
//! `Origin`). A canary secret shows nowhere: not in `stack requests`, the page or its events.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{free_port, raw_http, require, Project, Up};

const CANARY: &str = "canary-secret-4f9d2c7b1e";
const SESSION_ID: &str = "Sx3kQ9vLm2pW8rT5yU1oI7aE4dF6gH0j";

fn project() -> (Project, u16) {
    let project = Project::fixture("scaling");
    let closed_port = free_port();
    project.write(".env", &format!("SESSION_SECRET={CANARY}\n"));
    project.write(
        "rules.json",
        &format!(
            r#"{{"rules": [
                {{"pathname": "/web/**", "dest": "web"}},
                {{"pathname": "/gone", "dest": "http://127.0.0.1:{closed_port}"}}
            ]}}"#
        ),
    );
    (project, closed_port)
}

fn requests_json(project: &Project, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["requests", "--json"];
    full.extend_from_slice(args);
    project
        .stack_ok(&full)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
}

#[test]
fn requests_json_after_a_scripted_sequence() {
    require("redis-server");
    require("node");
    let (project, _) = project();
    let mut up = Up::start(&project, &["web", "--no-watch", "--dotenv"]);
    up.wait_ready("web");
    assert_eq!(up.count("Dashboard at http://stack.localhost:"), 1);
    project.stack_ok(&["alias", "demo.localhost", "--rules", "rules.json"]);

    let signed = session::cookie::sign(SESSION_ID, CANARY);
    let cookie = format!(
        "connect.sid={}; theme=dark",
        session::cookie::encode_uri_component(&signed)
    );
    let forged = format!(
        "connect.sid={}",
        session::cookie::encode_uri_component(&session::cookie::sign(SESSION_ID, "other"))
    );
    let host = "demo.localhost";
    let bearer = format!("Bearer {CANARY}");
    type Step<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let sequence: [Step<'_>; 4] = [
        (
            "/web/a?x=1",
            vec![
                ("Host", host),
                ("Cookie", &cookie),
                ("Authorization", &bearer),
            ],
            200,
        ),
        ("/nothing", vec![("Host", host)], 404),
        ("/gone", vec![("Host", host)], 502),
        ("/web/b", vec![("Host", host), ("Cookie", &forged)], 200),
    ];
    for (path, headers, status) in &sequence {
        let reply = raw_http::request(up.port, "GET", path, headers);
        assert_eq!(reply.status, *status, "{path}: {}", reply.head);
    }

    let records = requests_json(&project, &[]);
    assert_eq!(records.len(), 4, "{records:#?}");
    let keys: Vec<&str> = records[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "time",
            "method",
            "host",
            "path",
            "status",
            "duration_ms",
            "bytes_in",
            "bytes_out",
            "alias",
            "rule",
            "deployment",
            "instance",
            "session"
        ]
    );
    let web = project.live("web");
    let web_deployment = web["id"].as_str().unwrap().to_owned();
    // The number `stack ls` and the log prefix (`web.0 |`) show.
    let web_instance = web["instances"][0]["number"].clone();
    let expected = [
        ("/web/a?x=1", 200, Some(1), true, Some(&SESSION_ID[..8])),
        ("/nothing", 404, None, false, None),
        ("/gone", 502, Some(2), false, None),
        ("/web/b", 200, Some(1), true, None),
    ];
    for (record, (path, status, rule, to_web, session)) in records.iter().zip(expected) {
        assert_eq!(record["method"], "GET");
        assert_eq!(record["host"], host);
        assert_eq!(record["path"], path);
        assert_eq!(record["status"], status, "{record}");
        assert_eq!(record["alias"], host);
        assert_eq!(record["rule"], serde_json::json!(rule), "{record}");
        assert_eq!(record["session"], serde_json::json!(session), "{record}");
        assert!(record["time"].as_str().unwrap().ends_with('Z'), "{record}");
        assert!(record["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(record["bytes_in"], 0);
        if to_web {
            assert_eq!(record["deployment"], web_deployment.as_str());
            assert_eq!(record["instance"], web_instance);
            // `web <pid>\n`
            assert!(record["bytes_out"].as_u64().unwrap() > 4, "{record}");
        } else {
            assert_eq!(record["deployment"], Value::Null);
            assert_eq!(record["instance"], Value::Null);
            assert!(
                record["bytes_out"].as_u64().unwrap() > 0,
                "a JSON error body"
            );
        }
    }

    // Filters, and the last N.
    let errors = requests_json(&project, &["--status", "5xx"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["status"], 502);
    let some = requests_json(&project, &["--status", "404,5xx"]);
    assert_eq!(some.len(), 2);
    let last = requests_json(&project, &["-n", "1", "--host", "DEMO.localhost:1"]);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["path"], "/web/b");
    assert!(requests_json(&project, &["--host", "other.localhost"]).is_empty());
    let refused = project.stack(&["requests", "--status", "6xx"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("not a status filter"),
        "{}",
        refused.stderr
    );

    // Nothing secret: not the secret, not the full id, not a cookie value.
    let plain = project.stack_ok(&["requests"]);
    assert!(plain.contains("/gone"), "{plain}");
    for shown in [plain, project.stack_ok(&["requests", "--json"])] {
        for secret in [CANARY, SESSION_ID, "dark", &signed] {
            assert!(!shown.contains(secret), "`{secret}` shown in {shown}");
        }
    }

    // `-f` prints what comes after it started.
    let mut follow = Up::spawn(&project, &["requests", "-f", "-n", "0", "--json"], &[]);
    std::thread::sleep(Duration::from_millis(500));
    raw_http::request(up.port, "GET", "/web/followed", &[("Host", host)]);
    follow.wait_for("/web/followed", Duration::from_secs(5));
}

/// Reads a server-sent event stream for `duration`, returns what arrived.
fn read_events(port: u16, path: &str, duration: Duration) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: stack.localhost:{port}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + duration;
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The token the page embeds.
fn page_token(page: &str) -> String {
    let start = page
        .find("data-token=\"")
        .expect("the page carries its token")
        + 12;
    page[start..start + 32].to_owned()
}

#[test]
fn the_dashboard_answers_only_its_own_host_and_guards_its_actions() {
    require("redis-server");
    require("node");
    let (project, _) = project();
    let mut up = Up::start(&project, &["web", "--no-watch", "--dotenv"]);
    up.wait_ready("web");
    let port = up.port;
    let dashboard_host = format!("stack.localhost:{port}");
    let origin = format!("http://stack.localhost:{port}");

    // A project cannot take the reserved host.
    let refused = project.stack(&["alias", "stack.localhost", "web"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(refused.stderr.contains("reserved"), "{}", refused.stderr);

    let page = raw_http::request(port, "GET", "/", &[("Host", &dashboard_host)]);
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains("<title>stack</title>"), "{}", page.body);
    assert!(!page.body.contains(CANARY));
    let token = page_token(&page.body);
    for asset in ["/app.js", "/app.css"] {
        let reply = raw_http::request(port, "GET", asset, &[("Host", "Stack.Localhost")]);
        assert_eq!(reply.status, 200, "{asset}");
    }
    // Any other host, or a rebinding page's, is routed as usual: never the dashboard.
    for host in [
        "evil.example",
        "stack.localhost.evil.example",
        "evil.example:80",
    ] {
        let reply = raw_http::request(port, "GET", "/", &[("Host", host)]);
        assert_eq!(reply.status, 404, "{host}");
        assert!(reply.body.contains("no_route"), "{}", reply.body);
        assert!(!reply.body.contains("data-token"));
        let api = raw_http::request(port, "GET", "/api/env", &[("Host", host)]);
        assert_eq!(api.status, 404, "{host}");
    }

    // Actions: 403 JSON without the token, with a wrong one, or from another origin.
    let body = r#"{"service": "web", "instances": 2}"#;
    let scale = |headers: &[(&str, &str)]| {
        let mut all = vec![
            ("Host", dashboard_host.as_str()),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        post(port, "/api/scale", &all, body)
    };
    for headers in [
        vec![("Origin", origin.as_str())],
        vec![
            ("Origin", origin.as_str()),
            ("x-stack-token", "0123456789abcdef0123456789abcdef"),
        ],
        vec![("x-stack-token", token.as_str())],
        vec![
            ("x-stack-token", token.as_str()),
            ("Origin", "http://evil.example"),
        ],
        vec![("x-stack-token", token.as_str()), ("Origin", "null")],
        // Only the dashboard's own ports and exact host.
        vec![
            ("x-stack-token", token.as_str()),
            ("Origin", "https://stack.localhost:1"),
        ],
        vec![
            ("x-stack-token", token.as_str()),
            ("Origin", &format!("http://stack.localhost.:{port}")),
        ],
    ] {
        let (status, answer) = scale(&headers);
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert!(answer.starts_with("{\"error\":"), "{answer}");
    }
    assert_eq!(project.live("web")["wanted"], 1, "nothing changed");
    let (status, answer) = scale(&[("x-stack-token", &token), ("Origin", &origin)]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(project.live("web")["wanted"], 2);
    assert_eq!(project.live("web")["ready"], 2);

    // Bad requests get the dashboard's JSON refusals with their statuses, never axum's text.
    let own_headers = [
        ("Host", dashboard_host.as_str()),
        ("Content-Type", "application/json"),
        ("x-stack-token", token.as_str()),
        ("Origin", origin.as_str()),
    ];
    let long_name = "w".repeat(1 << 20);
    let long_body = format!(r#"{{"service": "{long_name}", "instances": 1}}"#);
    for (headers, body, expected, said) in [
        (&own_headers[..], "{", 400, "the body is not valid JSON"),
        (
            &own_headers[..],
            r#"{"service": "web", "instances": "two"}"#,
            422,
            "the body's fields are wrong: invalid type: string",
        ),
        (&own_headers[..], "[]", 422, "must be a JSON object"),
        (
            &own_headers[..],
            r#"["web", 3]"#,
            422,
            "must be a JSON object",
        ),
        (
            &[own_headers[0], own_headers[2], own_headers[3]][..],
            body,
            415,
            "`Content-Type: application/json`",
        ),
        (
            &own_headers[..],
            &long_body,
            404,
            "service or deployment named",
        ),
    ] {
        let (status, answer) = post(port, "/api/scale", headers, body);
        let what: String = body.chars().take(60).collect();
        let answer_start: String = answer.chars().take(300).collect();
        assert_eq!(status, expected, "{what}: {answer_start}");
        let refusal: Value =
            serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer_start}"));
        let message = refusal["error"].as_str().unwrap_or_default();
        assert!(message.contains(said), "{what}: {answer_start}");
        assert!(
            answer.len() < 1000,
            "a long input echoed in full: {} bytes",
            answer.len()
        );
    }
    assert_eq!(project.live("web")["wanted"], 2, "nothing changed");
    for (method, path, expected) in [
        ("GET", "/api/scale", 405),
        ("GET", "/api/route", 400),
        ("GET", "/api/route?host=x", 400),
        ("GET", "/api/logs", 400),
        ("GET", "/api/requests/abc", 400),
    ] {
        let reply = raw_http::request(port, method, path, &[("Host", &dashboard_host)]);
        assert_eq!(reply.status, expected, "{method} {path}: {}", reply.body);
        let refusal: Value =
            serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("{}", reply.body));
        assert!(
            refusal["error"].is_string(),
            "{method} {path}: {}",
            reply.body
        );
    }

    // Restart one instance: a new process, counted as a restart.
    let first = project.live("web")["instances"][0].clone();
    let restart = format!(
        r#"{{"deployment": "web", "instance": {}}}"#,
        first["number"]
    );
    let own = [
        ("Host", dashboard_host.as_str()),
        ("Content-Type", "application/json"),
        ("x-stack-token", token.as_str()),
        ("Origin", origin.as_str()),
    ];
    let (status, answer) = post(port, "/api/restart", &own[..2], &restart);
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = post(port, "/api/restart", &own, &restart);
    assert_eq!(status, 200, "{answer}");
    support::wait_until("the instance restarted", Duration::from_secs(20), || {
        let web = project.live("web");
        let again = web["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|instance| instance["number"] == first["number"])
            .cloned()
            .unwrap_or_default();
        web["ready"] == 2 && again["restarts"] == 1 && again["pid"] != first["pid"]
    });
    // Without an instance: all of them, one at a time, answered once they are back.
    let (status, answer) = post(port, "/api/restart", &own, r#"{"deployment": "web"}"#);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""instances":[0,1]"#), "{answer}");
    let restarts: Vec<u64> = project.live("web")["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["restarts"].as_u64().unwrap())
        .collect();
    assert_eq!(restarts.iter().sum::<u64>(), 3, "{restarts:?}");

    // The environment: secrets as `***`.
    let env = raw_http::request(port, "GET", "/api/env", &[("Host", &dashboard_host)]);
    assert_eq!(env.status, 200);
    assert!(
        env.body.contains(r#"["SESSION_SECRET","***"]"#),
        "{}",
        env.body
    );
    assert!(!env.body.contains(CANARY));

    // Events: the overview, then the requests made meanwhile, nothing secret.
    let signed = session::cookie::sign(SESSION_ID, CANARY);
    let cookie = format!(
        "connect.sid={}",
        session::cookie::encode_uri_component(&signed)
    );
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        raw_http::request(
            port,
            "GET",
            "/evented",
            &[("Host", "web.localhost"), ("Cookie", &cookie)],
        )
    });
    let events = read_events(port, "/api/events", Duration::from_millis(1500));
    sender.join().unwrap();
    assert!(events.contains("event: overview"), "{events}");
    assert!(events.contains("event: requests"), "{events}");
    assert!(events.contains("/evented"), "{events}");
    assert!(events.contains(&SESSION_ID[..8]), "{events}");
    for secret in [CANARY, SESSION_ID, &signed] {
        assert!(!events.contains(secret), "`{secret}` in the events");
    }
}

/// A POST with `body`; the status and the body of the answer.
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let head: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}
