//! `stack rm <deployment>`: stop it (through the running `stack up`) and remove its record and
//! artifact; without a `stack up`, remove them from disk.

use std::path::Path;
use std::process::ExitCode;

use crate::args::RmArgs;
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state::{deployments, Store};

pub fn run(project_dir: &Path, args: RmArgs) -> CliResult<ExitCode> {
    let id = args
        .deployment
        .strip_suffix(".localhost")
        .unwrap_or(&args.deployment);
    let client = Client::new(project_dir);
    match client.blocking(client.remove(id)) {
        Ok(_) => {}
        Err(ControlError::NotRunning { .. }) => {
            let removed = Store::new(project_dir)
                .update(|state| state.forget_deployment(id))
                .map_err(|error| CliError::new(error.to_string()))?;
            if !removed {
                return Err(CliError::new(format!("no deployment `{id}`"))
                    .hint("See `stack ls` for the deployments."));
            }
            deployments::remove_artifact(project_dir, id);
        }
        Err(error) => return Err(error.into()),
    }
    output::success(format!("Removed `{id}`"));
    Ok(ExitCode::SUCCESS)
}
