//! What can be wrong with a rules file (errors: the file is refused whole) and what is merely
//! suspicious (warnings: the file is used). Each names the file, line and column, and the rule
//! (numbered from 1, as a person counts them in the file).

use std::fmt;

pub use super::json::Position;

/// Every error found in one rules file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleFileErrors {
    /// The file's name as given (e.g. `aliases.json`).
    pub file: String,
    pub errors: Vec<RuleError>,
}

impl fmt::Display for RuleFileErrors {
    /// One line per error: `aliases.json:4:7: rule 2: unknown key ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{error}", self.file)?;
        }
        Ok(())
    }
}

/// One error, where it is, and which rule it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub position: Position,
    /// The rule's index (0-based) when the error is inside a rule.
    pub rule: Option<usize>,
    pub kind: RuleErrorKind,
}

impl fmt::Display for RuleError {
    /// `4:7: rule 2: <kind>` (the caller puts the file name in front).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.position.line, self.position.column)?;
        if let Some(index) = self.rule {
            write!(f, "rule {}: ", index + 1)?;
        }
        write!(f, "{}", self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorKind {
    #[error("the file is {} KiB; a rules file may be at most {} KiB (about 100,000 short rules): split it over several aliases", .0.div_ceil(1024), super::MAX_FILE_BYTES / 1024)]
    TooLarge(usize),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("the file must be one JSON object like {{\"rules\": [...]}}, found {0}")]
    NotAnObject(&'static str),
    #[error("no `rules` key: the file must look like {{\"rules\": [...]}}")]
    MissingRules,
    #[error("unknown key `{0}`{hint}", hint = file_key_hint(.0))]
    UnknownFileKey(String),
    #[error("`rules` must be an array of rules, found {0}")]
    RulesNotAnArray(&'static str),
    #[error("`rules` is empty: add at least one rule, e.g. {{\"dest\": \"reader\"}}")]
    RulesEmpty,
    #[error("a rule must be an object like {{\"pathname\": \"/login\", \"dest\": \"writer\"}}, found {0}")]
    RuleNotAnObject(&'static str),
    #[error("no `dest`: every rule needs one (a service, deployment, alias or URL)")]
    MissingDest,
    #[error("`dest` is empty: name a service, deployment, alias or URL")]
    EmptyDest,
    #[error("`{key}` must be a string, found {found}")]
    NotAString {
        key: &'static str,
        found: &'static str,
    },
    #[error("`dest` `{dest}` {reason}")]
    InvalidDest { dest: String, reason: String },
    #[error("unknown key `{key}`{}", match hint { Some(hint) => format!(", did you mean `{hint}`?"), None => ": a rule has only `pathname`, `method` and `dest`".into() })]
    UnknownKey {
        key: String,
        hint: Option<&'static str>,
    },
    #[error("`{0}` appears twice in this object")]
    DuplicateKey(String),
    #[error("`{0}` is not an HTTP method (GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, ...)")]
    UnknownMethod(String),
    #[error("`method` must be a method name or an array of them, found {0}")]
    MethodNotAStringOrArray(&'static str),
    #[error("`method` is an empty array: leave `method` out to match every method")]
    MethodsEmpty,
    #[error("`pathname` must start with `/`, found `{0}`")]
    PathnameNotAbsolute(String),
    #[error("`pathname` `{pathname}` is not a valid path: {reason}")]
    InvalidPathname {
        pathname: String,
        reason: super::PathError,
    },
    /// Raised when the rules are applied to a running stack, not by parsing.
    #[error("`dest` `{dest}` resolves to nothing; this stack has: {}", if existing.is_empty() { "nothing yet".to_string() } else { existing.join(", ") })]
    UnresolvedDest { dest: String, existing: Vec<String> },
}

fn file_key_hint(key: &str) -> &'static str {
    if key.eq_ignore_ascii_case("rule") || key.eq_ignore_ascii_case("rules") {
        ", did you mean `rules`?"
    } else {
        ": the file's only key is `rules`"
    }
}

/// Something legal but probably not what the author meant; the file is still used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: rule {}: {kind}", position.line, position.column, rule + 1)]
pub struct RuleWarning {
    pub file: String,
    pub position: Position,
    /// The rule's index (0-based).
    pub rule: usize,
    pub kind: RuleWarningKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleWarningKind {
    #[error("never matches: rule {} has the same pathname and method", earlier + 1)]
    Duplicate { earlier: usize },
    #[error("never matches: rule {} (`{pattern}`, {methods}) catches every request it could", earlier + 1)]
    Shadowed {
        earlier: usize,
        pattern: String,
        methods: String,
    },
    #[error("`{pattern}` does not match `{base}` itself and no rule does; add a rule for `{base}` or write `{base}**`")]
    BaseNotCovered { pattern: String, base: String },
    #[error(
        "`{written}` is matched as `{normalized}`: request paths are normalised before matching"
    )]
    PathnameNormalized { written: String, normalized: String },
    #[error("`{dest}` is a now.sh host: it goes to the service `{service}` unless a local deployment has that id")]
    NowShDest { dest: String, service: String },
}
