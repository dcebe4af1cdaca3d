//! The real `writer` binary: configuration errors, secrets kept out of its output, and a
//! graceful stop on SIGTERM/SIGINT that finishes in-flight requests.

mod common;

use common::*;
use nix::sys::signal::Signal;
use std::time::Duration;

const WRITER: &str = env!("CARGO_BIN_EXE_writer");

fn run_to_exit(vars: &[(&str, &str)]) -> (i32, String) {
    let output = rust_binary(WRITER, vars)
        .output()
        .expect("the writer binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().expect("exited, not killed"), text)
}

#[test]
fn refuses_to_start_without_a_secret_naming_the_variable() {
    let (code, output) = run_to_exit(&[]);
    assert_eq!(code, 1, "{output}");
    assert_eq!(
        output.trim_end(),
        "Error! `SESSION_SECRET` is not set\n\
         Set SESSION_SECRET to a long random string (a comma-separated list rotates secrets: the first signs, all verify)."
    );
}

#[test]
fn bad_settings_are_named_without_echoing_secrets() {
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("SESSION_SECRET", "canary-secret-x1"), ("PORT", "eighty")],
            "Error! `PORT` is `eighty`, not a port number",
        ),
        (
            &[
                ("SESSION_SECRET", "canary-secret-x1"),
                ("REDIS_SESSION_URL", "http://:canary-pw-x1@h:1"),
            ],
            "Error! `REDIS_SESSION_URL` is invalid: the Redis URL has the scheme `http`",
        ),
        (
            &[
                ("SESSION_SECRET", "canary-secret-x1"),
                ("HOST", "localhost"),
            ],
            "Error! `HOST` is `localhost`, not an IP address",
        ),
    ];
    for (vars, expected) in cases {
        let (code, output) = run_to_exit(vars);
        assert_eq!(code, 1, "{output}");
        assert!(output.starts_with(expected), "{output}");
        assert!(!output.contains("canary"), "{output}");
    }
}

#[test]
fn a_taken_port_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    let port = taken.local_addr().expect("bound").port().to_string();
    let (code, output) = run_to_exit(&[("SESSION_SECRET", "s"), ("PORT", &port)]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("Error! writer cannot listen on 127.0.0.1:{port}")),
        "{output}"
    );
}

/// Canary secret and canary Redis passwords: the binary is exercised (logins, counts, a forged
/// cookie, Redis refusing a wrong password, Redis going away, a stop) with trace logs, and no
/// canary ever appears in its output.
#[tokio::test]
async fn secrets_never_reach_the_output() {
    const SECRET_CANARY: &str = "CANARY-session-secret-7f3a";
    const PASSWORD_CANARY: &str = "CANARY-redis-password-91bc";
    let mut redis = RedisServer::start_with_password(PASSWORD_CANARY);
    let secrets = format!("{SECRET_CANARY},{SECRET_CANARY}-old");
    let start = |secrets: &str, url: &str| {
        ChildService::start(rust_binary(
            WRITER,
            &[
                ("SESSION_SECRET", secrets),
                ("REDIS_SESSION_URL", url),
                ("RUST_LOG", "trace"),
            ],
        ))
    };
    let mut writer = start(&secrets, &redis.url());
    // The 2017 URL form, with a wrong (canary) password: Redis refuses.
    let wrong_url = format!(
        "redis://127.0.0.1:{}?password=CANARY-wrong-password",
        redis.port()
    );
    let wrong_password = start(SECRET_CANARY, &wrong_url);
    let http = client();
    let status = |url: String, cookie: Option<String>| {
        let http = http.clone();
        async move { get(&http, &url, cookie.as_deref()).await.status }
    };
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    assert_eq!(
        status(writer.url("/increment"), Some(cookie.clone())).await,
        200
    );
    let forged = Some(cookie_for("x", "wrong"));
    assert_eq!(status(writer.url("/increment"), forged).await, 200);
    assert_eq!(status(wrong_password.url("/login"), None).await, 503);
    redis.stop();
    assert_eq!(
        status(writer.url("/increment"), Some(cookie.clone())).await,
        503
    );
    assert_eq!(status(writer.url("/logout"), Some(cookie)).await, 503);
    let exit = writer.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5));
    assert_eq!(exit.and_then(|s| s.code()), Some(0));

    // The 503 can reach the test before the output reader has the log line that explains it.
    for service in [&writer, &wrong_password] {
        service.wait_for_output("session store unavailable", Duration::from_secs(5));
    }
    for output in [writer.output(), wrong_password.output()] {
        let masked = format!("redis=redis://:***@127.0.0.1:{}", redis.port());
        assert!(output.contains(&masked), "{output}");
        assert!(output.contains("session store unavailable"), "{output}");
        assert!(!output.contains("CANARY"), "a canary leaked:\n{output}");
    }
}

/// `rediss://` against a real TLS-only `redis-server` with a throwaway CA: trusting that CA via
/// `REDIS_TLS_CA_FILE`, the writer logs in and counts, and the URL is logged masked; without it the
/// server's certificate is refused (503), so verification is really on.
#[tokio::test]
async fn rediss_with_a_trusted_ca_logs_in_and_counts() {
    const PASSWORD_CANARY: &str = "CANARY-tls-password-5e21";
    let redis = RedisServer::start_tls_with_password(PASSWORD_CANARY);
    let ca_file = redis.ca_file();
    let ca_file = ca_file.to_str().expect("temp paths are UTF-8");
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let start = |vars: &[(&str, &str)]| {
        let mut all = vec![
            ("SESSION_SECRET", SECRET),
            ("REDIS_SESSION_URL", url.as_str()),
            ("RUST_LOG", "trace"),
        ];
        all.extend_from_slice(vars);
        ChildService::start(rust_binary(WRITER, &all))
    };
    let trusting = start(&[("REDIS_TLS_CA_FILE", ca_file)]);
    let untrusting = start(&[]);
    let http = client();

    let login = get(&http, &trusting.url("/login"), None).await;
    assert_eq!(login.status, 200, "{login:?}\n{}", trusting.output());
    let cookie = login.cookie();
    for count in 1..=2 {
        let answer = get(&http, &trusting.url("/increment"), Some(&cookie)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json()["count"], count, "{answer:?}");
    }
    let id = session_id(&cookie, SECRET);
    let saved = stored(&redis, &id).expect("the session is in the TLS Redis");
    assert!(saved.contains(r#""count":2"#), "{saved}");

    let refused = get(&http, &untrusting.url("/login"), None).await;
    assert_eq!(refused.status, 503, "{refused:?}");

    // The 503 can reach the test before the output reader has the log line that explains it.
    untrusting.wait_for_output("session store unavailable", Duration::from_secs(5));
    let masked = format!("redis=rediss://:***@127.0.0.1:{}", redis.port());
    for output in [trusting.output(), untrusting.output()] {
        assert!(output.contains(&masked), "{output}");
        assert!(!output.contains("CANARY"), "a canary leaked:\n{output}");
    }
}

/// SIGTERM while a request waits on a frozen Redis: the request still gets its answer, then
/// the process exits 0.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_0() {
    let redis = RedisServer::start();
    let mut writer = ChildService::start(rust_binary(
        WRITER,
        &[("SESSION_SECRET", "s"), ("REDIS_SESSION_URL", &redis.url())],
    ));
    let http = client();
    assert_eq!(
        get(&http, &writer.url("/increment"), None).await.status,
        200
    );
    redis.pause();
    let url = writer.url("/increment");
    let in_flight = tokio::spawn(async move { get(&client(), &url, None).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = writer.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5));
        (status, writer)
    });
    let answer = in_flight.await.expect("the request task does not panic");
    assert_eq!(
        answer.status, 503,
        "the in-flight request was answered: {answer:?}"
    );
    let (status, writer) = status.await.expect("the wait does not panic");
    redis.resume();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        writer.output()
    );
    assert!(
        std::net::TcpStream::connect(writer.addr).is_err(),
        "the port is closed"
    );
}

#[tokio::test]
async fn sigint_stops_an_idle_writer_with_exit_0() {
    let mut redis = RedisServer::start();
    redis.stop();
    // Starts even though Redis is down.
    let mut writer = ChildService::start(rust_binary(
        WRITER,
        &[("SESSION_SECRET", "s"), ("REDIS_SESSION_URL", &redis.url())],
    ));
    assert_eq!(
        get(&client(), &writer.url("/login"), None).await.status,
        503
    );
    let status = writer.signal_and_wait(Signal::SIGINT, Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        writer.output()
    );
}

/// The harness starts a real server (and `without_redis_server_the_harness_fails_with_a_hint`
/// runs this same test again with no `redis-server` on PATH).
#[test]
fn the_harness_starts_a_real_redis_server() {
    let redis = RedisServer::start();
    let pong: String = redis::cmd("PING")
        .query(&mut redis.connection())
        .expect("the test server answers");
    assert_eq!(pong, "PONG");
}

#[test]
fn without_redis_server_the_harness_fails_with_a_hint() {
    let this_test_binary = std::env::current_exe().expect("a test knows its own binary");
    let output = std::process::Command::new(this_test_binary)
        .args([
            "--exact",
            "the_harness_starts_a_real_redis_server",
            "--nocapture",
        ])
        .env("PATH", "/nonexistent")
        .output()
        .expect("the test binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("redis-server is not on PATH"), "{text}");
    assert!(text.contains("apt-get install redis-server"), "{text}");
    assert!(text.contains("brew install redis"), "{text}");
}
