//! The environment a service instance gets: `.env` files and `-e KEY=VALUE` pairs, parsed,
//! checked and merged over the caller's environment (caller < `.env` < `-e`; `PORT` is added by
//! the supervisor per instance).
//!
//! Every error names where it is (`.env:3:5`) and never repeats a value: values are secrets
//! until proven otherwise. All errors of a file are collected before failing, so one run shows
//! every bad line. This module does no process work and prints nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The variable that points services at their session store.
pub const REDIS_SESSION_URL: &str = "REDIS_SESSION_URL";
/// The variable holding the cookie secrets (a comma-separated rotation list).
pub const SESSION_SECRET: &str = "SESSION_SECRET";

/// One problem in a `.env` file or a `-e` argument. `Display` is one line with the place first.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{place}: expected `KEY=VALUE`")]
    MissingEquals { place: Place },
    #[error("{place}: empty variable name before `=`")]
    EmptyKey { place: Place },
    #[error("{place}: `{key}` is not a valid variable name (use letters, digits and `_`, not starting with a digit)")]
    BadKey { place: Place, key: String },
    #[error("{place}: the quoted value of `{key}` is never closed")]
    UnclosedQuote { place: Place, key: String },
    #[error("{place}: unexpected text after the quoted value of `{key}`")]
    TrailingText { place: Place, key: String },
    #[error("{place}: the value of `{key}` is not valid `.env` syntax: quote a value with spaces or special characters (`{key}=\"...\"`)")]
    Unquoted { place: Place, key: String },
    #[error("{place}: the value of `{key}` holds a NUL byte, which no process can receive in its environment")]
    NulByte { place: Place, key: String },
    #[error("{place}: `{key}=...` is {kib} KiB; a process receives at most 128 KiB per variable (Linux's MAX_ARG_STRLEN)")]
    TooLong {
        place: Place,
        key: String,
        kib: usize,
    },
}

/// The longest `KEY=VALUE` (with its terminating NUL) Linux passes to a process.
const MAX_VARIABLE: usize = 128 * 1024;

/// A value every process can receive: no NUL byte, not longer than the kernel passes.
fn check_value(key: &str, value: &str, place: Place) -> Result<(), EnvError> {
    if value.contains('\0') {
        return Err(EnvError::NulByte {
            place,
            key: key.into(),
        });
    }
    let size = key.len() + 1 + value.len() + 1;
    if size > MAX_VARIABLE {
        return Err(EnvError::TooLong {
            place,
            key: key.into(),
            kib: size.div_ceil(1024),
        });
    }
    Ok(())
}

/// Where an error is: `file:line:column`, or `-e #n` for the nth command-line pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    Argument {
        index: usize,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Place::Argument { index } => write!(f, "`-e` #{index}"),
        }
    }
}

/// Every error found in one source, in order. Displayed one per line.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvErrors(pub Vec<EnvError>);

impl EnvErrors {
    /// Only files that could not be read (missing, a directory, not UTF-8), no bad line:
    /// advice about `KEY=VALUE` lines would not fit.
    pub fn only_unreadable(&self) -> bool {
        self.0
            .iter()
            .all(|error| matches!(error, EnvError::Read { .. }))
    }
}

impl fmt::Display for EnvErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for EnvErrors {}

/// Ordered `KEY=VALUE` pairs from one source (later pairs win when merged).
pub type Pairs = Vec<(String, String)>;

/// Reads and parses a dotenv file. A missing file is an error: the user asked for it.
pub fn read_dotenv(path: &Path) -> Result<Pairs, EnvErrors> {
    let refused = |reason: String| {
        EnvErrors(vec![EnvError::Read {
            path: path.to_path_buf(),
            reason,
        }])
    };
    let bytes = read_bounded(path).map_err(|error| {
        refused(match error.kind() {
            io::ErrorKind::NotFound => "no such file".to_string(),
            _ => error.to_string(),
        })
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|byte| **byte == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |newline| newline + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        refused(format!(
            "line {line}, column {column}: not UTF-8 text (save the file as UTF-8)"
        ))
    })?;
    parse_dotenv(path, &text)
}

/// Larger than any `.env` a person writes; `/dev/zero` or a log given by mistake stops here.
const MAX_DOTENV: u64 = 4 << 20;

/// The file's bytes, at most [`MAX_DOTENV`] of them. A pipe (`--dotenv=<(sops -d .env)`) is
/// read like a file; a device is refused before it is opened.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileTypeExt;
    let kind = fs::metadata(path)?.file_type();
    if kind.is_dir() {
        return Err(io::Error::other("it is a directory, not a file"));
    }
    if kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
        return Err(io::Error::other("it is a device or a socket, not a file"));
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(fs::File::open(path)?, MAX_DOTENV + 1),
        &mut bytes,
    )?;
    if bytes.len() as u64 > MAX_DOTENV {
        return Err(io::Error::other(format!(
            "it is larger than {} MiB, more than a `.env` file holds",
            MAX_DOTENV >> 20
        )));
    }
    Ok(bytes)
}

/// Parses dotenv text as dotenvy reads it (the crate the design names): `KEY=VALUE`, an
/// optional `export `, `#` comments, single quotes (literal, may span lines), double quotes
/// (escapes and `${VAR}` substitution, may span lines), unquoted values with `$VAR`/`${VAR}`
/// substitution (earlier keys of the file, then the caller's environment) and no spaces.
///
/// dotenvy says *that* a line does not parse, with the line's text; stack says *where* and
/// *what*, never the text: each logical line is found here by the same rules dotenvy splits
/// by, so every item dotenvy yields is tied to its line, and a refused line is described from
/// its shape (no `=`, a bad key, an unclosed quote, text after a quote, a space in an unquoted
/// value). Every bad line is reported, not only the first.
pub fn parse_dotenv(path: &Path, text: &str) -> Result<Pairs, EnvErrors> {
    // Editors on Windows start UTF-8 files with a byte-order mark; it is no part of a key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = logical_lines(text);
    let mut pairs = Pairs::new();
    let mut errors = Vec::new();
    let mut items = dotenvy::from_read_iter(text.as_bytes());
    for line in &lines {
        let place = |column: usize| Place::File {
            path: path.to_path_buf(),
            line: line.number,
            column,
        };
        let shape = LineShape::of(line.text);
        match items.next() {
            Some(Ok((key, value))) => {
                let checked = check_key(&key, place(shape.indent + 1))
                    .and_then(|()| check_value(&key, &value, place(shape.value_column)));
                match checked {
                    Ok(()) => pairs.push((key, value)),
                    Err(error) => errors.push(error),
                }
            }
            Some(Err(_)) | None => errors.push(shape.describe(place)),
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(EnvErrors(errors))
    }
}

/// One logical line of a dotenv file: a `KEY=VALUE` that may span physical lines while a quote
/// is open, and the physical line it starts on.
struct LogicalLine<'a> {
    number: usize,
    text: &'a str,
}

/// The file's logical lines that hold a variable (blank and comment lines left out), split by
/// the rules dotenvy splits by: a line goes on past its newline while a quote is open, and an
/// unquoted `#` after whitespace starts a comment that ends it.
fn logical_lines(text: &str) -> Vec<LogicalLine<'_>> {
    let mut lines = Vec::new();
    // Where the logical line being read starts (byte offset, line number), while one is open.
    let mut open: Option<(usize, usize)> = None;
    let mut state = QuoteState::Complete;
    let mut offset = 0;
    for (index, physical) in text.split_inclusive('\n').enumerate() {
        let from = match open {
            Some((from, _)) => from,
            None if physical.trim_start().starts_with('#') => {
                offset += physical.len();
                continue;
            }
            None => {
                open = Some((offset, index + 1));
                offset
            }
        };
        let (next, comment) = state.advance(physical);
        let end = comment.map_or(offset + physical.len(), |at| offset + at);
        offset += physical.len();
        state = next;
        if matches!(state, QuoteState::Complete | QuoteState::Comment) {
            let (_, number) = open.take().expect("a logical line is open");
            let line = text[from..end].trim_end_matches(['\n', '\r']);
            if !line.trim().is_empty() {
                lines.push(LogicalLine { number, text: line });
            }
            state = QuoteState::Complete;
        }
    }
    // A quote still open at the end: dotenvy refuses that line (and yields nothing after it).
    if let Some((from, number)) = open {
        lines.push(LogicalLine {
            number,
            text: &text[from..],
        });
    }
    lines
}

/// Where a dotenv line is in its quoting, character by character (dotenvy's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    Complete,
    WhiteSpace,
    Escape,
    Strong,
    StrongEscape,
    Weak,
    WeakEscape,
    Comment,
}

impl QuoteState {
    /// The state after `physical`, and where in it a comment starts, if one does.
    fn advance(self, physical: &str) -> (QuoteState, Option<usize>) {
        let mut state = self;
        for (at, c) in physical.char_indices() {
            state = match state {
                QuoteState::WhiteSpace if c == '#' => return (QuoteState::Comment, Some(at)),
                QuoteState::WhiteSpace | QuoteState::Complete => match c {
                    '\\' => QuoteState::Escape,
                    '"' => QuoteState::Weak,
                    '\'' => QuoteState::Strong,
                    c if state == QuoteState::Complete
                        && c.is_whitespace()
                        && c != '\n'
                        && c != '\r' =>
                    {
                        QuoteState::WhiteSpace
                    }
                    _ => QuoteState::Complete,
                },
                QuoteState::Escape => QuoteState::Complete,
                QuoteState::Weak => match c {
                    '\\' => QuoteState::WeakEscape,
                    '"' => QuoteState::Complete,
                    _ => QuoteState::Weak,
                },
                QuoteState::WeakEscape => QuoteState::Weak,
                QuoteState::Strong => match c {
                    '\\' => QuoteState::StrongEscape,
                    '\'' => QuoteState::Complete,
                    _ => QuoteState::Strong,
                },
                QuoteState::StrongEscape => QuoteState::Strong,
                QuoteState::Comment => QuoteState::Comment,
            };
        }
        (state, None)
    }
}

/// Where the parts of a `KEY=VALUE` line are, to say what is wrong with one dotenvy refused.
struct LineShape<'a> {
    /// Columns before the key (an `export ` included).
    indent: usize,
    key: Option<&'a str>,
    value: &'a str,
    value_column: usize,
}

impl<'a> LineShape<'a> {
    fn of(line: &'a str) -> LineShape<'a> {
        let first = line.lines().next().unwrap_or_default();
        let mut indent = first.len() - first.trim_start().len();
        let mut rest = first.trim_start();
        if let Some(after) = rest.strip_prefix("export ") {
            indent += rest.len() - after.trim_start().len();
            rest = after.trim_start();
        }
        let Some(equals) = rest.find('=') else {
            return LineShape {
                indent,
                key: None,
                value: "",
                value_column: indent + 1,
            };
        };
        // `rest` is a part of `first`, which starts `line`: the value runs on from there.
        let after = &line[first.len() - rest.len() + equals + 1..];
        let blank = after.len() - after.trim_start().len();
        LineShape {
            indent,
            key: Some(rest[..equals].trim_end()),
            value: after.trim_start(),
            value_column: indent + equals + 2 + blank,
        }
    }

    /// The error for a line dotenvy refused.
    fn describe(&self, place: impl Fn(usize) -> Place) -> EnvError {
        let Some(key) = self.key else {
            return EnvError::MissingEquals {
                place: place(self.indent + 1),
            };
        };
        if let Err(error) = check_key(key, place(self.indent + 1)) {
            return error;
        }
        let key = key.to_string();
        let place = place(self.value_column);
        match self.value.chars().next() {
            Some(quote @ ('"' | '\'')) => match find_closing_quote(&self.value[1..], quote) {
                None => EnvError::UnclosedQuote { place, key },
                Some(_) => EnvError::TrailingText { place, key },
            },
            _ => EnvError::Unquoted { place, key },
        }
    }
}

/// Parses the `-e KEY=VALUE` arguments, in order (the value is taken as is, quotes included).
pub fn parse_assignments(arguments: &[String]) -> Result<Pairs, EnvErrors> {
    let mut pairs = Pairs::new();
    let mut errors = Vec::new();
    for (position, argument) in arguments.iter().enumerate() {
        let place = Place::Argument {
            index: position + 1,
        };
        let Some((key, value)) = argument.split_once('=') else {
            errors.push(EnvError::MissingEquals { place });
            continue;
        };
        match check_key(key, place.clone()).and_then(|()| check_value(key, value, place)) {
            Ok(()) => pairs.push((key.to_string(), value.to_string())),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(EnvErrors(errors))
    }
}

/// Merges the layers, later winning: the caller's environment, then each source in order.
pub fn merge<'a>(
    caller: impl IntoIterator<Item = (String, String)>,
    layers: impl IntoIterator<Item = &'a Pairs>,
) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = caller.into_iter().collect();
    for layer in layers {
        for (key, value) in layer {
            merged.insert(key.clone(), value.clone());
        }
    }
    merged
}

/// The caller's environment, skipping variables that are not valid UTF-8 (they cannot come
/// from a `.env` file either, and the services are configured through UTF-8 ones).
pub fn caller_environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

/// Values that must never be printed or logged: every variable whose name says it is a secret
/// (`SESSION_SECRET`, `*PASSWORD*`, `*TOKEN*`, `API_KEY`, ...; see [`names_a_secret`]), each
/// part of a comma-separated `SESSION_SECRET` (a rotation list), and the password inside any
/// URL (`DATABASE_URL=postgres://app:pw@db/app`, `REDIS_SESSION_URL`).
pub fn secret_values(env: &BTreeMap<String, String>) -> Vec<String> {
    let mut secrets = Vec::new();
    for (key, value) in env {
        if names_a_secret(key) {
            secrets.push(value.clone());
            secrets.extend(value.split(',').map(|part| part.trim().to_string()));
        }
        if value.contains("://") {
            secrets.extend(redis_url_password(value));
        }
    }
    if let Some(url) = env.get(REDIS_SESSION_URL) {
        // The session crate's parser knows every form the services accept.
        if let Some(password) = session::redis_url::RedisUrl::parse(url)
            .ok()
            .and_then(|parsed| parsed.password().map(str::to_string))
        {
            secrets.push(password);
        }
    }
    secrets.retain(|secret| !secret.is_empty());
    secrets
}

/// Whether a variable's name says its value is a secret: a word of it (split at `_`, `-`,
/// `.`) contains `SECRET`, `PASSWORD`, `PASSWD`, `TOKEN`, `PRIVATE` or `CREDENTIAL`, or is
/// `KEY`, `APIKEY`, `PASS` or `PWD` (`API_KEY`, `STRIPE_KEY`, `DB_PASS`, `MYSQL_PWD`; not
/// `PWD` alone, the working directory, nor `KEYBOARD` or `MONKEY`).
pub fn names_a_secret(name: &str) -> bool {
    const INSIDE: [&str; 6] = [
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "TOKEN",
        "PRIVATE",
        "CREDENTIAL",
    ];
    const WHOLE: [&str; 4] = ["KEY", "APIKEY", "PASS", "PWD"];
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper.split(['_', '-', '.']).collect();
    words.iter().any(|word| {
        INSIDE.iter().any(|inside| word.contains(inside))
            || (words.len() > 1 && WHOLE.contains(word))
            || *word == "APIKEY"
    })
}

/// The password in a Redis URL, in any form users bring: `redis://:pass@host`,
/// `redis://user:pass@host`, or the 2017 `redis://host:port?password=pass`. Both the raw and the
/// percent-decoded spelling are returned (either may end up in a log line).
pub fn redis_url_password(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            found.push(password.to_string());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some(("password", password)) = pair.split_once('=') {
                found.push(password.to_string());
            }
        }
    }
    let decoded: Vec<String> = found
        .iter()
        .map(|password| {
            percent_encoding::percent_decode_str(password)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    found.extend(decoded);
    found.retain(|password| !password.is_empty());
    found.dedup();
    found
}

fn check_key(key: &str, place: Place) -> Result<(), EnvError> {
    if key.is_empty() {
        return Err(EnvError::EmptyKey { place });
    }
    let valid = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        // The key is shown (it is not a secret), but only up to its first 40 characters in case
        // someone pasted a value where the key belongs.
        let shown: String = key.chars().take(40).collect();
        Err(EnvError::BadKey { place, key: shown })
    }
}

fn find_closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (offset, c) in body.char_indices() {
        if quote == '"' && c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        if c == quote && !escaped {
            return Some(offset);
        }
        escaped = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&[(&str, &str)], &str>) {
        let got = parse_dotenv(Path::new(".env"), text);
        match (got, expected) {
            (Ok(pairs), Ok(want)) => {
                let want: Pairs = want
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(pairs, want, "{text:?}");
            }
            (Err(errors), Err(want)) => assert_eq!(errors.to_string(), want, "{text:?}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_the_usual_forms() {
        check("A=1\n", Ok(&[("A", "1")]));
        check("# comment\n\nA = 1 \n", Ok(&[("A", "1")]));
        check("export A=1", Ok(&[("A", "1")]));
        check("A=1 # note", Ok(&[("A", "1")]));
        check("A=a#b", Ok(&[("A", "a#b")]));
        check("A='x # y'", Ok(&[("A", "x # y")]));
        check(r#"A="a\nb \"q\"""#, Ok(&[("A", "a\nb \"q\"")]));
        check(
            "A=\"line1\nline2\"\nB=2",
            Ok(&[("A", "line1\nline2"), ("B", "2")]),
        );
        check("A=", Ok(&[("A", "")]));
        check(
            "REDIS_SESSION_URL=redis://:p@h:1/0?x=y",
            Ok(&[("REDIS_SESSION_URL", "redis://:p@h:1/0?x=y")]),
        );
    }

    #[test]
    fn errors_name_the_place_and_never_the_value() {
        check("A=1\nSECRETVALUE\n", Err(".env:2:1: expected `KEY=VALUE`"));
        check("  =x", Err(".env:1:3: empty variable name before `=`"));
        check(
            "MY-KEY=hunter2",
            Err(".env:1:1: `MY-KEY` is not a valid variable name (use letters, digits and `_`, not starting with a digit)"),
        );
        check(
            "A='hunter2",
            Err(".env:1:3: the quoted value of `A` is never closed"),
        );
        check(
            "A=\"hunter2",
            Err(".env:1:3: the quoted value of `A` is never closed"),
        );
        check(
            "A='x' hunter2",
            Err(".env:1:3: unexpected text after the quoted value of `A`"),
        );
        // Every bad line is reported, not only the first.
        check(
            "X\nOK=1\n1A=2\n",
            Err(".env:1:1: expected `KEY=VALUE`\n.env:3:1: `1A` is not a valid variable name (use letters, digits and `_`, not starting with a digit)"),
        );
    }

    #[test]
    fn secrets_and_redis_passwords_are_found() {
        let env: BTreeMap<String, String> = [
            ("SESSION_SECRET", "new-secret,old-secret"),
            ("REDIS_SESSION_URL", "redis://:p%40ss@h:6379/0"),
            ("HOME", "/home/me"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let secrets = secret_values(&env);
        for expected in [
            "new-secret,old-secret",
            "new-secret",
            "old-secret",
            "p%40ss",
            "p@ss",
        ] {
            assert!(secrets.contains(&expected.to_string()), "{expected}");
        }
        assert!(!secrets.contains(&"/home/me".to_string()));
    }

    #[test]
    fn a_device_a_directory_a_huge_file_or_bytes_that_are_not_utf8_are_refused_with_where() {
        let reason = |path: &Path| match read_dotenv(path) {
            Err(EnvErrors(errors)) => errors[0].to_string(),
            Ok(_) => panic!("{} was read", path.display()),
        };
        assert!(reason(Path::new("/dev/zero")).contains("a device or a socket, not a file"));
        let dir = tempfile::tempdir().unwrap();
        assert!(reason(dir.path()).contains("a directory, not a file"));
        let huge = dir.path().join("huge.env");
        fs::write(&huge, vec![b'#'; (MAX_DOTENV + 1) as usize]).unwrap();
        assert!(reason(&huge).contains("larger than 4 MiB"));
        let latin1 = dir.path().join("latin1.env");
        fs::write(&latin1, b"A=1\nB=caf\xe9\n").unwrap();
        let said = reason(&latin1);
        assert!(said.contains("line 2, column 6: not UTF-8"), "{said}");
        assert!(!said.contains("caf"), "{said}");
    }

    #[test]
    fn names_and_urls_that_hold_secrets() {
        for name in [
            "SESSION_SECRET",
            "API_KEY",
            "stripe_key",
            "APIKEY",
            "DB_PASS",
            "MYSQL_PWD",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "private-key",
        ] {
            assert!(names_a_secret(name), "{name}");
        }
        for name in [
            "PWD", "OLDPWD", "KEYBOARD", "MONKEY", "HOME", "KEYS", "PATH",
        ] {
            assert!(!names_a_secret(name), "{name}");
        }
        let env: BTreeMap<String, String> = [
            ("DATABASE_URL", "postgres://app:db-pass-1@db/app"),
            ("HTTP_PROXY", "http://me:proxy%2Fpass@proxy:3128"),
            ("PUBLIC_URL", "https://example.test/app"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let secrets = secret_values(&env);
        assert_eq!(
            secrets,
            ["db-pass-1", "proxy%2Fpass", "proxy/pass"],
            "{secrets:?}"
        );
    }

    #[test]
    fn assignments_and_merge_layer_in_order() {
        let cli = parse_assignments(&["A=3".into(), "C=x=y".into()]).unwrap();
        let dotenv = parse_dotenv(Path::new(".env"), "A=2\nB=2").unwrap();
        let merged = merge(
            vec![("A".into(), "1".into()), ("Z".into(), "0".into())],
            [&dotenv, &cli],
        );
        assert_eq!(merged["A"], "3");
        assert_eq!(merged["B"], "2");
        assert_eq!(merged["C"], "x=y");
        assert_eq!(merged["Z"], "0");
        let errors = parse_assignments(&["novalue".into(), "B-2=x".into()]).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "`-e` #1: expected `KEY=VALUE`\n`-e` #2: `B-2` is not a valid variable name (use letters, digits and `_`, not starting with a digit)"
        );
    }

    /// What dotenvy itself makes of `text`: its variables, and how many items it refused.
    fn dotenvy_reads(text: &str) -> (Pairs, usize) {
        let mut pairs = Pairs::new();
        let mut refused = 0;
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok(pair) => pairs.push(pair),
                Err(_) => refused += 1,
            }
        }
        (pairs, refused)
    }

    /// A corpus of `.env` files as people write them: stack reads every one to the same
    /// variables as dotenvy, in the same order.
    #[test]
    fn stack_reads_a_corpus_of_dotenv_files_as_dotenvy_does() {
        std::env::set_var("STACK_TEST_FROM_CALLER", "caller-value");
        let corpus = [
            "A=1\nB=2\n",
            "# comment\n\n  # indented comment\nA=1 # trailing comment\nB=a#b\n",
            "export A=1\nexport B='two words'\n",
            "A=x\nB=${A}y\nC=$A\nD='${A}'\nE=\"${A} and more\"\nF=${STACK_TEST_FROM_CALLER}\nG=${MISSING}z\n",
            "JSON='{\"a\": 1, \"b\": [2, 3]}'\n",
            "MULTI=\"line one\nline two\n  line three\"\nAFTER=1\n",
            "SINGLE='first\nsecond'\nNEXT=2\n",
            "ESCAPES=\"one\\ntwo \\\"quoted\\\" back\\\\slash\"\n",
            "CRLF=1\r\nALSO=2\r\n",
            "EMPTY=\nQUOTED_EMPTY=\"\"\nSPACE_ONLY=' '\n",
            "URL=redis://:p%40ss@127.0.0.1:6379/0?password=x\n",
            "KEY_1=a\nkey_lower=b\n_UNDERSCORE=c\n",
            "HASH_IN_QUOTES=\"a # not a comment\"\nHASH_UNQUOTED=a#b\n",
            "CONCAT=\"x\"y'z'\n",
            "ESCAPED_DOLLAR=\"\\$NOT\"\n",
            "",
            "\n\n\n",
        ];
        for text in corpus {
            let ours = parse_dotenv(Path::new(".env"), text)
                .unwrap_or_else(|errors| panic!("{text:?}: {errors}"));
            let (theirs, refused) = dotenvy_reads(text);
            assert_eq!(refused, 0, "{text:?}");
            assert_eq!(ours, theirs, "{text:?}");
        }
        std::env::remove_var("STACK_TEST_FROM_CALLER");
    }

    /// And a line dotenvy refuses is refused by stack too, at the line it is on, while the
    /// lines around it read the same.
    #[test]
    fn lines_dotenvy_refuses_are_refused_at_their_line() {
        let corpus = [
            ("A=1\nNO EQUALS HERE\nB=2\n", vec![2]),
            ("A=x y\nB=2\n", vec![1]),
            ("A='hunter2-canary\nB=2\n", vec![1]),
            (
                "OK=1\n\n# c\nBAD='x' tail\nGOOD=\"multi\nline\"\n1A=2\n",
                vec![4, 7],
            ),
        ];
        for (text, lines) in corpus {
            let (_, refused) = dotenvy_reads(text);
            let errors = parse_dotenv(Path::new(".env"), text).unwrap_err();
            assert_eq!(errors.0.len(), refused, "{text:?}: {errors}");
            let at: Vec<usize> = errors
                .0
                .iter()
                .map(|error| match error {
                    EnvError::MissingEquals { place }
                    | EnvError::EmptyKey { place }
                    | EnvError::BadKey { place, .. }
                    | EnvError::UnclosedQuote { place, .. }
                    | EnvError::TrailingText { place, .. }
                    | EnvError::Unquoted { place, .. }
                    | EnvError::NulByte { place, .. }
                    | EnvError::TooLong { place, .. } => match place {
                        Place::File { line, .. } => *line,
                        Place::Argument { .. } => 0,
                    },
                    EnvError::Read { .. } => 0,
                })
                .collect();
            assert_eq!(at, lines, "{text:?}: {errors}");
            assert!(!errors.to_string().contains("canary"), "{errors}");
        }
    }
}
