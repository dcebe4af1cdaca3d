//! The stack proxy with a fixed table, for `bench/proxy/run.sh`: `bench.localhost` goes to one
//! deployment with one instance.
//!
//! `cargo run --release --example proxy_bench -- 127.0.0.1:9002 127.0.0.1:9001 [per-core|multi]`
//!
//! `per-core` (default) is `proxy::run_on_threads` with a thread per core; `multi` is
//! `proxy::run` on tokio's multi-threaded runtime (a worker per core). SIGINT stops it.
//!
//! With `PROXY_BENCH_TLS=127.0.0.1:PORT` (per-core only), it also serves TLS there as
//! `stack up --https-port` does, with the local CA of `STACK_HOME` (`bench/proxy/tls.sh`).
//! `localhost` routes as `bench.localhost` does, so clients need no name resolution.
//! `per-core` logs requests as `stack up` does (the request log, issue 17) unless
//! `STACK_REQUEST_LOG=off`, as in `stack up`.

use std::sync::Arc;

use stack::proxy::{
    self, Backend, Deployment, HostRoute, ProxyConfig, Routing, RoutingTable, Target,
};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9002".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let mode = args.next().unwrap_or_else(|| "per-core".into());

    let instance = Arc::new(Backend::new(1, upstream.parse()?));
    let deployment = Deployment::new("bench-abcdefghij", "bench", vec![instance], 0);
    let mut table = RoutingTable::new();
    let deployment = Arc::new(deployment);
    for host in ["bench.localhost", "localhost"] {
        table.insert(
            host,
            HostRoute::Target(Target::Deployment(Arc::clone(&deployment))),
        );
    }
    let routing = Routing::new(table);
    let listener = std::net::TcpListener::bind(&listen)?;
    println!("listening on {} ({mode})", listener.local_addr()?);

    if mode == "multi" {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(async {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            proxy::run(listener, routing, shutdown).await;
            Ok(())
        });
    }

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a signal-handling runtime");
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        on_signal.cancel();
    });
    let n_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tls = match std::env::var("PROXY_BENCH_TLS") {
        Ok(addr) => {
            let ca = Arc::new(stack::tls::Ca::load_or_create(&stack::tls::stack_home())?);
            let listener = std::net::TcpListener::bind(&addr)?;
            println!("TLS on {}", listener.local_addr()?);
            Some(proxy::TlsListener {
                listener,
                config: stack::tls::server_config(ca)?,
            })
        }
        Err(_) => None,
    };
    let mut config = ProxyConfig::default();
    if std::env::var("STACK_REQUEST_LOG").as_deref() != Ok("off") {
        config.request_log = Some(proxy::RequestLog::new());
    }
    proxy::run_on_threads(listener, tls, routing, config, n_cores, shutdown)?;
    Ok(())
}
