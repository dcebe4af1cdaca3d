//! One file per command. Each takes its parsed arguments and returns an exit code or a
//! [`CliError`]; printing the error is left to [`crate::run`].

pub mod alias;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod down;
pub mod exec;
pub mod export;
pub mod init;
pub mod logs;
pub mod ls;
pub mod open;
pub mod redis;
pub mod requests;
pub mod restart;
pub mod rm;
pub mod rollback;
pub mod route;
pub mod scale;
pub mod trust;
pub mod up;

use std::process::ExitCode;

use crate::args::{Cli, Command};
use crate::output::CliResult;

pub fn dispatch(cli: Cli) -> CliResult<ExitCode> {
    match cli.command {
        Command::Alias(args) => alias::run(&cli.cwd, args),
        Command::Route(args) => route::run(&cli.cwd, args),
        Command::Up(args) => up::run(&cli.cwd, args),
        Command::Scale(args) => scale::run(&cli.cwd, args),
        Command::Ls(args) => ls::run(&cli.cwd, args),
        Command::Logs(args) => logs::run(&cli.cwd, args),
        Command::Requests(args) => requests::run(&cli.cwd, args),
        Command::Rm(args) => rm::run(&cli.cwd, args),
        Command::Down => down::run(&cli.cwd),
        Command::Rollback(args) => rollback::run(&cli.cwd, args),
        Command::Restart(args) => restart::run(&cli.cwd, args),
        Command::Exec(args) => exec::run(&cli.cwd, args),
        Command::Redis(args) => redis::run(&cli.cwd, args),
        Command::Init(args) => init::run(&cli.cwd, args),
        Command::Export(args) => export::run(&cli.cwd, args),
        Command::Completions(args) => completions::run(args),
        Command::Open(args) => open::run(&cli.cwd, args),
        Command::Doctor(args) => doctor::run(&cli.cwd, args),
        Command::Trust(args) => trust::run(args),
        Command::Config(args) => config::run(&cli.cwd, args),
    }
}
