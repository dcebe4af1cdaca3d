//! A local Redis Cluster for tests: 6 `redis-server --cluster-enabled yes` nodes on loopback
//! ports, joined by `redis-cli --cluster create --cluster-replicas 1` into 3 masters with a
//! replica each, with a short `cluster-node-timeout` so a killed master's replica takes over in
//! about two seconds. Each node has its own temp dir and is stopped by PID on drop.

use super::{free_port, poll_until, RedisServer};
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

/// `cluster-node-timeout`: how long a master may be unreachable before it is failed over.
pub const CLUSTER_NODE_TIMEOUT: Duration = Duration::from_millis(1000);
const N_NODES: usize = 6;
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// A running 3-master, 3-replica cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    password: Option<String>,
}

/// One line of `CLUSTER NODES`, the parts tests need.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    id: String,
    master: bool,
    failed: bool,
    /// The master's id, for a replica.
    replicates: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts and forms a cluster without a password.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts and forms a cluster whose every node requires `password` (`requirepass` and
    /// `masterauth`).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> Self {
        let timeout = CLUSTER_NODE_TIMEOUT.as_millis().to_string();
        let nodes: Vec<RedisServer> = (0..N_NODES)
            .map(|_| {
                RedisServer::start_node(password.clone(), false, false, free_cluster_port, |_| {
                    let mut args: Vec<String> = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                        // Keep serving the slots that are still covered while one is failing
                        // over, as production clusters are usually set.
                        "--cluster-require-full-coverage",
                        "no",
                    ]
                    .map(str::to_owned)
                    .to_vec();
                    if let Some(password) = &password {
                        args.extend(["--masterauth".to_owned(), password.clone()]);
                    }
                    (args, None)
                })
            })
            .collect();
        let cluster = Self { nodes, password };
        cluster.create();
        cluster
    }

    fn create(&self) {
        let mut command = Command::new("redis-cli");
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port()));
        }
        command.args(["--cluster-replicas", "1", "--cluster-yes"]);
        if let Some(password) = &self.password {
            command.args(["-a", password, "--no-auth-warning"]);
        }
        let output = match command.output() {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-cli is not on PATH; the cluster tests need it to form a cluster.\n\
                 Install it: `apt-get install redis-tools` (Debian/Ubuntu) or `brew install redis` (macOS)."
            ),
            Err(error) => panic!("cannot run redis-cli: {error}"),
        };
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_until_healthy(FORM_DEADLINE);
    }

    /// Waits until every running node says `cluster_state:ok`, sees every other running node,
    /// every slot has a live master, and every replica of a live master has synced.
    pub fn wait_until_healthy(&self, deadline: Duration) {
        poll_until("the test cluster is not healthy", deadline, || {
            self.health()
        });
    }

    fn health(&self) -> Result<(), String> {
        let running: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        for node in &running {
            let info = info(node, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {} is not ok", node.port()));
            }
        }
        let lines = self.node_lines()?;
        let live_masters: Vec<&NodeLine> = lines
            .iter()
            .filter(|line| line.master && !line.failed)
            .collect();
        let covered: u32 = live_masters
            .iter()
            .flat_map(|line| &line.slots)
            .map(|(from, to)| u32::from(to - from) + 1)
            .sum();
        if covered != 16_384 {
            return Err(format!("live masters cover {covered} of 16384 slots"));
        }
        for node in &running {
            let replication = info(node, &["INFO", "replication"])?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Err(format!("replica {} has not synced", node.port()));
            }
        }
        Ok(())
    }

    /// `redis-cluster://[:password@]127.0.0.1:<port>,...` listing every node as a seed.
    pub fn url(&self) -> String {
        self.seed_url(&(0..N_NODES).collect::<Vec<_>>())
    }

    /// A cluster URL with only the nodes at `indices` as seeds (the rest are discovered).
    pub fn seed_url(&self, indices: &[usize]) -> String {
        let nodes: Vec<String> = indices
            .iter()
            .map(|&index| format!("127.0.0.1:{}", self.nodes[index].port()))
            .collect();
        match &self.password {
            Some(password) => format!("redis-cluster://:{password}@{}", nodes.join(",")),
            None => format!("redis-cluster://{}", nodes.join(",")),
        }
    }

    /// The node at `index` (0 to 5).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// How many nodes there are (6).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Indices of the live masters.
    pub fn masters(&self) -> Vec<usize> {
        let lines = self.node_lines().unwrap_or_else(|why| panic!("{why}"));
        lines
            .iter()
            .filter(|line| line.master && !line.failed)
            .filter_map(|line| self.index_of(line.port))
            .collect()
    }

    /// The index of the live master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> usize {
        self.master_of_slot(crate::id::key_slot(key.as_bytes()))
            .unwrap_or_else(|| panic!("no live master serves the slot of `{key}`"))
    }

    /// For each of the 16,384 slots, the index of the live master serving it (for tests that
    /// write many keys straight to the nodes that own them).
    pub fn slot_owners(&self) -> Vec<usize> {
        let lines = self.node_lines().unwrap_or_else(|why| panic!("{why}"));
        let mut owners = vec![usize::MAX; 16_384];
        for line in lines.iter().filter(|line| line.master && !line.failed) {
            let index = self.index_of(line.port).expect("every node is ours");
            for (from, to) in &line.slots {
                owners[usize::from(*from)..=usize::from(*to)].fill(index);
            }
        }
        assert!(
            !owners.contains(&usize::MAX),
            "every slot has a live master"
        );
        owners
    }

    fn master_of_slot(&self, slot: u16) -> Option<usize> {
        let lines = self.node_lines().ok()?;
        lines
            .iter()
            .filter(|line| line.master && !line.failed)
            .find(|line| {
                line.slots
                    .iter()
                    .any(|(from, to)| (*from..=*to).contains(&slot))
            })
            .and_then(|line| self.index_of(line.port))
    }

    /// The index of the replica of the master at `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let lines = self.node_lines().unwrap_or_else(|why| panic!("{why}"));
        let master_port = self.nodes[master].port();
        let master_id = &lines
            .iter()
            .find(|line| line.port == master_port)
            .expect("the master is in CLUSTER NODES")
            .id;
        lines
            .iter()
            .find(|line| line.replicates.as_ref() == Some(master_id))
            .and_then(|line| self.index_of(line.port))
            .unwrap_or_else(|| panic!("node {master_port} has no replica"))
    }

    /// Kills the node at `index` with SIGKILL (by its PID) and waits for it to exit.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Waits until `key`'s slot is served by a live master other than `old_master`, and returns
    /// it with how long that took from now.
    pub fn wait_for_new_master(
        &self,
        key: &str,
        old_master: usize,
        deadline: Duration,
    ) -> (usize, Duration) {
        let started = Instant::now();
        let slot = crate::id::key_slot(key.as_bytes());
        loop {
            if let Some(master) = self.master_of_slot(slot).filter(|m| *m != old_master) {
                let role = info(&self.nodes[master], &["INFO", "replication"]).unwrap_or_default();
                if role.contains("role:master") {
                    return (master, started.elapsed());
                }
            }
            assert!(
                started.elapsed() < deadline,
                "no replica took over the slot of `{key}` within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port() == port)
    }

    /// `CLUSTER NODES` as seen by the first running node that answers.
    fn node_lines(&self) -> Result<Vec<NodeLine>, String> {
        let mut last_error = "no node is running".to_owned();
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            match info(node, &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(text.lines().filter_map(parse_node_line).collect()),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

/// A command's bulk-string answer from one node, with a short timeout.
fn info(node: &RedisServer, args: &[&str]) -> Result<String, String> {
    let mut connection = node
        .client()
        .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
        .map_err(|error| format!("node {}: {error}", node.port()))?;
    let _ = connection.set_read_timeout(Some(Duration::from_secs(2)));
    let mut command = redis::cmd(args[0]);
    command.arg(&args[1..]);
    command
        .query::<String>(&mut connection)
        .map_err(|error| format!("node {}: {error}", node.port()))
}

/// `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges>...`.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let port = fields[1]
        .split('@')
        .next()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()?;
    let flags = fields[2];
    let slots = fields[8..]
        .iter()
        .filter(|range| !range.starts_with('['))
        .filter_map(|range| match range.split_once('-') {
            Some((from, to)) => Some((from.parse().ok()?, to.parse().ok()?)),
            None => range.parse().ok().map(|slot| (slot, slot)),
        })
        .collect();
    Some(NodeLine {
        port,
        id: fields[0].to_owned(),
        master: flags.contains("master"),
        failed: flags.contains("fail") && !flags.contains("fail?") || flags.contains("noaddr"),
        replicates: (fields[3] != "-").then(|| fields[3].to_owned()),
        slots,
    })
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10_000)).is_ok() {
            return port;
        }
    }
}
