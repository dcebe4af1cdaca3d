//! Redis down, refusing, killed, frozen (SIGSTOP) and paused (CLIENT PAUSE): the services answer
//! 503 quickly (never 403, never a hang), and recover by themselves once Redis is back.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A 503 as SESSION-FORMAT.md wants it: fast, `Retry-After: 1`, JSON naming the store, no cookie.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"), "{what}");
    assert!(
        answer.set_cookie.is_none(),
        "{what}: no Set-Cookie on a 503"
    );
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("session store")),
        "{what}: {}",
        answer.body
    );
    assert!(
        answer.elapsed < Duration::from_millis(700),
        "{what}: took {:?}",
        answer.elapsed
    );
}

/// Polls `url` until it answers 200; returns how long that took. Panics after `deadline`.
async fn until_ok(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = get(http, url, cookie).await;
        assert_ne!(
            answer.status, 403,
            "a store outage must never look like a logout"
        );
        if answer.status == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "{url} did not recover within {deadline:?}; last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn starts_while_redis_is_down_and_recovers_when_it_comes_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = cookie_for("some-session", SECRET);
    for (url, cookie) in [
        (writer.url("/increment"), None),
        (writer.url("/login"), Some(cookie.as_str())),
        (writer.url("/logout"), Some(cookie.as_str())),
        (reader.url("/"), Some(cookie.as_str())),
    ] {
        assert_unavailable(&get(&http, &url, cookie).await, &url);
    }
    redis.restart();
    let took = until_ok(
        &http,
        &writer.url("/increment"),
        None,
        Duration::from_secs(3),
    )
    .await;
    assert!(took < Duration::from_secs(1), "recovered after {took:?}");
}

#[tokio::test]
async fn a_refusing_redis_is_a_503() {
    let redis = RedisServer::start_with_password("the-right-one");
    let wrong = format!("redis://:the-wrong-one@127.0.0.1:{}", redis.port());
    let writer = InProcess::start(writer::app, &wrong, SECRET).await;
    let http = client();
    assert_unavailable(
        &get(&http, &writer.url("/increment"), None).await,
        "wrong password",
    );
    let right = InProcess::start(writer::app, &redis.url(), SECRET).await;
    assert_eq!(get(&http, &right.url("/increment"), None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_while_requests_run() {
    let mut redis = RedisServer::start_persistent();
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();

    // Readers keep asking throughout; every answer must be a 200 or a 503.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = (0..4).map(|_| {
        let (http, url, cookie, stop) =
            (http.clone(), reader.url("/"), cookie.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = get(&http, &url, Some(&cookie)).await;
                *statuses.entry(answer.status).or_default() += 1;
                assert!(answer.elapsed < Duration::from_millis(700), "{answer:?}");
            }
            statuses
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    assert!(
        eventually(Duration::from_secs(2), || async {
            get(&http, &reader.url("/"), Some(&cookie)).await.status == 503
        })
        .await,
        "a killed Redis shows as 503"
    );
    assert_unavailable(
        &get(&http, &writer.url("/increment"), Some(&cookie)).await,
        "writer while down",
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart();
    let took = until_ok(
        &http,
        &reader.url("/"),
        Some(&cookie),
        Duration::from_secs(3),
    )
    .await;
    assert!(took < Duration::from_secs(1), "recovered after {took:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = std::collections::BTreeMap::<u16, u32>::new();
    for task in load {
        for (status, n) in task.await.expect("the load task does not panic") {
            *total.entry(status).or_default() += n;
        }
    }
    let statuses: Vec<u16> = total.keys().copied().collect();
    assert_eq!(statuses, vec![200, 503], "only 200s and 503s: {total:?}");
    let count = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        count.body, r#"{"message":"Incremented Count","count":1}"#,
        "the session survived"
    );
}

#[tokio::test]
async fn redis_frozen_by_sigstop_then_thawed() {
    let redis = RedisServer::start();
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    redis.pause();
    let (read_url, write_url) = (reader.url("/"), writer.url("/increment"));
    let (read, write) = tokio::join!(
        get(&http, &read_url, Some(&cookie)),
        get(&http, &write_url, Some(&cookie)),
    );
    assert_unavailable(&read, "reader, Redis frozen");
    assert_unavailable(&write, "writer, Redis frozen");
    assert_unavailable(
        &get(&http, &writer.url("/increment"), None).await,
        "new session, Redis frozen",
    );
    redis.resume();
    let took = until_ok(
        &http,
        &reader.url("/"),
        Some(&cookie),
        Duration::from_secs(3),
    )
    .await;
    assert!(took < Duration::from_secs(1), "recovered after {took:?}");
    let count = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(count.status, 200);
}

/// `CLIENT PAUSE <ms> ALL` holds every command, `CLIENT UNPAUSE` included, until it lapses.
#[tokio::test]
async fn redis_paused_for_all_commands_until_the_pause_lapses() {
    let redis = RedisServer::start();
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    let pause = Duration::from_millis(1200);
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(u64::try_from(pause.as_millis()).expect("small"))
        .arg("ALL")
        .exec(&mut redis.connection())
        .expect("CLIENT PAUSE works");
    let paused_at = Instant::now();
    let (read_url, write_url) = (reader.url("/"), writer.url("/increment"));
    let (read, write) = tokio::join!(
        get(&http, &read_url, Some(&cookie)),
        get(&http, &write_url, Some(&cookie)),
    );
    assert_unavailable(&read, "reader, CLIENT PAUSE ALL");
    assert_unavailable(&write, "writer, CLIENT PAUSE ALL");
    until_ok(
        &http,
        &reader.url("/"),
        Some(&cookie),
        Duration::from_secs(3),
    )
    .await;
    let after_lapse = paused_at.elapsed().saturating_sub(pause);
    assert!(
        after_lapse < Duration::from_secs(1),
        "recovered {after_lapse:?} after the pause lapsed"
    );
}

/// `CLIENT PAUSE <ms> WRITE` holds writes, and `GETEX` (it sets a TTL) is one.
#[tokio::test]
async fn redis_paused_for_writes_then_unpaused() {
    let redis = RedisServer::start();
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    let mut admin = redis.connection();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .exec(&mut admin)
        .expect("CLIENT PAUSE works");
    assert_unavailable(
        &get(&http, &reader.url("/"), Some(&cookie)).await,
        "reader, CLIENT PAUSE WRITE",
    );
    assert_unavailable(
        &get(&http, &writer.url("/increment"), Some(&cookie)).await,
        "writer, CLIENT PAUSE WRITE",
    );
    redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .exec(&mut admin)
        .expect("CLIENT UNPAUSE works");
    let took = until_ok(
        &http,
        &reader.url("/"),
        Some(&cookie),
        Duration::from_secs(3),
    )
    .await;
    assert!(took < Duration::from_secs(1), "recovered after {took:?}");
    let count = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(count.status, 200);
}
