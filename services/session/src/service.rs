//! Running a session service binary: logging, configuration, binding, serving until SIGTERM or
//! SIGINT, then finishing in-flight requests and exiting 0.
//!
//! Owns what `writer` and `reader` would otherwise both repeat in `main`. It never decides
//! routes (the service's `app` does) and logs the Redis URL only masked, never a secret.

use crate::config::ServiceConfig;
use crate::layer::Sessions;
use crate::store::RedisStore;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

/// How long in-flight requests may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// `main` of a session service named `name`: reads the environment (`PORT` defaults to
/// `default_port`), builds the router with `app`, serves it. Exit code 1 on a configuration or
/// bind error, with `Error! ...` and a hint on stderr.
pub fn main(name: &'static str, default_port: u16, app: fn(Sessions) -> axum::Router) -> ExitCode {
    init_tracing();
    let config = match ServiceConfig::from_env(default_port) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("Error! {error}\n{}", error.hint());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error! cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(name, config, app))
}

async fn serve(
    name: &'static str,
    config: ServiceConfig,
    app: fn(Sessions) -> axum::Router,
) -> ExitCode {
    let store = match RedisStore::new(&config.redis_url) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("Error! {error}\nCheck REDIS_SESSION_URL.");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "Error! {name} cannot listen on {}: {error}\nSet PORT to a free port (or stop what uses it).",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |addr| addr.to_string());
    tracing::info!(
        service = name,
        %addr,
        redis = %config.redis_url,
        secrets = config.secrets.len(),
        "listening"
    );
    let sessions = Sessions::new(store, config.secrets, config.cookie);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The peer's address, for `SESSION_COOKIE_SECURE=auto` (only a loopback proxy is believed).
    let app = app(sessions).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stop_signal().await;
        tracing::info!(service = name, "stopping: finishing in-flight requests");
        // Starts the grace timer below: in-flight requests get SHUTDOWN_GRACE to finish.
        let _ = stop_tx.send(true);
    });
    let mut grace = stop_rx;
    let grace_timer = async move {
        let _ = grace.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => match result {
            Ok(()) => {
                tracing::info!(service = name, "stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(service = name, %error, "server failed");
                ExitCode::FAILURE
            }
        },
        () = grace_timer => {
            tracing::warn!(service = name, grace_seconds = SHUTDOWN_GRACE.as_secs(), "in-flight requests did not finish in time; exiting");
            ExitCode::SUCCESS
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .init();
}
