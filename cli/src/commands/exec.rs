//! `stack exec <service> <command>..`: runs a one-off command (a migration, a seed script, a
//! REPL, `env`) with what the running `stack up` gives that service's instances on top of the
//! caller's own environment: the `.env` and `-e` values, the generated `SESSION_SECRET`, the
//! managed Redis's URL with its password, the service's `env` from `stack.toml`; never a
//! `PORT` (the caller's own stays). stack replaces itself with the command, so its exit
//! status, signals and terminal are the command's own. Nothing of the environment is printed.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use crate::args::ExecArgs;
use crate::control::{Client, ControlError};
use crate::output::{CliError, CliResult};

pub fn run(project_dir: &Path, args: ExecArgs) -> CliResult<ExitCode> {
    let (program, arguments) = args.command.split_first().expect("clap requires a command");
    let shown = program.to_string_lossy();
    let client = Client::new(project_dir);
    let answer = match client.blocking(client.environment(&args.target)) {
        Ok(answer) => answer,
        Err(ControlError::NotRunning { dir }) => {
            return Err(CliError::new(format!(
                "no `stack up` is running in `{dir}`, so there is no environment of `{}` to run `{shown}` in",
                args.target
            ))
            .hint("Start it with `stack up`, then run `stack exec` again."))
        }
        Err(error) => return Err(error.into()),
    };
    let error = Command::new(program)
        .args(arguments)
        .envs(&answer.env)
        .exec();
    Err(CliError::new(format!("cannot run `{shown}`: {error}"))
        .hint("Check the program's name, or give its path; it runs in the current directory."))
}
