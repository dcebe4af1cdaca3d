//! `stack rm <deployment>`: stop it (through the running `stack up`) and remove its record and
//! artifact; without a `stack up`, remove them from disk.

use std::path::Path;
use std::process::ExitCode;

use crate::args::RmArgs;
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state::deployments;

pub fn run(project_dir: &Path, args: RmArgs) -> CliResult<ExitCode> {
    let id = args
        .deployment
        .strip_suffix(".localhost")
        .unwrap_or(&args.deployment);
    let path = format!("/v1/deployments/{id}");
    match Client::new(project_dir).blocking_json::<(), serde_json::Value>("DELETE", &path, None) {
        Ok(_) => {}
        Err(ControlError::NotRunning { .. }) => {
            let removed = deployments::forget(project_dir, id)
                .map_err(|error| CliError::new(error.to_string()))?;
            if !removed {
                return Err(CliError::new(format!("no deployment `{id}`"))
                    .hint("See `stack ls` for the deployments."));
            }
        }
        Err(error) => return Err(error.into()),
    }
    output::success(format!("Removed `{id}`"));
    Ok(ExitCode::SUCCESS)
}
