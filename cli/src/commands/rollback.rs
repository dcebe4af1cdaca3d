//! `stack rollback <service> [deployment]`: asks the running `stack up` to swap the previous
//! (or the named) kept deployment back in; no build. Without a running `stack up` there is
//! nothing to swap, so it says so rather than editing the state behind anyone's back.

use std::path::Path;
use std::process::ExitCode;

use crate::args::RollbackArgs;
use crate::control::api::RollbackRequest;
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};

pub fn run(project_dir: &Path, args: RollbackArgs) -> CliResult<ExitCode> {
    let request = RollbackRequest {
        service: args.service.clone(),
        deployment: args.deployment.clone(),
    };
    let client = Client::new(project_dir);
    let answer = client.blocking(client.rollback(request));
    match answer {
        Ok(answer) => {
            let previous = answer
                .previous
                .map(|previous| format!(" (was {previous})"))
                .unwrap_or_default();
            output::success(format!(
                "{} now serves {}{previous} [{}ms]",
                args.service, answer.deployment, answer.elapsed_ms
            ));
            if let Some(url) = answer.url {
                output::info(url);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::NotRunning { dir }) => Err(CliError::new(format!(
            "no `stack up` is running in `{dir}`, so there is nothing to roll back"
        ))
        .hint("Start it with `stack up`, then run `stack rollback` again.")),
        Err(error) => Err(error.into()),
    }
}
