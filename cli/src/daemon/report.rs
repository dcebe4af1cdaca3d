//! What a redeploy and the managed Redis's supervision tell the person at the terminal,
//! printed in one place: the redeployer produces [`Redeploy`] events and the managed Redis
//! publishes its status; neither prints itself.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::env::ServiceEnvError;
use crate::output::{self, CliError};
use crate::redis::managed::{RedisState, RedisStatus};
use crate::state::StateError;
use crate::supervisor::build::BuildError;
use crate::supervisor::SupervisorError;

/// One thing a redeploy did or failed to do.
pub enum Redeploy {
    /// A build of `services` started because of `changed` (a few paths, relative).
    Building {
        services: Vec<String>,
        changed: Vec<String>,
    },
    /// The build failed; `serving` are the deployments that keep serving.
    BuildFailed {
        error: BuildError,
        serving: Vec<String>,
    },
    /// The saved dotenv file (or a `-e`) does not parse: every service keeps its environment.
    EnvInvalid(ServiceEnvError),
    /// A service built to the same output as its live deployment: nothing to swap.
    Unchanged { service: String },
    /// The build could not become a deployment (artifact copy, state).
    NotPrepared { service: String, reason: String },
    /// The new deployment is live.
    Ready {
        /// Its URLs (a worker: its id and service).
        url: String,
        build: Duration,
        swap: Duration,
    },
    /// A new deployment of a one-shot ran and exited 0.
    Completed {
        deployment: String,
        service: String,
        build: Duration,
        /// From the swap's start to its exit.
        ran: Duration,
    },
    /// A new deployment of a one-shot started, then did not exit 0.
    NotCompleted {
        service: String,
        deployment: String,
        error: SupervisorError,
    },
    /// The new deployment did not start; the live one keeps serving.
    StartFailed {
        service: String,
        deployment: String,
        error: SupervisorError,
    },
    /// Live, but not recorded in `.stack/state.json`.
    NotRecorded { service: String, error: StateError },
}

pub fn print(event: Redeploy) {
    match event {
        Redeploy::Building { services, changed } => output::info(format!(
            "Building {} ({} changed)",
            services.join(", "),
            changed.join(", ")
        )),
        Redeploy::BuildFailed { error, serving } => {
            let serving = if serving.is_empty() {
                "nothing was deployed".to_string()
            } else {
                let quoted: Vec<String> = serving.iter().map(|id| format!("`{id}`")).collect();
                format!("{} keeps serving", quoted.join(", "))
            };
            let message = match &error {
                BuildError::CargoFailed { output, failed } => {
                    eprint!("{output}");
                    format!(
                        "the build failed{} (the compiler's output is above); {serving}",
                        super::start::did_not_compile(failed)
                    )
                }
                BuildError::NpmFailed { output, .. } => {
                    eprint!("{output}");
                    format!("the build failed (the compiler's output is above); {serving}")
                }
                other => format!("{other}; {serving}"),
            };
            output::print_error(&CliError::new(message).hint("Fix the errors and save again."));
        }
        Redeploy::EnvInvalid(error) => output::print_error(
            &CliError::new(format!(
                "the new environment has errors (values are never printed):\n{error}"
            ))
            .hint("Fix the file and save it again; every service keeps its current environment."),
        ),
        Redeploy::Unchanged { service } => {
            output::info(format!("{service}: the build output did not change"))
        }
        Redeploy::NotPrepared { service, reason } => output::print_error(
            &CliError::new(format!("{service}: {reason}"))
                .hint("Nothing was changed; check `.stack/` and try again."),
        ),
        Redeploy::Ready { url, build, swap } => output::ready(format!(
            "{url} [build {:.1}s, swap {}ms]",
            build.as_secs_f64(),
            swap.as_millis()
        )),
        Redeploy::Completed {
            deployment,
            service,
            build,
            ran,
        } => output::success(format!(
            "{deployment} (one-shot `{service}`) ran and exited 0 [build {:.1}s, ran {:.1}s]",
            build.as_secs_f64(),
            ran.as_secs_f64()
        )),
        Redeploy::NotCompleted {
            service,
            deployment,
            error,
        } => output::print_error(
            &CliError::new(format!(
                "{service}: the new deployment did not complete: {error}"
            ))
            .hint(format!(
                "The other services keep running. See `stack logs {deployment}`, fix it and save again (`stack restart {service}` runs it again)."
            )),
        ),
        Redeploy::StartFailed {
            service,
            deployment,
            error,
        } => output::print_error(
            &CliError::new(format!(
                "{service}: the new deployment did not start: {error}"
            ))
            .hint(format!(
                "The live deployment keeps serving. See `stack logs {deployment}`."
            )),
        ),
        Redeploy::NotRecorded { service, error } => output::warn(format!("{service}: {error}")),
    }
}

/// Says when the managed Redis dies and when it is back, until `shutdown`.
pub async fn follow_redis(mut status: watch::Receiver<RedisStatus>, shutdown: CancellationToken) {
    let mut last = status.borrow_and_update().state;
    loop {
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let now = status.borrow_and_update().clone();
        match now.state {
            RedisState::Restarting if last != RedisState::Restarting => output::warn(format!(
                "managed Redis: {}; the services answer 503 until it is back",
                now.last_exit.as_deref().unwrap_or("stopped")
            )),
            RedisState::Ready if last != RedisState::Ready => output::info(format!(
                "Redis is back on port {} (restart {}); sessions saved before it died are kept",
                now.port, now.restarts
            )),
            _ => {}
        }
        last = now.state;
    }
}
