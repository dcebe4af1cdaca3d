//! `stack redis keys|get|del|flush|watch` past one server, as the real binary: across every
//! master of a real local Redis Cluster (`session::testing::RedisCluster`: 3 masters, 3
//! replicas) and through a real Sentinel set (`SentinelSet`), before and after a failover. The
//! passwords are canaries that must never show.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use session::cookie::{encode_uri_component, sign};
use session::id::key_slot;
use session::testing::{RedisCluster, RedisServer, SentinelSet};

mod support;
use support::{Project, Up};

const SECRET: &str = "cluster-cmd-secret-canary";
const CLUSTER_CANARY: &str = "cluster-cmd-pw-canary-91ab";
const SENTINEL_CANARY: &str = "sentinel-cmd-pw-canary-3c0d";
const LINE_DEADLINE: Duration = Duration::from_secs(10);

fn project(redis_url: &str) -> Project {
    Project::empty()
        .with_env("REDIS_SESSION_URL", redis_url)
        .with_env("SESSION_SECRET", SECRET)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

fn session_json(index: usize) -> String {
    format!(
        r#"{{"cookie":{{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}},"user":{{"id":{}}},"count":{index}}}"#,
        index as f64 / 1e5
    )
}

/// Writes `n` sessions, each straight to the master of its slot, pipelined per master.
fn populate(cluster: &RedisCluster, n: usize) -> BTreeSet<String> {
    let owners = cluster.slot_owners();
    let mut pipes: Vec<redis::Pipeline> = (0..cluster.len()).map(|_| redis::pipe()).collect();
    let mut ids = BTreeSet::new();
    for index in 0..n {
        let id = format!("id{index:06}-abcdefghijklmnopqrstuv");
        let key = format!("sess:{id}");
        pipes[owners[usize::from(key_slot(key.as_bytes()))]]
            .cmd("SET")
            .arg(&key)
            .arg(session_json(index))
            .arg("EX")
            .arg(3600)
            .ignore();
        ids.insert(id);
    }
    for (index, pipe) in pipes.iter().enumerate() {
        if !pipe.is_empty() {
            pipe.exec(&mut cluster.node(index).connection())
                .expect("pipelined SETs on a master");
        }
    }
    ids
}

/// Calls of `command` on one node since its last `CONFIG RESETSTAT`.
fn command_calls(node: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node.connection())
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a number of calls"))
}

fn keys_on(node: &RedisServer) -> usize {
    redis::cmd("DBSIZE")
        .query::<usize>(&mut node.connection())
        .expect("DBSIZE")
}

/// A key that is not a session, on the master of its slot; nothing may ever touch it.
fn put_other_key(cluster: &RedisCluster, key: &str) -> usize {
    let master = cluster.master_of(key);
    redis::cmd("SET")
        .arg(key)
        .arg("not a session")
        .exec(&mut cluster.node(master).connection())
        .expect("SET");
    master
}

#[test]
fn keys_get_del_and_flush_across_every_master_of_a_cluster() {
    let cluster = RedisCluster::start_with_password(CLUSTER_CANARY);
    let project = project(&cluster.seed_url(&[1]));
    let ids = populate(&cluster, 100_000);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    for &master in &masters {
        assert!(
            keys_on(cluster.node(master)) > 30_000,
            "the sessions are spread over the 3 masters"
        );
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(&mut cluster.node(master).connection())
            .expect("RESETSTAT");
    }
    let other = put_other_key(&cluster, "user:1");

    let started = Instant::now();
    let run = project.stack(&["redis", "keys", "--json"]);
    let elapsed = started.elapsed();
    assert_eq!(run.code, 0, "{}", run.all());
    let listed = json(&run.stdout);
    assert_eq!(listed["total"], 100_000);
    let listed_ids: BTreeSet<String> = listed["sessions"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(listed_ids, ids);
    assert_eq!(
        listed["redis"],
        format!("redis-cluster://:***@127.0.0.1:{}", cluster.node(1).port())
    );
    for &master in &masters {
        let node = cluster.node(master);
        assert_eq!(command_calls(node, "keys"), 0, "KEYS was used");
        assert!(command_calls(node, "scan") >= 30, "every master is scanned");
    }
    // The issue's figure is for the optimised build (bench/redis-cluster); this debug build
    // has its own, looser bound.
    let bound = if cfg!(debug_assertions) { 15 } else { 3 };
    assert!(
        elapsed < Duration::from_secs(bound),
        "100,000 sessions on 3 masters took {elapsed:?}"
    );
    let table = project.stack(&["redis", "keys", "id00001*"]);
    assert_eq!(table.code, 0, "{}", table.all());
    assert!(
        table
            .stdout
            .contains("> 10 sessions in redis-cluster://:***@"),
        "{}",
        table.stdout
    );

    // get by id and by signed cookie: routed to the master of the id's slot.
    let id = "id012345-abcdefghijklmnopqrstuv";
    let got = json(&project.stack_ok(&["redis", "get", id, "--json"]));
    assert_eq!(got["session"]["count"], 12345);
    let cookie = format!("connect.sid={}", encode_uri_component(&sign(id, SECRET)));
    let run = project.stack(&["redis", "get", &cookie]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Cookie verifies"), "{}", run.stdout);

    // del: three ids on (most likely) three masters, one missing.
    let owners = cluster.slot_owners();
    let doomed: Vec<String> = masters
        .iter()
        .map(|master| {
            ids.iter()
                .find(|id| {
                    owners[usize::from(key_slot(format!("sess:{id}").as_bytes()))] == *master
                })
                .expect("each master holds sessions")
                .clone()
        })
        .collect();
    let mut args = vec!["redis", "del"];
    args.extend(doomed.iter().map(String::as_str));
    args.push("no-such-session");
    let run = project.stack(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stdout.contains("Deleted 3 sessions"), "{}", run.all());
    assert!(
        run.stderr.contains("no such session: `no-such-session`"),
        "{}",
        run.all()
    );
    let after = json(&project.stack_ok(&["redis", "keys", "--json"]));
    assert_eq!(after["total"], 99_997);

    let run = project.stack(&["redis", "flush", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains("Deleted 99997 sessions"),
        "{}",
        run.all()
    );
    for &master in &masters {
        let left = if master == other { 1 } else { 0 };
        assert_eq!(keys_on(cluster.node(master)), left, "only user:1 is left");
    }
    for run in [&table, &run] {
        assert!(!run.all().contains(CLUSTER_CANARY), "{}", run.all());
    }
}

#[test]
fn watch_follows_sessions_on_every_master() {
    let cluster = RedisCluster::start_with_password(CLUSTER_CANARY);
    let project = project(&cluster.url());
    // Off on one master: the error names that node and says how to turn them on.
    for master in cluster.masters() {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KEA")
            .exec(&mut cluster.node(master).connection())
            .expect("CONFIG SET");
    }
    let last = *cluster.masters().last().expect("3 masters");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .exec(&mut cluster.node(last).connection())
        .expect("CONFIG SET");
    let run = project.stack(&["redis", "watch"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("(node 127.0.0.1:{})", cluster.node(last).port())),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains(CLUSTER_CANARY), "{}", run.all());
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .exec(&mut cluster.node(last).connection())
        .expect("CONFIG SET");

    let mut watch = Up::spawn(&project, &["redis", "watch"], &[]);
    watch.wait_for_parts(&["> Watching sessions in ", "0 known"], 1, LINE_DEADLINE);
    // One session on each master: created, changed, deleted, each seen.
    let owners = cluster.slot_owners();
    for master in cluster.masters() {
        let id = (0..)
            .map(|n| format!("watched-{n}"))
            .find(|id| owners[usize::from(key_slot(format!("sess:{id}").as_bytes()))] == master)
            .expect("some id lands on each master");
        let mut node = cluster.node(master).connection();
        let key = format!("sess:{id}");
        redis::cmd("SET")
            .arg(&key)
            .arg(session_json(1))
            .arg("EX")
            .arg(60)
            .exec(&mut node)
            .expect("SET");
        let line = watch.wait_for_parts(&["created", &id], 1, LINE_DEADLINE);
        assert!(line.contains(r#"user {"id":"#), "{line}");
        redis::cmd("SET")
            .arg(&key)
            .arg(session_json(2))
            .arg("EX")
            .arg(60)
            .exec(&mut node)
            .expect("SET");
        let line = watch.wait_for_parts(&["changed", &id], 1, LINE_DEADLINE);
        assert!(line.contains("count 1 → 2"), "{line}");
        redis::cmd("DEL").arg(&key).exec(&mut node).expect("DEL");
        watch.wait_for_parts(&["deleted", &id], 1, LINE_DEADLINE);
    }
    assert!(!watch.output().contains(CLUSTER_CANARY));
}

#[test]
fn every_command_works_through_sentinel_before_and_after_a_failover() {
    let mut set = SentinelSet::start_with_password(SENTINEL_CANARY);
    let project = project(&set.url());
    let master = set.master();
    let mut connection = set.server(master).connection();
    for index in 0..50 {
        redis::cmd("SET")
            .arg(format!("sess:s{index:03}"))
            .arg(session_json(index))
            .arg("EX")
            .arg(3600)
            .exec(&mut connection)
            .expect("SET");
    }
    // On both data nodes: CONFIG SET is not replicated, and the replica becomes the master.
    for index in 0..2 {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KEA")
            .exec(&mut set.server(index).connection())
            .expect("CONFIG SET");
    }
    let run = project.stack(&["redis", "keys"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stdout.contains(&format!(
            "> 50 sessions in redis-sentinel://:***@127.0.0.1:{}",
            set.sentinel(0).port()
        )),
        "{}",
        run.stdout
    );
    let got = json(&project.stack_ok(&["redis", "get", "s007", "--json"]));
    assert_eq!(got["session"]["count"], 7);
    let mut watch = Up::spawn(&project, &["redis", "watch"], &[]);
    watch.wait_for_parts(&["> Watching sessions in ", "50 known"], 1, LINE_DEADLINE);
    assert!(project.stack(&["redis", "del", "s001"]).code == 0);
    watch.wait_for_parts(&["deleted", "s001"], 1, LINE_DEADLINE);

    // Failover: the watch says it lost its master, follows the sentinels to the new one and
    // goes on; every other command finds the new master too.
    let old = set.kill_master();
    let lost = watch.wait_for("reconnecting", LINE_DEADLINE);
    assert!(!lost.contains(SENTINEL_CANARY), "{lost}");
    let (new, _) = set.wait_for_failover(old, Duration::from_secs(20));
    assert_ne!(new, old);
    watch.wait_for_parts(
        &["> Reconnected to ", "49 known"],
        1,
        Duration::from_secs(30),
    );
    redis::cmd("SET")
        .arg("sess:after-failover")
        .arg(session_json(9))
        .arg("EX")
        .arg(60)
        .exec(&mut set.server(new).connection())
        .expect("SET on the promoted master");
    watch.wait_for_parts(&["created", "after-failover"], 1, LINE_DEADLINE);
    support::wait_until(
        "the new master to have every session",
        LINE_DEADLINE,
        || json(&project.stack_ok(&["redis", "keys", "--json"]))["total"] == 50,
    );
    let run = project.stack(&["redis", "del", "s002"]);
    assert_eq!(run.code, 0, "{}", run.all());
    watch.wait_for_parts(&["deleted", "s002"], 1, LINE_DEADLINE);
    let run = project.stack(&["redis", "flush", "--yes"]);
    assert!(run.stdout.contains("Deleted 49 sessions"), "{}", run.all());
    let left: usize = redis::cmd("DBSIZE")
        .query(&mut set.server(new).connection())
        .expect("DBSIZE");
    assert_eq!(left, 0);
    assert!(!run.all().contains(SENTINEL_CANARY));
}

#[test]
fn stack_up_probes_a_cluster_and_a_sentinel_set_and_stack_redis_finds_them_through_it() {
    for tool in ["node", "npm"] {
        support::require(tool);
    }
    let cluster = RedisCluster::start_with_password(CLUSTER_CANARY);
    let set = SentinelSet::start_with_password(SENTINEL_CANARY);
    for (url, shown, canary) in [
        (
            cluster.seed_url(&[2]),
            format!("redis-cluster://:***@127.0.0.1:{}", cluster.node(2).port()),
            CLUSTER_CANARY,
        ),
        (
            set.url(),
            format!("redis-sentinel://:***@127.0.0.1:{}", set.sentinel(0).port()),
            SENTINEL_CANARY,
        ),
    ] {
        let project = Project::fixture("node-pair");
        let env = format!("REDIS_SESSION_URL={url}");
        let mut up = Up::start(&project, &["hello", "-e", &env]);
        let line = up.wait_for("(REDIS_SESSION_URL) answers", Duration::from_secs(60));
        assert!(line.contains(&shown), "{line}");
        up.wait_ready("hello");
        assert!(
            !project.path().join(".stack/redis").exists(),
            "no managed Redis when the URL is set"
        );
        // Asked with no REDIS_SESSION_URL of its own, `stack redis` uses the running stack's.
        let run = project.stack(&["redis", "keys"]);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stdout.contains(&shown), "{}", run.stdout);
        for text in [up.output(), run.all()] {
            assert!(!text.contains(canary), "the password leaked:\n{text}");
        }
    }
    // A cluster nobody runs: a warning with the masked URL, and the stack still starts.
    let dead = format!(
        "REDIS_SESSION_URL=redis-cluster://:{CLUSTER_CANARY}@127.0.0.1:{}",
        support::free_port()
    );
    let project = Project::fixture("node-pair");
    let mut up = Up::start(&project, &["hello", "-e", &dead]);
    let line = up.wait_for(
        "(REDIS_SESSION_URL) does not answer",
        Duration::from_secs(60),
    );
    assert!(line.contains("redis-cluster://:***@127.0.0.1:"), "{line}");
    up.wait_ready("hello");
    assert!(!up.output().contains(CLUSTER_CANARY));
}
