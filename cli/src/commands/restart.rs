//! `stack restart <service|deployment>[.N]`: asks the running `stack up` for new processes,
//! one instance at a time, each ready again before the next; a web instance's new process
//! takes over before the old one drains, so no request fails. It also brings back a CRASHED
//! instance and runs a completed one-shot again. Without a running `stack up` nothing runs.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::args::RestartArgs;
use crate::control::api::RestartRequest;
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};

pub fn run(project_dir: &Path, args: RestartArgs) -> CliResult<ExitCode> {
    let started = Instant::now();
    let request = RestartRequest::parse(&args.target);
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("Restarting {}", args.target));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let client = Client::new(project_dir);
    let answer = client.blocking(client.restart(request));
    spinner.finish_and_clear();
    match answer {
        Ok(answer) => {
            let names: Vec<String> = answer
                .instances
                .iter()
                .map(|number| format!("{}.{number}", answer.service))
                .collect();
            output::success(format!(
                "Restarted {} ({}) [{:.1}s]",
                names.join(", "),
                answer.deployment,
                started.elapsed().as_secs_f64()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::NotRunning { dir }) => Err(CliError::new(format!(
            "no `stack up` is running in `{dir}`, so there is nothing to restart"
        ))
        .hint("Start it with `stack up`.")),
        Err(error) => Err(error.into()),
    }
}
