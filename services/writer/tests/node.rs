//! Cross-language: the Node peer (express-session + connect-redis, `templates/node`) and the
//! Rust services share one login and one count through one Redis.
//!
//! Starting Node is the slow part, so one pair of Node services and one pair of Rust services
//! serve every scenario of `node_and_rust_share_sessions`, each a function below; the same
//! scenarios run on a Redis Cluster and through Sentinel (node-redis's cluster and sentinel
//! clients under connect-redis).

mod common;

use common::*;
use session::testing::{RedisCluster, SentinelSet};

const NODE_SECRET: &str = "shared secret between node and rust";

/// Where the sessions are.
enum Store {
    Server(RedisServer),
    Cluster(RedisCluster),
    Sentinel(SentinelSet),
}

impl Store {
    /// A session's stored value, read from the node that holds it.
    fn stored(&self, id: &str) -> Option<String> {
        let key = format!("sess:{id}");
        let node = match self {
            Store::Server(redis) => return stored(redis, id),
            Store::Cluster(cluster) => cluster.node(cluster.master_of(&key)),
            Store::Sentinel(set) => set.server(set.master()),
        };
        redis::cmd("GET")
            .arg(&key)
            .query(&mut node.connection())
            .expect("GET works on the node")
    }
}

/// Both implementations of both services, on one store.
struct Peers {
    store: Store,
    node_writer: ChildService,
    node_reader: ChildService,
    rust_writer: InProcess,
    rust_reader: InProcess,
    http: reqwest::Client,
}

#[tokio::test]
async fn node_and_rust_share_sessions() {
    // Both sides also read the 2017 form of a password-protected URL.
    let redis = RedisServer::start_with_password("pw-2017");
    let url = format!("redis://127.0.0.1:{}?password=pw-2017", redis.port());
    every_scenario(Store::Server(redis), &url).await;
}

#[tokio::test]
async fn node_and_rust_share_sessions_on_a_cluster() {
    let cluster = RedisCluster::start_with_password("node-cluster-pw");
    // Node and Rust each discover the cluster from two seeds.
    let url = cluster.seed_url(&[0, 4]);
    every_scenario(Store::Cluster(cluster), &url).await;
}

#[tokio::test]
async fn node_and_rust_share_sessions_through_sentinel() {
    let set = SentinelSet::start_with_password("node-sentinel-pw");
    let url = set.url();
    every_scenario(Store::Sentinel(set), &url).await;
}

async fn every_scenario(store: Store, url: &str) {
    let peers = Peers {
        node_writer: node_service("writer", url, NODE_SECRET, true),
        node_reader: node_service("reader", url, NODE_SECRET, true),
        rust_writer: InProcess::start(writer::app, url, NODE_SECRET).await,
        rust_reader: InProcess::start(reader::app, url, NODE_SECRET).await,
        store,
        http: client(),
    };
    node_login_then_rust_reader_sees_the_user(&peers).await;
    rust_login_then_node_reader_sees_the_user(&peers).await;
    increments_alternating_between_node_and_rust_count_up(&peers).await;
    a_node_session_keeps_its_fields_after_a_rust_save(&peers).await;
}

async fn node_login_then_rust_reader_sees_the_user(peers: &Peers) {
    let http = &peers.http;
    let login = get(http, &peers.node_writer.url("/login"), None).await;
    assert_eq!(login.status, 200, "{login:?}");
    let home = get(http, &peers.rust_reader.url("/"), Some(&login.cookie())).await;
    let expected = format!(r#"{{"user":{}}}"#, login.raw("user"));
    assert_eq!((home.status, home.body), (200, expected));
    // Node's own logout then ends it for Rust as well.
    let logout = get(
        http,
        &peers.node_writer.url("/logout"),
        Some(&login.cookie()),
    )
    .await;
    assert_eq!(logout.body, r#"{"message":"logged out : count reset"}"#);
    let after = get(http, &peers.rust_reader.url("/"), Some(&login.cookie())).await;
    assert_eq!(after.status, 403);
}

async fn rust_login_then_node_reader_sees_the_user(peers: &Peers) {
    let http = &peers.http;
    let login = get(http, &peers.rust_writer.url("/login"), None).await;
    let cookie = login.cookie();
    get(http, &peers.rust_writer.url("/increment"), Some(&cookie)).await;
    let home = get(http, &peers.node_reader.url("/"), Some(&cookie)).await;
    let expected = format!(r#"{{"user":{},"count":1}}"#, login.raw("user"));
    assert_eq!((home.status, home.body.clone()), (200, expected));
    assert!(home.set_cookie.is_none());
    let forged = cookie_for(&session_id(&cookie, NODE_SECRET), "other");
    let wrong = get(http, &peers.node_reader.url("/"), Some(&forged)).await;
    assert_eq!(wrong.status, 403);
    // Rust's logout ends it for Node.
    get(http, &peers.rust_writer.url("/logout"), Some(&cookie)).await;
    let after = get(http, &peers.node_reader.url("/"), Some(&cookie)).await;
    assert_eq!(after.status, 403);
}

async fn increments_alternating_between_node_and_rust_count_up(peers: &Peers) {
    let http = &peers.http;
    let first = get(http, &peers.node_writer.url("/increment"), None).await;
    assert_eq!(first.body, r#"{"message":"Incremented Count","count":1}"#);
    let cookie = first.cookie();
    let urls = [
        peers.rust_writer.url("/increment"),
        peers.node_writer.url("/increment"),
        peers.rust_writer.url("/increment"),
    ];
    for (count, url) in (2..).zip(&urls) {
        let answer = get(http, url, Some(&cookie)).await;
        let expected = format!(r#"{{"message":"Incremented Count","count":{count}}}"#);
        assert_eq!(answer.body, expected, "{url}");
        assert!(answer.set_cookie.is_none(), "{url} keeps the session id");
    }
}

async fn a_node_session_keeps_its_fields_after_a_rust_save(peers: &Peers) {
    let http = &peers.http;
    let login = get(http, &peers.node_writer.url("/login"), None).await;
    let cookie = login.cookie();
    let id = session_id(&cookie, NODE_SECRET);
    let written_by_node = peers.store.stored(&id).expect("Node stored the session");
    let node_prefix = r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":{"id":"#;
    assert!(
        written_by_node.starts_with(node_prefix),
        "{written_by_node}"
    );

    let answer = get(http, &peers.rust_writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(answer.body, r#"{"message":"Incremented Count","count":1}"#);
    let after_rust = peers.store.stored(&id).expect("still stored");
    let node_fields = written_by_node.strip_suffix('}').expect("a JSON object");
    assert_eq!(after_rust, format!(r#"{node_fields},"count":1}}"#));

    let home = get(http, &peers.node_reader.url("/"), Some(&cookie)).await;
    assert_eq!(
        home.body,
        format!(r#"{{"user":{},"count":1}}"#, login.raw("user"))
    );
    // Node saves on top of Rust's save, and Rust reads Node's save back.
    let node_count = get(http, &peers.node_writer.url("/increment"), Some(&cookie)).await;
    assert_eq!(
        node_count.body,
        r#"{"message":"Incremented Count","count":2}"#
    );
    let rust_count = get(http, &peers.rust_writer.url("/increment"), Some(&cookie)).await;
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
        let status = (answer.status, answer.retry_after.as_deref());
        assert_eq!(status, (503, Some("1")), "{url}: {answer:?}");
        assert!(answer.set_cookie.is_none());
    }
}
