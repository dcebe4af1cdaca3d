//! One file per command. Each takes its parsed arguments and returns an exit code or a
//! [`CliError`]; printing the error is left to [`crate::run`].

pub mod alias;
pub mod export;
pub mod init;
pub mod route;

use std::process::ExitCode;

use crate::args::{Cli, Command};
use crate::output::{CliError, CliResult};

pub fn dispatch(cli: Cli) -> CliResult<ExitCode> {
    match cli.command {
        Command::Alias(args) => alias::run(&cli.cwd, args),
        Command::Route(args) => route::run(&cli.cwd, args),
        Command::Up(_)
        | Command::Scale(_)
        | Command::Ls(_)
        | Command::Logs(_)
        | Command::Rollback(_)
        | Command::Rm(_)
        | Command::Down => Err(not_built("up")),
        Command::Redis(_) => Err(not_built("redis")),
        Command::Init(args) => init::run(&cli.cwd, args),
        Command::Export(args) => export::run(&cli.cwd, args),
    }
}

/// Commands whose issue has not landed yet say so plainly instead of pretending.
fn not_built(command: &str) -> CliError {
    CliError::new(format!(
        "`stack {command}` is not built yet in this version."
    ))
    .hint("See the open issues for its status.")
}
