//! `stack trust [--uninstall | --print]`: the local CA into (or out of) this machine's trust
//! stores, each place reported with what changed, or what could not and how to do it by hand.

use std::process::ExitCode;

use crate::args::TrustArgs;
use crate::output::{self, CliError, CliResult};
use crate::tls::{self, trust::Step};

pub fn run(args: TrustArgs) -> CliResult<ExitCode> {
    let home = tls::stack_home();
    let ca = || {
        tls::Ca::load_or_create(&home)
            .map_err(|error| CliError::new(error.to_string()).hint(error.hint()))
    };
    if args.print {
        println!("{}", ca()?.cert_path().display());
        return Ok(ExitCode::SUCCESS);
    }
    let stores = tls::trust::Stores::from_environment();
    let steps = if args.uninstall {
        tls::trust::uninstall(&home, &stores)
    } else {
        let ca = ca()?;
        tls::trust::install(&home, &ca.cert_path(), &stores)
    };
    let mut failed = Vec::new();
    for step in steps {
        match step {
            Step::Changed(what) => output::info(what),
            Step::Skipped(what) => output::info(what),
            Step::Failed { what, manual } => failed.push(format!("{what}\n  by hand: {manual}")),
        }
    }
    if failed.is_empty() {
        output::success(if args.uninstall {
            "The local CA is trusted nowhere any more".to_string()
        } else {
            format!(
                "The local CA `{}` is trusted (it can sign `localhost` names only); restart your browser",
                home.join(tls::CA_CERT_FILE).display()
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    Err(CliError::new(format!(
        "{} place(s) could not be changed:\n{}",
        failed.len(),
        failed.join("\n")
    ))
    .hint("Run the commands above by hand (the rest was done), or run `stack trust` again as a user who may."))
}
