//! The services on a real local Redis Cluster (3 masters, 3 replicas): the demo flow with nodes
//! discovered from one seed, saves that follow `MOVED` and `ASK` while a slot migrates, login's
//! id rotation inside one slot, and a master killed under load.

mod common;
#[path = "common/demo.rs"]
mod demo;

use common::*;
use demo::demo_on;
use session::testing::cluster::CLUSTER_NODE_TIMEOUT;
use session::testing::RedisCluster;
use std::time::Duration;

/// A password that must never show up in output (`common` checks nothing; the tests do).
const CANARY: &str = "cluster-canary-pw-5e1d";

/// A key as one node holds it (a direct connection, not cluster-aware; `ASKING` first so an
/// importing node answers for a key it received by `MIGRATE`).
fn node_get(cluster: &RedisCluster, index: usize, key: &str) -> Option<String> {
    let (_, value): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(key)
        .query(&mut cluster.node(index).connection())
        .expect("GET on a node works");
    value
}

fn node_id(cluster: &RedisCluster, index: usize) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut cluster.node(index).connection())
        .expect("CLUSTER MYID works")
}

#[tokio::test]
async fn demo_flow_on_a_cluster_found_from_one_seed() {
    let cluster = RedisCluster::start_with_password(CANARY);
    // One seed: the other five nodes are discovered.
    let url = cluster.seed_url(&[3]);
    let (writer, reader) = demo_on(&url).await;
    let http = client();
    let anonymous = get(&http, &reader.url("/"), None).await;
    assert_eq!(anonymous.status, 403);
    // Sessions land on every master: 30 users, each on the master of its slot.
    let mut masters_used = std::collections::HashSet::new();
    for _ in 0..30 {
        let login = get(&http, &writer.url("/login"), None).await;
        assert_eq!(login.status, 200, "{login:?}");
        let cookie = login.cookie();
        for n in 1..=3 {
            let increment = get(&http, &writer.url("/increment"), Some(&cookie)).await;
            assert_eq!(
                increment.body,
                format!(r#"{{"message":"Incremented Count","count":{n}}}"#)
            );
        }
        let home = get(&http, &reader.url("/"), Some(&cookie)).await;
        assert_eq!(
            home.body,
            format!(r#"{{"user":{},"count":3}}"#, login.raw("user"))
        );
        let id = session_id(&cookie, SECRET);
        let key = format!("sess:{id}");
        let master = cluster.master_of(&key);
        masters_used.insert(master);
        let stored = node_get(&cluster, master, &key).expect("the key is on its slot's master");
        assert!(stored.contains(r#""count":3"#), "{stored}");
        let logout = get(&http, &writer.url("/logout"), Some(&cookie)).await;
        assert_eq!(logout.body, r#"{"message":"logged out : count reset"}"#);
        assert_eq!(
            get(&http, &reader.url("/"), Some(&cookie)).await.status,
            403
        );
        assert_eq!(node_get(&cluster, master, &key), None);
    }
    assert_eq!(
        masters_used.len(),
        3,
        "30 sessions spread over all 3 masters"
    );
}

#[tokio::test]
async fn login_rotates_the_id_within_its_slot_in_one_step() {
    let cluster = RedisCluster::start();
    let (writer, reader) = demo_on(&cluster.url()).await;
    let http = client();
    for _ in 0..10 {
        // A session with data before login (an anonymous increment)...
        let before = get(&http, &writer.url("/increment"), None).await;
        let old_cookie = before.cookie();
        let old_id = session_id(&old_cookie, SECRET);
        let old_key = format!("sess:{old_id}");
        let master = cluster.master_of(&old_key);
        // ...is moved to a new id by login, keeping its count, in the same slot and so on the
        // same master, where one script moved it.
        let login = get(&http, &writer.url("/login"), Some(&old_cookie)).await;
        assert_eq!(login.status, 200, "{login:?}");
        let new_id = session_id(&login.cookie(), SECRET);
        assert_ne!(new_id, old_id);
        let new_key = format!("sess:{new_id}");
        assert_eq!(
            session::id::key_slot(new_key.as_bytes()),
            session::id::key_slot(old_key.as_bytes())
        );
        assert_eq!(node_get(&cluster, master, &old_key), None, "old key gone");
        let stored = node_get(&cluster, master, &new_key).expect("new key on the same master");
        assert!(stored.contains(r#""count":1"#), "{stored}");
        let home = get(&http, &reader.url("/"), Some(&login.cookie())).await;
        assert_eq!(
            home.body,
            format!(r#"{{"user":{},"count":1}}"#, login.raw("user"))
        );
        // The planted old id is worthless after login.
        assert_eq!(
            get(&http, &reader.url("/"), Some(&old_cookie)).await.status,
            403
        );
    }
}

#[tokio::test]
async fn saves_follow_ask_and_moved_while_a_slot_migrates() {
    let cluster = RedisCluster::start();
    let (writer, reader) = demo_on(&cluster.url()).await;
    let http = client();
    let login = get(&http, &writer.url("/login"), None).await;
    let cookie = login.cookie();
    let key = format!("sess:{}", session_id(&cookie, SECRET));
    let slot = session::id::key_slot(key.as_bytes());
    let source = cluster.master_of(&key);
    let target = *cluster
        .masters()
        .iter()
        .find(|master| **master != source)
        .expect("3 masters");
    let (source_id, target_id) = (node_id(&cluster, source), node_id(&cluster, target));
    let setslot = |node: usize, args: &[&str]| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(args)
            .exec(&mut cluster.node(node).connection())
            .expect("CLUSTER SETSLOT works");
    };
    // Mid-migration: the key already moved to the target, so the source answers ASK.
    setslot(target, &["IMPORTING", &source_id]);
    setslot(source, &["MIGRATING", &target_id]);
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(cluster.node(target).port())
        .arg(&key)
        .arg(0)
        .arg(5000)
        .exec(&mut cluster.node(source).connection())
        .expect("MIGRATE works");
    for n in 1..=3 {
        let increment = get(&http, &writer.url("/increment"), Some(&cookie)).await;
        assert_eq!(
            increment.body,
            format!(r#"{{"message":"Incremented Count","count":{n}}}"#),
            "a compare-and-set answered ASK is sent to the importing node"
        );
        let home = get(&http, &reader.url("/"), Some(&cookie)).await;
        assert_eq!(home.status, 200, "a read answered ASK follows it: {home:?}");
    }
    let stored = node_get(&cluster, target, &key).expect("the key is on the target");
    assert!(stored.contains(r#""count":3"#), "{stored}");
    // Migration done: every master learns the new owner; the source now answers MOVED.
    for master in cluster.masters() {
        setslot(master, &["NODE", &target_id]);
    }
    let increment = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        increment.body, r#"{"message":"Incremented Count","count":4}"#,
        "a compare-and-set answered MOVED is sent to the new owner"
    );
    let logout = get(&http, &writer.url("/logout"), Some(&cookie)).await;
    assert_eq!(logout.status, 200);
    assert_eq!(node_get(&cluster, target, &key), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_of_a_busy_session_under_load() {
    let mut cluster = RedisCluster::start();
    let (writer, reader) = demo_on(&cluster.url()).await;
    let killed = std::cell::Cell::new(None);
    let cluster_ref = std::cell::RefCell::new(&mut cluster);
    let figures = failover::run(
        &writer.url(""),
        &reader.url(""),
        SECRET,
        |busy_id| {
            let key = format!("sess:{busy_id}");
            let mut cluster = cluster_ref.borrow_mut();
            let master = cluster.master_of(&key);
            cluster.kill(master);
            killed.set(Some((master, key)));
        },
        || {
            let (master, key) = killed.take().expect("killed first");
            cluster_ref
                .borrow()
                .wait_for_new_master(&key, master, Duration::from_secs(15));
        },
    )
    .await;
    figures.print("cluster: kill -9 the master of a busy session's slot");
    failover::check(&figures, CLUSTER_NODE_TIMEOUT);
}

/// The data commands a master ran since its last `CONFIG RESETSTAT`: `command_calls` less
/// the cluster client's topology queries and redirections.
fn data_commands(cluster: &RedisCluster, index: usize) -> Vec<(String, u64)> {
    command_calls(cluster.node(index))
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with("cluster") && !matches!(name.as_str(), "asking" | "readonly")
        })
        .collect()
}

#[tokio::test]
async fn a_read_is_one_getex_and_a_save_one_script_on_the_master_of_the_slot() {
    let cluster = RedisCluster::start();
    let (writer, reader) = demo_on(&cluster.url()).await;
    let http = client();
    let login = get(&http, &writer.url("/login"), None).await;
    let cookie = login.cookie();
    // Warm both services' connections and the script cache.
    assert_eq!(
        get(&http, &writer.url("/increment"), Some(&cookie))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&http, &reader.url("/"), Some(&cookie)).await.status,
        200
    );
    let master = cluster.master_of(&format!("sess:{}", session_id(&cookie, SECRET)));
    let reset = || reset_command_stats(cluster.node(master));
    reset();
    let home = get(&http, &reader.url("/"), Some(&cookie)).await;
    assert_eq!(home.status, 200);
    assert_eq!(data_commands(&cluster, master), [("getex".to_owned(), 1)]);
    reset();
    let increment = get(&http, &writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        increment.body,
        r#"{"message":"Incremented Count","count":2}"#
    );
    // One read and one script; the script's own GET and SET run inside Redis (commandstats
    // counts them too), not as round trips.
    let calls = data_commands(&cluster, master);
    let expected = [("evalsha", 1), ("get", 1), ("getex", 1), ("set", 1)];
    assert_eq!(
        calls,
        expected.map(|(name, n)| (name.to_owned(), n)),
        "one GETEX and one EVALSHA on the master of the slot"
    );
}
