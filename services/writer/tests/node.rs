//! Cross-language: the Node peer (express-session + connect-redis, `templates/node`) and the
//! Rust services share one login and one count through one Redis.

mod common;

use common::*;

const NODE_SECRET: &str = "shared secret between node and rust";

#[tokio::test]
async fn node_login_then_rust_reader_sees_the_user() {
    let redis = RedisServer::start();
    let node_writer = node_service("writer", &redis.url(), NODE_SECRET, true);
    let rust_reader = InProcess::start(reader::app, &redis.url(), NODE_SECRET).await;
    let http = client();
    let login = get(&http, &node_writer.url("/login"), None).await;
    assert_eq!(login.status, 200, "{login:?}");
    let user = login.raw("user");
    let home = get(&http, &rust_reader.url("/"), Some(&login.cookie())).await;
    assert_eq!(
        (home.status, home.body.clone()),
        (200, format!(r#"{{"user":{user}}}"#))
    );
    // Node's own logout then ends it for Rust as well.
    let logout = get(&http, &node_writer.url("/logout"), Some(&login.cookie())).await;
    assert_eq!(logout.body, r#"{"message":"logged out : count reset"}"#);
    assert_eq!(
        get(&http, &rust_reader.url("/"), Some(&login.cookie()))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn rust_login_then_node_reader_sees_the_user() {
    let redis = RedisServer::start();
    let node_reader = node_service("reader", &redis.url(), NODE_SECRET, true);
    let rust_writer = InProcess::start(writer::app, &redis.url(), NODE_SECRET).await;
    let http = client();
    let login = get(&http, &rust_writer.url("/login"), None).await;
    let cookie = login.cookie();
    get(&http, &rust_writer.url("/increment"), Some(&cookie)).await;
    let home = get(&http, &node_reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        (home.status, home.body.clone()),
        (
            200,
            format!(r#"{{"user":{},"count":1}}"#, login.raw("user"))
        )
    );
    assert!(home.set_cookie.is_none());
    let wrong = get(
        &http,
        &node_reader.url("/"),
        Some(&cookie_for(&session_id(&cookie, NODE_SECRET), "other")),
    )
    .await;
    assert_eq!(wrong.status, 403);
}

#[tokio::test]
async fn increments_alternating_between_node_and_rust_count_up() {
    // Both sides also read the 2017 form of a password-protected URL.
    let redis = RedisServer::start_with_password("pw-2017");
    let url = format!("redis://127.0.0.1:{}?password=pw-2017", redis.port());
    let node_writer = node_service("writer", &url, NODE_SECRET, true);
    let rust_writer = InProcess::start(writer::app, &url, NODE_SECRET).await;
    let http = client();
    let first = get(&http, &node_writer.url("/increment"), None).await;
    assert_eq!(first.body, r#"{"message":"Incremented Count","count":1}"#);
    let cookie = first.cookie();
    let urls = [
        rust_writer.url("/increment"),
        node_writer.url("/increment"),
        rust_writer.url("/increment"),
    ];
    for (count, url) in (2..).zip(&urls) {
        let answer = get(&http, url, Some(&cookie)).await;
        assert_eq!(
            answer.body,
            format!(r#"{{"message":"Incremented Count","count":{count}}}"#),
            "{url}"
        );
        assert!(answer.set_cookie.is_none(), "{url} keeps the session id");
    }
}

#[tokio::test]
async fn a_node_session_keeps_its_fields_after_a_rust_save() {
    let redis = RedisServer::start();
    let node_writer = node_service("writer", &redis.url(), NODE_SECRET, true);
    let node_reader = node_service("reader", &redis.url(), NODE_SECRET, true);
    let rust_writer = InProcess::start(writer::app, &redis.url(), NODE_SECRET).await;
    let http = client();
    let login = get(&http, &node_writer.url("/login"), None).await;
    let cookie = login.cookie();
    let id = session_id(&cookie, NODE_SECRET);
    let written_by_node = stored(&redis, &id).expect("Node stored the session");
    assert!(written_by_node.starts_with(r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":{"id":"#), "{written_by_node}");

    let answer = get(&http, &rust_writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(answer.body, r#"{"message":"Incremented Count","count":1}"#);
    let after_rust = stored(&redis, &id).expect("still stored");
    assert_eq!(
        after_rust,
        format!(
            r#"{},"count":1}}"#,
            written_by_node.strip_suffix('}').expect("a JSON object")
        )
    );

    let home = get(&http, &node_reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        home.body,
        format!(r#"{{"user":{},"count":1}}"#, login.raw("user"))
    );
    // Node saves on top of Rust's save, and Rust reads Node's save back.
    let node_count = get(&http, &node_writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        node_count.body,
        r#"{"message":"Incremented Count","count":2}"#
    );
    let rust_count = get(&http, &rust_writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        rust_count.body,
        r#"{"message":"Incremented Count","count":3}"#
    );
}

#[tokio::test]
async fn the_node_peer_answers_503_when_redis_is_down() {
    let mut redis = RedisServer::start();
    redis.stop();
    let node_writer = node_service("writer", &redis.url(), NODE_SECRET, false);
    let node_reader = node_service("reader", &redis.url(), NODE_SECRET, false);
    let http = client();
    for url in [node_writer.url("/increment"), node_reader.url("/")] {
        let answer = get(&http, &url, None).await;
        assert_eq!(
            (answer.status, answer.retry_after.as_deref()),
            (503, Some("1")),
            "{url}: {answer:?}"
        );
        assert!(answer.set_cookie.is_none());
    }
}
