//! `stack completions SHELL`: the script that registers `stack`'s completions in a shell. It
//! calls back into `stack` (with `COMPLETE=<shell>` set) for each completion, so subcommands,
//! flags and the project's service, deployment and alias names all complete.

use std::io::Write;
use std::process::ExitCode;

use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::args::{CompletionsArgs, Shell};
use crate::completion::VAR;
use crate::output::{CliError, CliResult};

pub fn run(args: CompletionsArgs) -> CliResult<ExitCode> {
    let shell: &dyn EnvCompleter = match args.shell {
        Shell::Bash => &Bash,
        Shell::Zsh => &Zsh,
        Shell::Fish => &Fish,
        Shell::Elvish => &Elvish,
        Shell::Powershell => &Powershell,
    };
    let mut script = Vec::new();
    shell
        .write_registration(VAR, "stack", "stack", "stack", &mut script)
        .and_then(|()| std::io::stdout().lock().write_all(&script))
        .map_err(|error| CliError::new(format!("cannot write the completion script: {error}")))?;
    Ok(ExitCode::SUCCESS)
}
