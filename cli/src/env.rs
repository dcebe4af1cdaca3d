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
    let text = fs::read_to_string(path).map_err(|error| {
        let reason = match error.kind() {
            io::ErrorKind::NotFound => "no such file".to_string(),
            _ => error.to_string(),
        };
        EnvErrors(vec![EnvError::Read {
            path: path.to_path_buf(),
            reason,
        }])
    })?;
    parse_dotenv(path, &text)
}

/// Parses dotenv text: `KEY=VALUE`, optional `export `, `#` comments, blank lines, values in
/// single quotes (literal) or double quotes (`\n`, `\"`, `\\` escapes, may span lines), and
/// unquoted values with a trailing ` # comment` removed.
pub fn parse_dotenv(path: &Path, text: &str) -> Result<Pairs, EnvErrors> {
    // Editors on Windows start UTF-8 files with a byte-order mark; it is no part of a key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut pairs = Pairs::new();
    let mut errors = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line_number = index + 1;
        let place = |column: usize| Place::File {
            path: path.to_path_buf(),
            line: line_number,
            column,
        };
        let raw = lines[index];
        index += 1;
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (line, indent) = match line.strip_prefix("export ") {
            Some(rest) => {
                let skipped = line.len() - rest.trim_start().len();
                (rest.trim_start(), indent + skipped)
            }
            None => (line, indent),
        };
        let Some(equals) = line.find('=') else {
            errors.push(EnvError::MissingEquals {
                place: place(indent + 1),
            });
            continue;
        };
        let key = line[..equals].trim_end();
        if let Err(error) = check_key(key, place(indent + 1)) {
            errors.push(error);
            continue;
        }
        let after_equals = &line[equals + 1..];
        let value_start = after_equals.len() - after_equals.trim_start().len();
        let value_text = after_equals.trim_start();
        let value_column = indent + equals + 2 + value_start;
        match value_text.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                // A double-quoted value may continue on the next lines until its closing quote.
                let mut body = value_text[1..].to_string();
                let mut closed = find_closing_quote(&body, quote);
                while closed.is_none() && quote == '"' && index < lines.len() {
                    body.push('\n');
                    body.push_str(lines[index]);
                    index += 1;
                    closed = find_closing_quote(&body, quote);
                }
                let Some(end) = closed else {
                    errors.push(EnvError::UnclosedQuote {
                        place: place(value_column),
                        key: key.to_string(),
                    });
                    continue;
                };
                let rest = body[end + 1..].trim();
                if !(rest.is_empty() || rest.starts_with('#')) {
                    errors.push(EnvError::TrailingText {
                        place: place(value_column),
                        key: key.to_string(),
                    });
                    continue;
                }
                let inner = &body[..end];
                let value = if quote == '"' {
                    unescape_double_quoted(inner)
                } else {
                    inner.to_string()
                };
                match check_value(key, &value, place(value_column)) {
                    Ok(()) => pairs.push((key.to_string(), value)),
                    Err(error) => errors.push(error),
                }
            }
            _ => {
                let value = match value_text.find(" #") {
                    Some(comment) => &value_text[..comment],
                    None => value_text,
                };
                let value = value.trim_end();
                match check_value(key, value, place(value_column)) {
                    Ok(()) => pairs.push((key.to_string(), value.to_string())),
                    Err(error) => errors.push(error),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(EnvErrors(errors))
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
/// (`SESSION_SECRET`, `*PASSWORD*`, `*TOKEN*`, ...), each part of a comma-separated
/// `SESSION_SECRET` (a rotation list), and the password inside `REDIS_SESSION_URL`.
pub fn secret_values(env: &BTreeMap<String, String>) -> Vec<String> {
    const SECRET_WORDS: [&str; 5] = ["SECRET", "PASSWORD", "PASSWD", "TOKEN", "PRIVATE"];
    let mut secrets = Vec::new();
    for (key, value) in env {
        let upper = key.to_ascii_uppercase();
        if SECRET_WORDS.iter().any(|word| upper.contains(word)) {
            secrets.push(value.clone());
            secrets.extend(value.split(',').map(|part| part.trim().to_string()));
        }
    }
    if let Some(url) = env.get(REDIS_SESSION_URL) {
        secrets.extend(redis_url_password(url));
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

fn unescape_double_quoted(inner: &str) -> String {
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            value.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => value.push('\n'),
            Some('r') => value.push('\r'),
            Some('t') => value.push('\t'),
            Some(other) => value.push(other),
            None => value.push('\\'),
        }
    }
    value
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
}
