//! The stack proxy with a fixed table, for `bench/proxy/run.sh`: `bench.localhost` goes to one
//! deployment with one instance.
//!
//! `cargo run --release --example proxy_bench -- 127.0.0.1:9002 127.0.0.1:9001`

use std::sync::Arc;

use stack::proxy::{self, Deployment, HostRoute, Instance, Routing, RoutingTable, Target};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9002".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let instance = Arc::new(Instance::new(1, upstream.parse()?));
    let deployment = Deployment::new("bench-abcdefghij", "bench", vec![instance], 0);
    let mut table = RoutingTable::new();
    table.insert(
        "bench.localhost",
        HostRoute::Target(Target::Deployment(Arc::new(deployment))),
    );
    let listener = TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    proxy::run(listener, Routing::new(table), shutdown).await;
    Ok(())
}
