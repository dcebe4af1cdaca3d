//! Which servers `stack redis` talks to for a URL: the one server; the master a Sentinel set
//! names now; or every master of a Redis Cluster (found with `CLUSTER NODES` through redis-rs's
//! cluster client, which also routes the commands about one key).
//!
//! Owns connecting, each step bounded by the caller's timeouts. Scans, deletes in bulk and
//! keyspace notifications go to each server in [`Topology::servers`] (on a cluster a key lives
//! on one master only and notifications are local to a node); commands about one key go
//! through [`Topology::keyed`]. It never prints and never writes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use session::redis_url::{Node, RedisAddr, RedisUrl};

/// One server that holds keys.
pub struct Server {
    /// `host:port` (or the socket path), for messages.
    pub label: String,
    pub client: redis::Client,
    pub connection: MultiplexedConnection,
}

/// How a command about one key is sent.
#[derive(Clone)]
pub enum Keyed {
    Server(MultiplexedConnection),
    /// Routed by the key's slot, following `MOVED` and `ASK`.
    Cluster(ClusterConnection),
}

/// The servers behind a URL.
pub struct Topology {
    pub servers: Vec<Server>,
    pub keyed: Keyed,
    /// Keys on one server may sit in different slots (no multi-key commands across them).
    pub is_cluster: bool,
}

/// Connects to every server the URL leads to. `url` carries the TLS CA already.
pub async fn connect(
    url: &RedisUrl,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<Topology> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(response_timeout);
    let server = |label: String, client: redis::Client| {
        let config = config.clone();
        async move {
            let connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok::<_, redis::RedisError>(Server {
                label,
                client,
                connection,
            })
        }
    };
    match &url.addr {
        RedisAddr::Tcp { .. } | RedisAddr::Unix(_) => {
            let server = server(url.to_string(), url.client()?).await?;
            Ok(Topology {
                keyed: Keyed::Server(server.connection.clone()),
                servers: vec![server],
                is_cluster: false,
            })
        }
        RedisAddr::Sentinel { .. } => {
            let (mut sentinel, master, node_info) = url.sentinel()?;
            let client = tokio::time::timeout(
                connect_timeout,
                sentinel.async_master_for(&master, Some(&node_info)),
            )
            .await
            .map_err(|_| timed_out("asking the sentinels for the master"))??;
            let info = client.get_connection_info();
            let label = format!("{} (master `{master}`)", info.addr);
            let server = server(label, client).await?;
            Ok(Topology {
                keyed: Keyed::Server(server.connection.clone()),
                servers: vec![server],
                is_cluster: false,
            })
        }
        RedisAddr::Cluster { nodes } => {
            let mut builder =
                ClusterClientBuilder::new(nodes.iter().map(|node| url.node_info(node)))
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout);
            if let Some(password) = url.password() {
                builder = builder.password(password.to_owned());
            }
            if let Some(username) = &url.username {
                builder = builder.username(username.clone());
            }
            let mut cluster = builder.build()?.get_async_connection().await?;
            let listing: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut cluster)
                .await?;
            let masters = masters_in(&listing);
            if masters.is_empty() {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::ClusterDown,
                    "CLUSTER NODES lists no live master serving slots",
                )));
            }
            let mut servers = Vec::with_capacity(masters.len());
            for node in masters {
                servers.push(
                    server(node.to_string(), redis::Client::open(url.node_info(&node))?).await?,
                );
            }
            Ok(Topology {
                servers,
                keyed: Keyed::Cluster(cluster),
                is_cluster: true,
            })
        }
    }
}

impl Topology {
    /// `PING` to every server; the first failure names its server.
    pub async fn ping_every_server(&mut self) -> Result<(), (String, redis::RedisError)> {
        for server in &mut self.servers {
            redis::cmd("PING")
                .query_async::<()>(&mut server.connection)
                .await
                .map_err(|error| (server.label.clone(), error))?;
        }
        Ok(())
    }
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer {what}"),
    ))
}

/// The live masters that serve slots, from `CLUSTER NODES`
/// (`<id> <ip:port@bus[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slots>...`).
pub fn masters_in(listing: &str) -> Vec<Node> {
    let mut masters: Vec<Node> = listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = *fields.get(2)?;
            let serves_slots = fields.len() > 8;
            let live = !flags
                .split(',')
                .any(|flag| flag == "fail" || flag == "noaddr");
            if !(flags.split(',').any(|flag| flag == "master") && live && serves_slots) {
                return None;
            }
            let address = fields[1].split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(Node {
                host: host.trim_matches(['[', ']']).to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect();
    masters.sort();
    masters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_live_masters_that_serve_slots() {
        let listing = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 1 1 connected
e5 127.0.0.1:7004@17004 master - 0 1 5 connected 10923-16383 [10000->-b2]
f6 127.0.0.1:7005@17005 master - 0 1 0 connected
";
        let ports: Vec<u16> = masters_in(listing).iter().map(|node| node.port).collect();
        assert_eq!(ports, [7000, 7001, 7004]);
    }
}
