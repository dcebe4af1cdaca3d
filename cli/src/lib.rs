//! `stack`: now's 2017 deploy workflow on one developer machine.
//!
//! # Layout
//!
//! - [`args`]: the command line (clap); nothing here does work.
//! - [`commands`]: one file per command; each turns parsed arguments into calls on the modules below.
//! - [`export`]: an alias rendered as a production config (nginx). No process is started.
//! - [`init`]: the embedded project templates, written by `stack init`; the `.env` git check.
//! - [`output`]: now's voice on a terminal (`> Success!`, `Error! ...`), colour only on a tty.
//! - [`rules`]: the alias rules file: parse, validate, normalise paths, match. No I/O.
//! - [`state`]: what persists in `.stack/` (aliases, scale, deployment history), written atomically.

pub mod args;
pub mod commands;
pub mod export;
pub mod init;
pub mod output;
pub mod rules;
pub mod state;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command and turns its outcome into an exit code:
/// 0 on success, 1 on a user error (printed once, here), 2 on bad arguments (clap).
pub fn run() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error);
            ExitCode::from(1)
        }
    }
}
