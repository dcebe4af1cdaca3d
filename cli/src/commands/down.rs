//! `stack down`: ask the running `stack up` to stop everything, and wait until it has (its lock
//! is released). With none running, clean up what a killed one may have left.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::control::{self, Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state;
use crate::supervisor::{self, process};

pub fn run(project_dir: &Path) -> CliResult<ExitCode> {
    let stack_dir = project_dir.join(state::STATE_DIR);
    let started = Instant::now();
    let client = Client::new(project_dir);
    match client.blocking(client.down()) {
        Ok(_) => {}
        Err(ControlError::NotRunning { .. }) => {
            if control::lock::is_held(&stack_dir) {
                return Err(CliError::new(
                    "a `stack up` holds the lock but does not answer on its socket",
                )
                .hint("Stop it with Ctrl-C in its terminal."));
            }
            let leftovers = process::kill_leftovers(&process::pids_dir(project_dir));
            // No `stack up` holds the lock, so nobody answers on a socket that is still there.
            let socket = control::socket_path(project_dir);
            let stale_socket = socket.exists() && std::fs::remove_file(&socket).is_ok();
            match (leftovers.len(), stale_socket) {
                (0, false) => output::info("Nothing is running here"),
                (0, true) => output::success(
                    "Nothing was running; removed the control socket a `stack up` that did not exit cleanly left",
                ),
                (n, _) => output::success(format!(
                    "Stopped {n} process(es) left by a `stack up` that did not exit cleanly"
                )),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => return Err(error.into()),
    }
    // Instances get the grace period each (in parallel), then Redis gets its own.
    let deadline = started + supervisor::DEFAULT_GRACE * 2 + Duration::from_secs(10);
    while control::lock::is_held(&stack_dir) {
        if Instant::now() >= deadline {
            return Err(CliError::new("`stack up` is still stopping")
                .hint("Check its terminal; it stops each process within the grace period."));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    output::success(format!(
        "Stopped everything `stack up` started [{:.1}s]",
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitCode::SUCCESS)
}
