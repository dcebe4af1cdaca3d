//! `stack open [host]`: opens an alias (the first one when none is named; the dashboard at
//! `stack.localhost` when there is no alias) in the browser, with the port the last `stack up`
//! used; prints the URL instead with `--print`, or when there is no browser to hand it to (no
//! display, no `xdg-open` or `open`).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::args::OpenArgs;
use crate::output::{self, CliError, CliResult};
use crate::state::aliases::{normalize_host, RESERVED_HOST};
use crate::state::State;

/// The port shown when no `stack up` has run yet (the default of `--port`).
const DEFAULT_PORT: u16 = 3000;

pub fn run(project_dir: &Path, args: OpenArgs) -> CliResult<ExitCode> {
    let state = State::load(project_dir).map_err(|error| CliError::new(error.to_string()))?;
    let host = match &args.host {
        Some(host) => {
            let host = normalize_host(host).map_err(|error| {
                CliError::new(error.to_string())
                    .hint("Use a host name such as `counter-demo.localhost`.")
            })?;
            if host != RESERVED_HOST {
                super::alias::find(&state, &host)?;
            }
            host
        }
        None => state
            .aliases
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| RESERVED_HOST.to_string()),
    };
    let port = state.proxy_port.unwrap_or(DEFAULT_PORT);
    let url = if port == 80 {
        format!("http://{host}/")
    } else {
        format!("http://{host}:{port}/")
    };
    if args.print || !open_in_browser(&url) {
        println!("{url}");
    } else {
        output::success(format!("Opened {url}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Hands `url` to the desktop's opener; `false` when there is none (a server, an SSH session).
fn open_in_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return false;
    };
    // The browser outlives this command: it is not waited for.
    Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}
