//! `stack up`: maps the arguments to a [`daemon::DaemonConfig`] and runs the daemon until Ctrl-C,
//! SIGTERM or `stack down`, then stops it in order. What starts, in which order and what it
//! prints is [`daemon::start`]'s; how it stops is [`daemon::shutdown`]'s.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::args::UpArgs;
use crate::daemon::{self, Daemon, EnvSources, Signals, Start};
use crate::output::{CliError, CliResult};
use crate::supervisor::logs::Rotation;

/// How long instance output pumps get after the stop; they may still hold pipes.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

pub fn run(cwd: &Path, args: UpArgs) -> CliResult<ExitCode> {
    // One port cannot serve both: said as the argument error it is, before anything starts
    // (0 for both picks two free ports).
    if !args.no_https && args.port == args.https_port && args.port != 0 {
        return Err(CliError::new(format!(
            "`--port` and `--https-port` (or `STACK_HTTPS_PORT`) are both {}: the plain and the HTTPS port must differ",
            args.port
        ))
        .hint("Give `--https-port` another port (0 picks a free one), or run with `--no-https`."));
    }
    let config = daemon::DaemonConfig {
        project_dir: cwd.to_path_buf(),
        services: args.services,
        env: EnvSources {
            dotenv: args.dotenv,
            assignments: args.env,
            ca_file: None,
        },
        port: args.port,
        https_port: (!args.no_https).then_some(args.https_port),
        release: args.release,
        watch: !args.no_watch,
        keep: args.keep,
        ready_timeout: args.ready_timeout,
        upstream_timeout: args.upstream_timeout,
        max_instances: args.max_instances,
        log_rotation: Rotation {
            max_bytes: args.log_size,
            files: usize::from(args.log_files),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    let reason = runtime.block_on(async {
        // Signals first: a Ctrl-C during the build must still clean up.
        let mut signals = Signals::listen()?;
        match Daemon::start(config, &mut signals).await? {
            Start::Stopped(reason) => Ok::<_, CliError>(reason),
            Start::Launched(launched) => {
                let reason = tokio::select! {
                    reason = signals.stop_requested(launched.daemon.down_requested()) => reason,
                    () = launched.start_failed.cancelled() => daemon::StopReason::StartFailed,
                };
                launched.shutdown().await;
                Ok(reason)
            }
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    Ok(ExitCode::from(reason?.exit_code()))
}
