//! The alias rules file (RULES.md): parse and validate it, normalise request paths, and answer
//! "which rule serves METHOD + PATH". Patterns are compiled once, when a file is parsed; a
//! lookup only reads. This module does no I/O: callers hand in the file's text and its name, and
//! decide what to do with errors and warnings. It never resolves a `dest` against the running
//! stack either: it says which form a `dest` has ([`Dest`]); the supervisor resolves it.
//!
//! - [`normalize_path`]: the path a request is matched on and forwarded with.
//! - [`RuleSet::parse`]: text to rules, every error at once ([`RuleFileErrors`]), plus warnings.
//! - [`RuleSet::route`]: the first rule whose pathname and method match.
//! - [`RuleSet::to_json`]: the rules back as a file that parses to the same rules.
//!
//! Rules are numbered from 0 in the API (`route` returns an index into [`RuleSet::rules`]) and
//! from 1 in everything a person reads ("rule 2").
//!
//! Limits: a file is at most [`MAX_FILE_BYTES`] (4 MiB, about 100,000 short rules); within it,
//! any number of rules and any mix of wildcards load in linear time (20,000 `/pN/*/**` rules in
//! well under a second) and a lookup costs a few hash probes plus the rules whose literal
//! prefix the path starts with (bench/RESULTS.md, issue 20).

mod dest;
mod error;
mod json;
mod lint;
mod matcher;
mod method;
mod parse;
mod path;
mod pattern;

use http::Method;

pub use dest::Dest;
pub use error::{Position, RuleError, RuleErrorKind, RuleFileErrors, RuleWarning, RuleWarningKind};
pub use path::{normalize_path, PathError};

/// Whether `name` is in the IANA method registry, exactly as written (upper case).
pub fn is_known_method(name: &str) -> bool {
    method::KNOWN_METHODS.binary_search(&name).is_ok()
}

use matcher::Matcher;

/// The largest rules file read: beyond it, a file is refused before it is parsed.
pub const MAX_FILE_BYTES: usize = 4 << 20;
use method::MethodSet;

/// A parsed, validated and compiled rules file.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    matcher: Matcher,
}

/// What [`RuleSet::parse`] gives back: the rules, and warnings worth printing.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub rules: RuleSet,
    pub warnings: Vec<RuleWarning>,
}

/// One rule of the file.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The normalised pattern; `None` = fallthrough (matches every path).
    pub pathname: Option<String>,
    /// Canonical (upper-case) methods in file order; `None` = any method.
    pub methods: Option<Vec<Method>>,
    pub dest: Dest,
    /// Position in the file, from 0.
    pub index: usize,
    /// Where the rule's object starts in the file.
    pub position: Position,
    method_set: MethodSet,
}

impl Rule {
    /// The pathname as a table shows it: the pattern, or `[fallthrough]`.
    pub fn pathname_display(&self) -> &str {
        self.pathname.as_deref().unwrap_or("[fallthrough]")
    }

    /// The methods as a table shows them: `GET,POST`, or `*` for any.
    pub fn methods_display(&self) -> String {
        match &self.methods {
            None => "*".into(),
            Some(methods) => methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl RuleSet {
    /// `file` is the name used in messages (e.g. "aliases.json"). Every error of the file at once.
    pub fn parse(file: &str, text: &str) -> Result<Loaded, RuleFileErrors> {
        let to_errors = |errors| RuleFileErrors {
            file: file.to_string(),
            errors,
        };
        if text.len() > MAX_FILE_BYTES {
            return Err(to_errors(vec![RuleError {
                position: Position { line: 1, column: 1 },
                rule: None,
                kind: RuleErrorKind::TooLarge(text.len()),
            }]));
        }
        // Editors on Windows start UTF-8 files with a byte-order mark; JSON has no place for it,
        // and the editor shows none, so positions are counted without it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let parsed = parse::parse(file, text).map_err(to_errors)?;
        let rules: Vec<Rule> = parsed
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| Rule {
                method_set: rule
                    .methods
                    .as_deref()
                    .map_or(MethodSet::ANY, MethodSet::of),
                pathname: rule.pathname,
                methods: rule.methods,
                dest: rule.dest,
                index,
                position: rule.position,
            })
            .collect();
        let patterns: Vec<(Option<&str>, MethodSet)> = rules
            .iter()
            .map(|rule| (rule.pathname.as_deref(), rule.method_set))
            .collect();
        let matcher = Matcher::new(&patterns);
        let mut warnings = parsed.warnings;
        warnings.extend(lint::lint(file, &rules, &matcher));
        warnings.sort_by_key(|warning| (warning.rule, warning.position));
        Ok(Loaded {
            rules: RuleSet { rules, matcher },
            warnings,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Index of the first rule whose pathname and method match; the path is already normalised
    /// (see [`normalize_path`]). The method is compared exactly as received: `get` is not `GET`.
    pub fn route(&self, method: &Method, normalized_path: &str) -> Option<usize> {
        self.matcher.route(method, normalized_path)
    }

    /// The `{"rules":[...]}` file text that parses back to the same rules.
    /// Where each rule starts in its file, as (line, column).
    pub fn positions(&self) -> Vec<[usize; 2]> {
        self.rules
            .iter()
            .map(|rule| [rule.position.line, rule.position.column])
            .collect()
    }

    /// The same rules, said to start at `positions` (those of the file they were first read
    /// from, kept beside their [`RuleSet::to_json`] text); unchanged unless there is one
    /// position per rule.
    pub fn at_positions(mut self, positions: &[[usize; 2]]) -> RuleSet {
        if positions.len() == self.rules.len() {
            for (rule, &[line, column]) in self.rules.iter_mut().zip(positions) {
                rule.position = Position { line, column };
            }
        }
        self
    }

    pub fn to_json(&self) -> String {
        let rules: Vec<serde_json::Value> = self
            .rules
            .iter()
            .map(|rule| {
                let mut object = serde_json::Map::new();
                if let Some(pathname) = &rule.pathname {
                    object.insert("pathname".into(), pathname.clone().into());
                }
                match rule.methods.as_deref() {
                    None => {}
                    Some([method]) => {
                        object.insert("method".into(), method.as_str().into());
                    }
                    Some(methods) => {
                        object.insert(
                            "method".into(),
                            methods
                                .iter()
                                .map(|m| m.as_str())
                                .collect::<Vec<_>>()
                                .into(),
                        );
                    }
                }
                object.insert("dest".into(), rule.dest.to_string().into());
                serde_json::Value::Object(object)
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&serde_json::json!({ "rules": rules }))
            .expect("strings and arrays always serialise");
        text.push('\n');
        text
    }

    /// The error to report when rule `index`'s `dest` names nothing in the running stack,
    /// positioned like the file's other errors. `existing` lists what the stack does have.
    pub fn unresolved_dest(
        &self,
        file: &str,
        index: usize,
        existing: Vec<String>,
    ) -> RuleFileErrors {
        let rule = &self.rules[index];
        RuleFileErrors {
            file: file.to_string(),
            errors: vec![RuleError {
                position: rule.position,
                rule: Some(index),
                kind: RuleErrorKind::UnresolvedDest {
                    dest: rule.dest.to_string(),
                    existing,
                },
            }],
        }
    }
}

#[cfg(test)]
mod tests;
