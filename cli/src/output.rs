//! now's voice: `> Success! ...`, `> Ready! ...`, `Error! ...` with a second line saying what to
//! do. Colour only when the stream is a terminal and `NO_COLOR` is unset (console decides).
//! Text that others chose (a request's path, a session key or value in Redis) goes through
//! [`printable`] or [`terminal_safe_json`] first, so it cannot drive the terminal.

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

/// Whether printing `c` raw could make a terminal do something: a control character (C0, DEL,
/// C1: an escape sequence, a cursor move, a bell) or a bidirectional override or isolate
/// (text that reads differently from what it is).
pub fn is_unsafe_on_a_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` as it can be printed on a terminal: what [`is_unsafe_on_a_terminal`] names as an
/// escape (`\x1b`, `\u{9b}`), and a backslash doubled so the escapes are unambiguous.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c == '\\' || is_unsafe_on_a_terminal(c))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => shown.push_str("\\\\"),
            c if is_unsafe_on_a_terminal(c) && u32::from(c) < 0x80 => {
                shown.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if is_unsafe_on_a_terminal(c) => {
                shown.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
            }
            c => shown.push(c),
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// A one-line JSON text as it can be printed on a terminal and still be the same JSON:
/// serde_json escapes C0 controls but leaves the C1 ones (U+0080 to U+009F, which some
/// terminals obey as escape sequences when printed in UTF-8), DEL and the bidirectional
/// overrides raw; they become `\u009b`. Inside strings that is the same JSON; a control
/// outside strings (whitespace a stored text carries, `\r` among it) is escaped all the same,
/// as it would move the cursor.
pub fn terminal_safe_json(text: &str) -> std::borrow::Cow<'_, str> {
    escape_for_terminal(text, false)
}

/// [`terminal_safe_json`] for a JSON text serde_json pretty-printed: its line breaks stay (a
/// raw one can only be its own layout: in a string it is `\n`).
pub fn terminal_safe_json_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escape_for_terminal(text, true)
}

fn escape_for_terminal(text: &str, keep_newlines: bool) -> std::borrow::Cow<'_, str> {
    let escapes = |c: char| is_unsafe_on_a_terminal(c) && !(keep_newlines && c == '\n');
    if !text.chars().any(escapes) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escapes(c) {
            escaped.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}
