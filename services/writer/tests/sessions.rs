//! The demo against a real redis-server: writer and reader in-process on real sockets.

mod common;

use common::*;
use redis::Commands as _;

async fn demo(redis: &RedisServer) -> (InProcess, InProcess) {
    let writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let reader = InProcess::start(reader::app, &redis.url(), SECRET).await;
    (writer, reader)
}

#[tokio::test]
async fn demo_flow_across_writer_and_reader() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();

    let anonymous = get(&http, &reader.url("/"), None).await;
    assert_eq!(anonymous.status, 403);
    assert_eq!(anonymous.body, reader::LOGIN_FIRST);
    assert!(anonymous.set_cookie.is_none());

    let first = get(&http, &writer.url("/increment"), None).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, r#"{"message":"Incremented Count","count":1}"#)
    );
    let cookie = first.cookie();
    let anonymous_id = session_id(&cookie, SECRET);
    assert_eq!(anonymous_id.len(), 32);
    assert_eq!(
        stored(&redis, &anonymous_id).as_deref(),
        Some(
            r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"count":1}"#
        )
    );
    let ttl: i64 = redis
        .connection()
        .ttl(format!("sess:{anonymous_id}"))
        .expect("TTL works");
    assert!((86_390..=86_400).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        first
            .set_cookie
            .as_deref()
            .map(|c| c.ends_with("; Path=/; HttpOnly")),
        Some(true)
    );

    let no_user = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        (no_user.status, no_user.body.as_str()),
        (403, reader::LOGIN_FIRST)
    );

    let login = get(&http, &writer.url("/login"), Some(&cookie)).await;
    assert_eq!(login.status, 200);
    let user = login.raw("user");
    let user_id = login.json()["user"]["id"]
        .as_f64()
        .expect("user.id is a number");
    assert!((0.0..1.0).contains(&user_id));
    assert_eq!(
        login.body,
        format!(r#"{{"message":"you are now logged in","user":{user}}}"#)
    );
    let cookie = login.cookie();
    let id = session_id(&cookie, SECRET);
    assert_ne!(id, anonymous_id, "login rotates the id");
    assert_eq!(stored(&redis, &anonymous_id), None, "the old key is gone");
    assert_eq!(session_keys(&redis), vec![format!("sess:{id}")]);

    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        (home.status, home.body.clone()),
        (200, format!(r#"{{"user":{user},"count":1}}"#))
    );
    assert!(home.set_cookie.is_none());

    let again = get(&http, &writer.url("/login"), Some(&cookie)).await;
    assert_eq!(again.body, login.body, "logging in twice keeps the user");
    assert!(again.set_cookie.is_none(), "and the id");

    let second = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(second.body, r#"{"message":"Incremented Count","count":2}"#);
    assert!(second.set_cookie.is_none());
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(home.body, format!(r#"{{"user":{user},"count":2}}"#));

    let logout = get(&http, &writer.url("/logout"), Some(&cookie)).await;
    assert_eq!(
        (logout.status, logout.body.as_str()),
        (200, r#"{"message":"logged out : count reset"}"#)
    );
    assert_eq!(
        session_keys(&redis),
        Vec::<String>::new(),
        "logout deletes the key"
    );
    let replayed = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        (replayed.status, replayed.body.as_str()),
        (403, reader::LOGIN_FIRST)
    );

    // The writer never adopts the dead id: a new session, a new id.
    let fresh = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(fresh.body, r#"{"message":"Incremented Count","count":1}"#);
    assert_ne!(session_id(&fresh.cookie(), SECRET), id);
}

#[tokio::test]
async fn login_without_a_session_and_user_shown_without_count() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let login = get(&http, &writer.url("/login"), None).await;
    assert_eq!(login.status, 200);
    let home = get(&http, &reader.url("/"), Some(&login.cookie())).await;
    assert_eq!(home.body, format!(r#"{{"user":{}}}"#, login.raw("user")));
}

#[tokio::test]
async fn cookies_that_do_not_verify_get_403_without_a_store_read() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let login = get(&http, &writer.url("/login"), None).await;
    let good = login.cookie();
    let id = session_id(&good, SECRET);
    let value = good
        .strip_prefix("connect.sid=")
        .expect("a connect.sid pair");

    reset_command_stats(&redis);
    let bad = [
        ("unsigned", format!("connect.sid={id}")),
        ("unsigned with s:", format!("connect.sid=s%3A{id}")),
        ("truncated", good[..good.len() - 3].to_owned()),
        (
            "tampered id",
            format!("connect.sid={}", value.replacen(&id[..4], "AAAA", 1)),
        ),
        ("wrong secret", cookie_for(&id, "another secret")),
        ("garbage", "connect.sid=%%%".to_owned()),
    ];
    for (what, cookie) in &bad {
        let answer = get(&http, &reader.url("/"), Some(cookie)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (403, reader::LOGIN_FIRST),
            "{what}"
        );
    }
    assert_eq!(
        command_calls(&redis),
        vec![],
        "no store read for cookies that do not verify"
    );

    // Signed, but naming no stored session.
    let unknown = get(
        &http,
        &reader.url("/"),
        Some(&cookie_for("no-such-session", SECRET)),
    )
    .await;
    assert_eq!(unknown.status, 403);

    // A bad cookie on the writer starts a new session under a new id.
    let answer = get(&http, &writer.url("/increment"), Some(&bad[3].1)).await;
    assert_eq!(answer.body, r#"{"message":"Incremented Count","count":1}"#);
    assert_ne!(session_id(&answer.cookie(), SECRET), id);
}

#[tokio::test]
async fn a_reader_request_is_one_round_trip_and_writes_nothing() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    let key = format!("sess:{}", session_id(&cookie, SECRET));
    let before = stored(&redis, &key[5..]);
    let _: () = redis.connection().expire(&key, 100).expect("EXPIRE works");

    reset_command_stats(&redis);
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(home.status, 200);
    assert_eq!(command_calls(&redis), vec![("getex".to_owned(), 1)]);
    let ttl: i64 = redis.connection().ttl(&key).expect("TTL works");
    assert!(ttl > 86_000, "reading extends the TTL, got {ttl}");
    assert_eq!(stored(&redis, &key[5..]), before, "reading changes nothing");

    // Logout is one DEL, with no read first.
    reset_command_stats(&redis);
    assert_eq!(
        get(&http, &writer.url("/logout"), Some(&cookie))
            .await
            .status,
        200
    );
    assert_eq!(command_calls(&redis), vec![("del".to_owned(), 1)]);

    // Requests that change nothing create nothing.
    reset_command_stats(&redis);
    assert_eq!(get(&http, &writer.url("/logout"), None).await.status, 200);
    assert_eq!(get(&http, &reader.url("/"), None).await.status, 403);
    assert_eq!(command_calls(&redis), vec![]);
    assert_eq!(session_keys(&redis), Vec::<String>::new());
}

#[tokio::test]
async fn a_planted_id_is_dead_after_login() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    // The attacker gets a valid anonymous session and plants its cookie in the victim's browser.
    let planted = get(&http, &writer.url("/increment"), None).await.cookie();
    let victim = get(&http, &writer.url("/login"), Some(&planted)).await;
    let victim_cookie = victim.cookie();
    assert_ne!(victim_cookie, planted);
    assert_eq!(
        get(&http, &reader.url("/"), Some(&victim_cookie))
            .await
            .status,
        200
    );
    let attacker = get(&http, &reader.url("/"), Some(&planted)).await;
    assert_eq!(
        (attacker.status, attacker.body.as_str()),
        (403, reader::LOGIN_FIRST)
    );
    // The data came along: the count of the planted session is the victim's now.
    assert!(get(&http, &reader.url("/"), Some(&victim_cookie))
        .await
        .body
        .ends_with(r#","count":1}"#));
    let attacker_writes = get(&http, &writer.url("/increment"), Some(&planted)).await;
    assert_eq!(
        attacker_writes.body,
        r#"{"message":"Incremented Count","count":1}"#
    );
    assert!(get(&http, &reader.url("/"), Some(&victim_cookie))
        .await
        .body
        .ends_with(r#","count":1}"#));
}

#[tokio::test]
async fn secret_rotation_keeps_old_cookies_and_signs_with_the_new_secret() {
    let redis = RedisServer::start();
    let old_writer = InProcess::start(writer::app, &redis.url(), "old secret").await;
    let rotated_writer = InProcess::start(writer::app, &redis.url(), "new secret,old secret").await;
    let rotated_reader = InProcess::start(reader::app, &redis.url(), "new secret,old secret").await;
    let retired_reader = InProcess::start(reader::app, &redis.url(), "new secret").await;
    let http = client();
    let old_cookie = get(&http, &old_writer.url("/login"), None).await.cookie();
    assert_eq!(
        get(&http, &rotated_reader.url("/"), Some(&old_cookie))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&http, &retired_reader.url("/"), Some(&old_cookie))
            .await
            .status,
        403
    );
    let new_cookie = get(&http, &rotated_writer.url("/login"), None)
        .await
        .cookie();
    session_id(&new_cookie, "new secret");
    assert_eq!(
        get(&http, &retired_reader.url("/"), Some(&new_cookie))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_increments_on_one_session_lose_nothing() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let second_writer = InProcess::start(writer::app, &redis.url(), SECRET).await;
    let http = client();
    let cookie = get(&http, &writer.url("/login"), None).await.cookie();
    let requests = (0..100).map(|n| {
        let (http, cookie) = (http.clone(), cookie.clone());
        // Two writers: turn-taking inside a process, compare-and-set between them.
        let url = if n % 2 == 0 {
            writer.url("/increment")
        } else {
            second_writer.url("/increment")
        };
        tokio::spawn(async move { get(&http, &url, Some(&cookie)).await })
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut counts: Vec<i64> = Vec::new();
    for answer in answers {
        let answer = answer.expect("the request task does not panic");
        if answer.status == 200 {
            counts.push(
                answer.json()["count"]
                    .as_i64()
                    .expect("count is an integer"),
            );
        }
        assert!(answer.set_cookie.is_none(), "the session keeps its id");
    }
    counts.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(counts.len()).expect("at most 100")).collect();
    assert_eq!(
        counts, expected,
        "every 200 saw a distinct count, with no gaps"
    );
    assert_eq!(counts.len(), 100, "with Redis up, every increment succeeds");
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(home.json()["count"], counts.len());
}

#[tokio::test]
async fn unknown_fields_survive_a_rust_save() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let id = "q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL";
    let original = r#"{"cookie":{"originalMaxAge":null,"expires":null,"secure":false,"httpOnly":true,"domain":null,"path":"/","sameSite":"lax","priority":"high"},"user":{"id":0.36535326065695717,"roles":["a","b"]},"flash":{"n":1.50,"big":12345678901234567890,"s":"é\u2028"},"count":41,"z":null}"#;
    let _: () = redis
        .connection()
        .set_ex(format!("sess:{id}"), original, 600)
        .expect("SET works");
    let cookie = cookie_for(id, SECRET);
    let answer = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(answer.body, r#"{"message":"Incremented Count","count":42}"#);
    assert_eq!(
        stored(&redis, id).as_deref(),
        Some(original.replace(r#""count":41"#, r#""count":42"#).as_str())
    );
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        home.body,
        r#"{"user":{"id":0.36535326065695717,"roles":["a","b"]},"count":42}"#
    );
}

#[tokio::test]
async fn ttl_follows_cookie_expires() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let expires = iso8601(in_an_hour);
    let id = "expiring-session";
    let value = format!(
        r#"{{"cookie":{{"originalMaxAge":3600000,"expires":"{expires}","httpOnly":true,"path":"/"}},"user":{{"id":0.5}}}}"#
    );
    let _: () = redis
        .connection()
        .set_ex(format!("sess:{id}"), &value, 60)
        .expect("SET works");
    let cookie = cookie_for(id, SECRET);
    assert_eq!(
        get(&http, &reader.url("/"), Some(&cookie)).await.status,
        200
    );
    let ttl: i64 = redis
        .connection()
        .ttl(format!("sess:{id}"))
        .expect("TTL works");
    assert!(
        (3590..=3600).contains(&ttl),
        "a read sets the TTL from expires, got {ttl}"
    );
    get(&http, &writer.url("/increment"), Some(&cookie)).await;
    let ttl: i64 = redis
        .connection()
        .ttl(format!("sess:{id}"))
        .expect("TTL works");
    assert!(
        (3590..=3600).contains(&ttl),
        "a save sets the TTL from expires, got {ttl}"
    );

    // Past its expiry: no session, and the key is removed.
    let past = iso8601(std::time::SystemTime::now() - std::time::Duration::from_secs(5));
    let value = value.replace(&expires, &past);
    let _: () = redis
        .connection()
        .set_ex(format!("sess:{id}"), &value, 60)
        .expect("SET works");
    assert_eq!(
        get(&http, &reader.url("/"), Some(&cookie)).await.status,
        403
    );
    assert_eq!(stored(&redis, id), None);
}

fn iso8601(time: std::time::SystemTime) -> String {
    let millis = time
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", millis / 1000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .expect("date(1) runs");
    format!(
        "{}.{:03}Z",
        String::from_utf8_lossy(&output.stdout).trim(),
        millis % 1000
    )
}

#[tokio::test]
async fn a_save_never_resurrects_a_destroyed_session() {
    let redis = RedisServer::start();
    let url = session::redis_url::RedisUrl::parse(&redis.url()).expect("valid URL");
    let store = session::store::RedisStore::new(&url).expect("store");
    let data =
        session::data::SessionData::new(&session::cookie::CookieOptions::default().stored_json());
    let (id, raw) = store.create(&data).await.expect("create works");
    store.destroy(&id).await.expect("destroy works");
    let mut changed = data.clone();
    changed.set("count", &1);
    let (saved, _) = store
        .compare_and_set(&id, &raw, &changed)
        .await
        .expect("save runs");
    assert_eq!(saved, session::store::Saved::Conflict);
    assert_eq!(
        store
            .rotate(&id, &raw, &changed)
            .await
            .expect("rotate runs"),
        None
    );
    assert_eq!(session_keys(&redis), Vec::<String>::new());
}

/// A login racing with increments on the same session: every increment lands exactly once
/// (counts over all sessions add up), and every cookie handed out names a live session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_racing_with_increments_loses_nothing() {
    let redis = RedisServer::start();
    let (writer, reader) = demo(&redis).await;
    let http = client();
    let cookie = get(&http, &writer.url("/increment"), None).await.cookie();
    let requests = (0..21).map(|n| {
        let (http, cookie) = (http.clone(), cookie.clone());
        let url = writer.url(if n == 10 { "/login" } else { "/increment" });
        tokio::spawn(async move { get(&http, &url, Some(&cookie)).await })
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut handed_out = Vec::new();
    for answer in answers {
        let answer = answer.expect("the request task does not panic");
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.set_cookie.is_some() {
            handed_out.push(answer.cookie());
        }
    }
    assert!(!handed_out.is_empty(), "the login hands out a new id");
    for cookie in &handed_out {
        let id = session_id(cookie, SECRET);
        assert!(
            stored(&redis, &id).is_some(),
            "cookie {cookie} names a live session"
        );
    }
    let total: i64 = session_keys(&redis)
        .iter()
        .map(|key| {
            let value = stored(&redis, &key["sess:".len()..]).expect("listed keys exist");
            let data: serde_json::Value = serde_json::from_str(&value).expect("sessions are JSON");
            data["count"].as_i64().expect("every session here counted")
        })
        .sum();
    assert_eq!(
        total, 21,
        "1 before the race + 20 increments, each applied once"
    );
    assert_eq!(
        stored(&redis, &session_id(&cookie, SECRET)),
        None,
        "the pre-login id is dead"
    );
    let logged_in = handed_out.iter().find(|cookie| {
        let id = session_id(cookie, SECRET);
        stored(&redis, &id).is_some_and(|value| value.contains(r#""user":"#))
    });
    let logged_in = logged_in.expect("one handed-out cookie is the logged-in session");
    assert_eq!(
        get(&http, &reader.url("/"), Some(logged_in)).await.status,
        200
    );
}
