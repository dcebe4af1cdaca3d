//! A local Sentinel set for tests: one master, one replica and three sentinels
//! (`redis-server sentinel.conf --sentinel`, quorum 2) on loopback ports, with a short
//! `down-after-milliseconds` so a killed master's replica is promoted in a few seconds. Each
//! process has its own temp dir and is stopped by PID on drop.

use super::{free_port, poll_until, RedisServer};
use std::time::{Duration, Instant};

/// The master's name in the sentinels' configuration (the URL's `#fragment`).
pub const MASTER_NAME: &str = "mymaster";
/// `down-after-milliseconds`: how long the master may be unreachable before it is failed over.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);
const N_SENTINELS: usize = 3;
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// A running master, replica and 3 sentinels.
pub struct SentinelSet {
    /// The data nodes: index 0 starts as the master, 1 as its replica.
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    password: Option<String>,
}

impl SentinelSet {
    /// Starts a set whose data nodes have no password.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// Starts a set whose data nodes require `password` (the sentinels do not, as usual; they
    /// know it through `sentinel auth-pass`).
    pub fn start_with_password(password: &str) -> Self {
        Self::start_inner(Some(password.to_owned()))
    }

    fn start_inner(password: Option<String>) -> Self {
        let auth: Vec<String> = password
            .iter()
            .flat_map(|password| ["--masterauth".to_owned(), password.clone()])
            .collect();
        let master = RedisServer::start_node(password.clone(), false, false, free_port, |_| {
            (auth.clone(), None)
        });
        let master_port = master.port().to_string();
        let replica = RedisServer::start_node(password.clone(), false, false, free_port, |_| {
            let mut args = vec![
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                master_port.clone(),
            ];
            args.extend(auth.clone());
            (args, None)
        });
        let mut config = format!(
            "sentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {}\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            DOWN_AFTER.as_millis()
        );
        if let Some(password) = &password {
            config.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
        }
        let sentinels = (0..N_SENTINELS)
            .map(|_| {
                RedisServer::start_node(None, false, false, free_port, |_| {
                    (vec!["--sentinel".to_owned()], Some(config.clone()))
                })
            })
            .collect();
        let set = Self {
            servers: vec![master, replica],
            sentinels,
            password,
        };
        set.wait_until_ready(FORM_DEADLINE);
        set
    }

    /// Waits until every running sentinel knows the master, its replica and the other
    /// sentinels, and the replica has synced: only then can a failover happen.
    pub fn wait_until_ready(&self, deadline: Duration) {
        poll_until("the test Sentinel set is not ready", deadline, || {
            self.readiness()
        });
    }

    fn readiness(&self) -> Result<(), String> {
        let running: Vec<&RedisServer> = self.sentinels.iter().filter(|s| s.is_running()).collect();
        let n_servers = self.servers.iter().filter(|s| s.is_running()).count();
        for sentinel in &running {
            let fields = sentinel_master(sentinel)?;
            let field = |name: &str| {
                fields
                    .iter()
                    .position(|field| field == name)
                    .and_then(|at| fields.get(at + 1))
                    .and_then(|value| value.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            if field("num-other-sentinels") + 1 < running.len()
                || field("num-slaves") + 1 < n_servers
            {
                return Err(format!(
                    "sentinel {} does not know everyone yet",
                    sentinel.port()
                ));
            }
        }
        let master = self.master();
        for (index, server) in self.servers.iter().enumerate() {
            if index == master || !server.is_running() {
                continue;
            }
            let replication: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut server.connection())
                .map_err(|error| error.to_string())?;
            if !replication.contains("master_link_status:up") {
                return Err(format!("replica {} has not synced", server.port()));
            }
        }
        Ok(())
    }

    /// `redis-sentinel://[:password@]127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>#mymaster`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port()))
            .collect();
        match &self.password {
            Some(password) => format!(
                "redis-sentinel://:{password}@{}#{MASTER_NAME}",
                nodes.join(",")
            ),
            None => format!("redis-sentinel://{}#{MASTER_NAME}", nodes.join(",")),
        }
    }

    /// A data node: 0 started as the master, 1 as the replica.
    pub fn server(&self, index: usize) -> &RedisServer {
        &self.servers[index]
    }

    /// A sentinel (0 to 2).
    pub fn sentinel(&self, index: usize) -> &RedisServer {
        &self.sentinels[index]
    }

    /// The index of the data node the sentinels name as master now.
    pub fn master(&self) -> usize {
        self.master_by_sentinels()
            .unwrap_or_else(|why| panic!("cannot ask the sentinels for the master: {why}"))
    }

    fn master_by_sentinels(&self) -> Result<usize, String> {
        let mut last_error = "no sentinel is running".to_owned();
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let answer: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query(&mut sentinel.connection());
            match answer {
                Ok((_, port)) => {
                    return self
                        .servers
                        .iter()
                        .position(|server| server.port() == port)
                        .ok_or_else(|| format!("the sentinels name an unknown port {port}"))
                }
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(last_error)
    }

    /// Kills the current master with SIGKILL (by its PID); returns its index.
    pub fn kill_master(&mut self) -> usize {
        let master = self.master();
        self.servers[master].kill();
        master
    }

    /// Waits until the sentinels name a master other than `old_master` that says it is one;
    /// returns it with how long that took from now.
    pub fn wait_for_failover(&self, old_master: usize, deadline: Duration) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            if let Ok(master) = self.master_by_sentinels() {
                if master != old_master {
                    let role: redis::RedisResult<String> = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut self.servers[master].connection());
                    if role.is_ok_and(|role| role.contains("role:master")) {
                        return (master, started.elapsed());
                    }
                }
            }
            assert!(
                started.elapsed() < deadline,
                "the sentinels did not promote a new master within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `SENTINEL MASTER mymaster` as a flat list of names and values.
fn sentinel_master(sentinel: &RedisServer) -> Result<Vec<String>, String> {
    let mut connection = sentinel
        .client()
        .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(500)))
        .map_err(|error| error.to_string())?;
    redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(MASTER_NAME)
        .query(&mut connection)
        .map_err(|error| error.to_string())
}
