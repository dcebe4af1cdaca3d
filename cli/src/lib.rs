//! `stack`: now's 2017 deploy workflow on one developer machine.
//!
//! # Layout
//!
//! - [`args`]: the command line (clap); nothing here does work.
//! - [`commands`]: one file per command; each turns parsed arguments into calls on the modules below.
//! - [`completion`]: the names shell completion offers (services, deployments, aliases).
//! - [`control`]: the HTTP+JSON API on `.stack/stack.sock` that `stack up` serves and other commands call.
//! - [`daemon`]: the running `stack up`: one handle that owns the supervisor, the proxy's routing,
//!   the aliases, the Redis in use and the state; its start and its ordered shutdown.
//! - [`dashboard`]: the dashboard and request inspector the proxy serves at `stack.localhost`.
//! - [`units`]: durations and sizes as people write them (`500ms`, `1h30m`, `10MB`).
//! - [`env`]: `.env` files and `-e` pairs, checked and merged; never prints a value.
//! - [`export`]: an alias rendered as a production config (nginx), checked with `nginx -t`.
//! - [`init`]: the embedded project templates, written by `stack init`; the `.env` git check.
//! - [`output`]: now's voice on a terminal (`> Success!`, `Error! ...`), colour only on a tty.
//! - [`prerequisites`]: the programs a `stack up` needs, checked before it builds; install hints.
//! - [`proxy`]: the in-process reverse proxy: host and path routing, forwarding, pooling.
//! - [`redis`]: the managed `redis-server` (described here, run by the supervisor's process layer),
//!   and what `stack redis` uses to look inside the session store (SCAN reads, cookies, watch).
//! - [`rules`]: the alias rules file: parse, validate, normalise paths, match. No I/O.
//! - [`state`]: what persists in `.stack/` (aliases, scale, deployment history); one writer.
//! - [`supervisor`]: deployments, instances, child processes, restarts, readiness, swaps.
//! - [`tls`]: the local CA (name-constrained to `localhost`), the leaves the proxy serves per
//!   SNI name, and `stack trust`.
//! - [`watch`]: file changes to change sets (which services to redeploy); never builds.

pub mod args;
pub mod commands;
pub mod completion;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod env;
pub mod export;
pub mod init;
pub mod output;
pub mod prerequisites;
pub mod proxy;
pub mod redis;
pub mod rules;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod units;
pub mod watch;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command and turns its outcome into an exit code:
/// 0 on success, 1 on a user error (printed once, here), 2 on bad arguments (clap).
pub fn run() -> ExitCode {
    // A shell asking for completions (`COMPLETE=bash stack -- ...`) is answered and exits here.
    clap_complete::CompleteEnv::with_factory(<args::Cli as clap::CommandFactory>::command)
        .var(completion::VAR)
        .complete();
    let cli = args::Cli::parse();
    if !matches!(cli.command, args::Command::Up(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&error);
            ExitCode::from(1)
        }
    }
}

/// `stack ls | head -1`: once `head` has what it wants, the next write ends the command as it
/// ends `ls` or `grep` (SIGPIPE), rather than as a panic with a backtrace. Not for `stack up`,
/// whose printing ignores a closed stdout so the stack keeps running (and stops in order).
#[allow(unsafe_code)]
fn end_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called at the start of `main`, before any thread is spawned or handler relied
    // on; SIG_DFL installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}
