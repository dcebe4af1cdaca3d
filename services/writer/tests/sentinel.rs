//! The services on a real local Sentinel set (a master, a replica, 3 sentinels): the master is
//! found through the sentinels, and after a failover the store reaches the promoted master by
//! itself, with only 503 JSON in between.

mod common;
#[path = "common/demo.rs"]
mod demo;

use common::*;
use demo::demo_on;
use session::testing::sentinel::DOWN_AFTER;
use session::testing::SentinelSet;
use std::time::Duration;

const CANARY: &str = "sentinel-canary-pw-77c2";

#[tokio::test]
async fn demo_flow_through_the_sentinels() {
    let set = SentinelSet::start_with_password(CANARY);
    let (writer, reader) = demo_on(&set.url()).await;
    let http = client();
    let login = get(&http, &writer.url("/login"), None).await;
    assert_eq!(login.status, 200, "{login:?}");
    let cookie = login.cookie();
    let increment = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        increment.body,
        r#"{"message":"Incremented Count","count":1}"#
    );
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        home.body,
        format!(r#"{{"user":{},"count":1}}"#, login.raw("user"))
    );
    // The session is on the master the sentinels name, and replicated.
    let id = session_id(&cookie, SECRET);
    let master = set.master();
    let replica = 1 - master;
    let on = |index: usize| -> Option<String> {
        redis::cmd("GET")
            .arg(format!("sess:{id}"))
            .query(&mut set.server(index).connection())
            .expect("GET works")
    };
    assert!(on(master).is_some_and(|value| value.contains(r#""count":1"#)));
    let replicated = eventually(Duration::from_secs(2), || {
        let value = on(replica);
        async move { value.is_some() }
    })
    .await;
    assert!(replicated, "the replica has the session");
    let logout = get(&http, &writer.url("/logout"), Some(&cookie)).await;
    assert_eq!(logout.status, 200);
    assert_eq!(
        get(&http, &reader.url("/"), Some(&cookie)).await.status,
        403
    );
}

#[tokio::test]
async fn a_wrong_master_name_is_a_503_not_a_crash() {
    let set = SentinelSet::start();
    let url = set.url().replace("#mymaster", "#nosuchmaster");
    let writer = InProcess::start(writer::app, &url, SECRET).await;
    let answer = get(&client(), &writer.url("/increment"), None).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(answer.elapsed < Duration::from_millis(800), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_under_load() {
    let mut set = SentinelSet::start();
    let (writer, reader) = demo_on(&set.url()).await;
    let killed = std::cell::Cell::new(None);
    let set_ref = std::cell::RefCell::new(&mut set);
    let figures = failover::run(
        &writer.url(""),
        &reader.url(""),
        SECRET,
        |_busy_id| killed.set(Some(set_ref.borrow_mut().kill_master())),
        || {
            let old = killed.take().expect("killed first");
            set_ref
                .borrow()
                .wait_for_failover(old, Duration::from_secs(20));
        },
    )
    .await;
    figures.print("sentinel: kill -9 the master");
    failover::check(&figures, DOWN_AFTER);
}
