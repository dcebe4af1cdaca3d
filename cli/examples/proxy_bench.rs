//! The stack proxy with a fixed table, for `bench/proxy/run.sh`: `bench.localhost` goes to one
//! deployment with one instance.
//!
//! `cargo run --release --example proxy_bench -- 127.0.0.1:9002 127.0.0.1:9001 [per-core|multi]`
//!
//! `per-core` (default) runs one single-threaded tokio runtime per core, each calling
//! `proxy::run` on a clone of the same listening socket (nginx's worker model: no cross-thread
//! wake-ups on a request's path); `multi` runs `proxy::run` once on tokio's multi-threaded
//! runtime (one worker per core).

use std::sync::Arc;

use stack::proxy::{self, Deployment, HostRoute, Instance, Routing, RoutingTable, Target};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9002".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let mode = args.next().unwrap_or_else(|| "per-core".into());

    let instance = Arc::new(Instance::new(1, upstream.parse()?));
    let deployment = Deployment::new("bench-abcdefghij", "bench", vec![instance], 0);
    let mut table = RoutingTable::new();
    table.insert(
        "bench.localhost",
        HostRoute::Target(Target::Deployment(Arc::new(deployment))),
    );
    let routing = Routing::new(table);
    let listener = std::net::TcpListener::bind(&listen)?;
    listener.set_nonblocking(true)?;
    println!("listening on {} ({mode})", listener.local_addr()?);

    let n_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if mode == "multi" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            proxy::run(listener, routing, ctrl_c()).await;
            Ok(())
        });
    }
    let mut workers = Vec::new();
    for _ in 0..n_cores {
        let listener = listener.try_clone()?;
        let routing = routing.clone();
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                proxy::run(listener, routing, ctrl_c()).await;
                Ok(())
            })
        }));
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("a proxy worker panicked"))??;
    }
    Ok(())
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}
