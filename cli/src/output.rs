//! now's voice: `> Success! ...`, `> Ready! ...`, `Error! ...` with a second line saying what to
//! do. Colour only when the stream is a terminal and `NO_COLOR` is unset (console decides).

use std::fmt;
use std::io::{self, Write};

use console::style;

/// An error a person can act on: what went wrong (values in backticks) and what to do next.
/// Every command returns this (or converts into it); it is printed once, by [`crate::run`].
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

pub type CliResult<T> = Result<T, CliError>;

/// Prints `Error! <message>` (and the hint on its own line) to stderr.
pub fn print_error(error: &CliError) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{} {}", style("Error!").red().bold(), error.message);
    if let Some(hint) = &error.hint {
        let _ = writeln!(stderr, "{hint}");
    }
}

/// Prints `> Success! <message>` to stdout.
pub fn success(message: impl fmt::Display) {
    line(&mut io::stdout(), style("> Success!").cyan(), message);
}

/// Prints `> Ready! <message>` to stdout.
pub fn ready(message: impl fmt::Display) {
    line(&mut io::stdout(), style("> Ready!").cyan(), message);
}

/// Prints `> <message>` to stdout: progress and notes.
pub fn info(message: impl fmt::Display) {
    line(&mut io::stdout(), style(">").dim(), message);
}

/// Prints `> <message>` to stderr: for commands whose stdout is their data (`stack logs`).
pub fn note(message: impl fmt::Display) {
    line(&mut io::stderr(), style(">").dim(), message);
}

/// Prints `> Warning! <message>` to stderr.
pub fn warn(message: impl fmt::Display) {
    line(&mut io::stderr(), style("> Warning!").yellow(), message);
}

/// One line, `<mark> <message>`. Not println!: a closed stdout (`stack up | head`) must not
/// bring a running stack down; the other commands end on SIGPIPE (see `crate::run`).
fn line(out: &mut impl Write, mark: impl fmt::Display, message: impl fmt::Display) {
    let _ = writeln!(out, "{mark} {message}");
}

/// A short age, as `now ls` and `now alias ls` showed them: `12s`, `5m`, `3h`, `2d`.
pub fn age(since_ms: u64, now_ms: u64) -> String {
    let seconds = now_ms.saturating_sub(since_ms) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}
