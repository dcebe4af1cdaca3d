//! The real `reader` binary: it needs its secret, serves the demo's answers, and stops cleanly.

#[path = "../../writer/tests/common/mod.rs"]
mod common;

use common::*;
use nix::sys::signal::Signal;
use redis::Commands as _;
use std::time::Duration;

const READER: &str = env!("CARGO_BIN_EXE_reader");

#[test]
fn refuses_to_start_without_a_secret_naming_the_variable() {
    let output = rust_binary(READER, &[])
        .output()
        .expect("the reader binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error! `SESSION_SECRET` is not set\n"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serves_a_stored_session_then_stops_on_sigterm() {
    let redis = RedisServer::start();
    let value = r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":{"id":0.25},"count":7}"#;
    let _: () = redis
        .connection()
        .set_ex("sess:abc123", value, 600)
        .expect("SET works");
    let mut reader = ChildService::start(rust_binary(
        READER,
        &[
            ("SESSION_SECRET", "keyboard cat"),
            ("REDIS_SESSION_URL", &redis.url()),
        ],
    ));
    let http = client();
    // The cookie of SESSION-FORMAT.md's first test vector.
    let cookie = "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0";
    let home = get(&http, &reader.url("/"), Some(cookie)).await;
    assert_eq!(
        (home.status, home.body.as_str()),
        (200, r#"{"user":{"id":0.25},"count":7}"#)
    );
    let anonymous = get(&http, &reader.url("/"), None).await;
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (403, reader::LOGIN_FIRST)
    );
    let status = reader.signal_and_wait(Signal::SIGTERM, Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        reader.output()
    );
}
