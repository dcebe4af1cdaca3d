//! From the file's text to validated rules, or every error of the file at once.
//!
//! serde_json decides whether the text is JSON (and words the syntax error with its line and
//! column); the position-keeping reader in [`super::json`] then walks the same text so each
//! semantic error points at the key or value it is about.

use http::Method;

use super::dest::Dest;
use super::error::{Position, RuleError, RuleErrorKind, RuleWarning, RuleWarningKind};
use super::json::{self, Spanned, Value};
use super::method;
use super::path::normalize_path;

/// A rule as read from the file, before compiling.
pub(crate) struct ParsedRule {
    pub pathname: Option<String>,
    pub methods: Option<Vec<Method>>,
    pub dest: Dest,
    pub position: Position,
}

pub(crate) struct Parsed {
    pub rules: Vec<ParsedRule>,
    pub warnings: Vec<RuleWarning>,
}

pub(crate) fn parse(file: &str, text: &str) -> Result<Parsed, Vec<RuleError>> {
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(vec![syntax_error(&error)]);
    }
    let root = json::parse(text).map_err(|error| {
        vec![RuleError {
            position: error.position,
            rule: None,
            kind: RuleErrorKind::InvalidJson(error.message.to_string()),
        }]
    })?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let file_error = |position, kind| RuleError {
        position,
        rule: None,
        kind,
    };

    let Value::Object(members) = &root.value else {
        return Err(vec![file_error(
            root.position,
            RuleErrorKind::NotAnObject(root.value.kind()),
        )]);
    };
    let mut rules_value = None;
    for (key, value) in members {
        match key.value.as_str() {
            "rules" if rules_value.is_some() => errors.push(file_error(
                key.position,
                RuleErrorKind::DuplicateKey("rules".into()),
            )),
            "rules" => rules_value = Some(value),
            other => errors.push(file_error(
                key.position,
                RuleErrorKind::UnknownFileKey(other.into()),
            )),
        }
    }
    let Some(rules_value) = rules_value else {
        errors.push(file_error(root.position, RuleErrorKind::MissingRules));
        return Err(sorted(errors));
    };
    let items = match &rules_value.value {
        Value::Array(items) if items.is_empty() => {
            errors.push(file_error(rules_value.position, RuleErrorKind::RulesEmpty));
            return Err(sorted(errors));
        }
        Value::Array(items) => items,
        other => {
            errors.push(file_error(
                rules_value.position,
                RuleErrorKind::RulesNotAnArray(other.kind()),
            ));
            return Err(sorted(errors));
        }
    };

    let mut rules = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let mut rule_errors = Vec::new();
        let mut report = |position, kind| {
            rule_errors.push(RuleError {
                position,
                rule: Some(index),
                kind,
            })
        };
        if let Some(rule) = parse_rule(file, index, item, &mut report, &mut warnings) {
            rules.push(rule);
        }
        errors.append(&mut rule_errors);
    }
    if errors.is_empty() {
        Ok(Parsed { rules, warnings })
    } else {
        Err(sorted(errors))
    }
}

fn sorted(mut errors: Vec<RuleError>) -> Vec<RuleError> {
    errors.sort_by_key(|error| error.position);
    errors
}

/// serde_json's message without its " at line L column C" tail: the position goes in front.
fn syntax_error(error: &serde_json::Error) -> RuleError {
    let message = error.to_string();
    let tail = format!(" at line {} column {}", error.line(), error.column());
    let message = message.strip_suffix(&tail).unwrap_or(&message).to_string();
    RuleError {
        // serde_json says column 0 for "before the first character" (an empty file).
        position: Position {
            line: error.line(),
            column: error.column().max(1),
        },
        rule: None,
        kind: RuleErrorKind::InvalidJson(message),
    }
}

/// Reads one rule, reporting each problem; `None` when there was any.
fn parse_rule(
    file: &str,
    index: usize,
    item: &Spanned<Value>,
    report: &mut impl FnMut(Position, RuleErrorKind),
    warnings: &mut Vec<RuleWarning>,
) -> Option<ParsedRule> {
    let Value::Object(members) = &item.value else {
        report(
            item.position,
            RuleErrorKind::RuleNotAnObject(item.value.kind()),
        );
        return None;
    };
    let mut ok = true;
    let mut fail = |position, kind| {
        ok = false;
        report(position, kind);
    };
    let (mut pathname, mut methods, mut dest) = (None, None, None);
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in members {
        let name = key.value.as_str();
        if matches!(name, "pathname" | "method" | "dest") {
            if seen.contains(&name) {
                fail(key.position, RuleErrorKind::DuplicateKey(name.into()));
                continue;
            }
            seen.push(name);
        }
        match name {
            "pathname" => pathname = Some(value),
            "method" => methods = Some(value),
            "dest" => dest = Some(value),
            other => fail(
                key.position,
                RuleErrorKind::UnknownKey {
                    key: other.into(),
                    hint: key_hint(other),
                },
            ),
        }
    }

    let pathname = pathname.and_then(|value| {
        let Value::String(text) = &value.value else {
            fail(
                value.position,
                RuleErrorKind::NotAString {
                    key: "pathname",
                    found: value.value.kind(),
                },
            );
            return None;
        };
        if !text.starts_with('/') {
            fail(
                value.position,
                RuleErrorKind::PathnameNotAbsolute(text.clone()),
            );
            return None;
        }
        match normalize_path(text) {
            Ok(normalized) => {
                if normalized != *text {
                    warnings.push(RuleWarning {
                        file: file.into(),
                        position: value.position,
                        rule: index,
                        kind: RuleWarningKind::PathnameNormalized {
                            written: text.clone(),
                            normalized: normalized.to_string(),
                        },
                    });
                }
                Some(normalized.into_owned())
            }
            Err(reason) => {
                fail(
                    value.position,
                    RuleErrorKind::InvalidPathname {
                        pathname: text.clone(),
                        reason,
                    },
                );
                None
            }
        }
    });

    let methods = methods.and_then(|value| {
        let names: Vec<&Spanned<Value>> = match &value.value {
            Value::String(_) => vec![value],
            Value::Array(items) if items.is_empty() => {
                fail(value.position, RuleErrorKind::MethodsEmpty);
                return None;
            }
            Value::Array(items) => items.iter().collect(),
            other => {
                fail(
                    value.position,
                    RuleErrorKind::MethodNotAStringOrArray(other.kind()),
                );
                return None;
            }
        };
        let mut methods: Vec<Method> = Vec::new();
        for name in names {
            match &name.value {
                Value::String(text) => match method::canonical(text) {
                    Some(method) if !methods.contains(&method) => methods.push(method),
                    Some(_) => {}
                    None => fail(name.position, RuleErrorKind::UnknownMethod(text.clone())),
                },
                other => fail(
                    name.position,
                    RuleErrorKind::MethodNotAStringOrArray(other.kind()),
                ),
            }
        }
        Some(methods)
    });

    let dest = match dest {
        None => {
            fail(item.position, RuleErrorKind::MissingDest);
            None
        }
        Some(value) => match &value.value {
            Value::String(text) if text.is_empty() => {
                fail(value.position, RuleErrorKind::EmptyDest);
                None
            }
            Value::String(text) => match Dest::parse(text) {
                Ok(dest) => {
                    if let Dest::NowSh { host, service } = &dest {
                        warnings.push(RuleWarning {
                            file: file.into(),
                            position: value.position,
                            rule: index,
                            kind: RuleWarningKind::NowShDest {
                                dest: host.clone(),
                                service: service.clone(),
                            },
                        });
                    }
                    Some(dest)
                }
                Err(reason) => {
                    fail(
                        value.position,
                        RuleErrorKind::InvalidDest {
                            dest: text.clone(),
                            reason,
                        },
                    );
                    None
                }
            },
            other => {
                fail(
                    value.position,
                    RuleErrorKind::NotAString {
                        key: "dest",
                        found: other.kind(),
                    },
                );
                None
            }
        },
    };

    if !ok {
        return None;
    }
    Some(ParsedRule {
        pathname,
        methods,
        dest: dest?,
        position: item.position,
    })
}

/// The key someone most likely meant: the 2017 docs' `methods`, `path`, or a case slip.
fn key_hint(key: &str) -> Option<&'static str> {
    match key.to_ascii_lowercase().as_str() {
        "methods" | "method" => Some("method"),
        "path" | "paths" | "pathnames" | "pathname" => Some("pathname"),
        "dest" | "destination" | "dst" => Some("dest"),
        _ => None,
    }
}
