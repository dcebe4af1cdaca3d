//! Warnings for rules that are legal but almost certainly not what the author meant: a rule
//! that never matches because an earlier one catches everything it could (duplicates being the
//! plainest case), and a `/x/**` rule with nothing for `/x` itself.
//!
//! The shadowing check is sound but not complete: it only claims a rule is shadowed when that
//! is certain (an earlier fallthrough or `/**`, an equal pattern, an earlier `P**` or `P/**`
//! whose literal part prefixes the later pattern's literal prefix, or an earlier pattern that
//! matches a later literal pathname), with a superset of its methods. It never warns wrongly.

use super::error::{RuleWarning, RuleWarningKind};
use super::matcher::Matcher;
use super::pattern::{self, Token};
use super::Rule;

pub(crate) fn lint(file: &str, rules: &[Rule], matcher: &Matcher) -> Vec<RuleWarning> {
    let mut warnings = Vec::new();
    for later in rules {
        let shadowing = rules[..later.index].iter().find(|earlier| {
            earlier.method_set.is_superset_of(later.method_set)
                && pathname_covers(matcher, earlier, later)
        });
        if let Some(earlier) = shadowing {
            let kind =
                if earlier.pathname == later.pathname && earlier.method_set == later.method_set {
                    RuleWarningKind::Duplicate {
                        earlier: earlier.index,
                    }
                } else {
                    RuleWarningKind::Shadowed {
                        earlier: earlier.index,
                        pattern: earlier.pathname_display().to_string(),
                        methods: earlier.methods_display(),
                    }
                };
            warnings.push(RuleWarning {
                file: file.into(),
                position: later.position,
                rule: later.index,
                kind,
            });
            continue;
        }
        if let Some(base) = later
            .pathname
            .as_deref()
            .and_then(|pattern| pattern.strip_suffix("/**"))
        {
            let covered = base.is_empty()
                || !pattern::is_literal(base)
                || rules.iter().any(|rule| {
                    rule.pathname.is_some()
                        && matcher.pathname_matches(rule.index, rule.pathname.as_deref(), base)
                });
            if !covered {
                warnings.push(RuleWarning {
                    file: file.into(),
                    position: later.position,
                    rule: later.index,
                    kind: RuleWarningKind::BaseNotCovered {
                        pattern: format!("{base}/**"),
                        base: base.to_string(),
                    },
                });
            }
        }
    }
    warnings
}

/// Whether every path `later`'s pathname matches is certainly matched by `earlier`'s.
fn pathname_covers(matcher: &Matcher, earlier: &Rule, later: &Rule) -> bool {
    let Some(earlier_pattern) = earlier.pathname.as_deref() else {
        return true;
    };
    if earlier_pattern == "/**" {
        return true;
    }
    let Some(later_pattern) = later.pathname.as_deref() else {
        return false;
    };
    if earlier_pattern == later_pattern {
        return true;
    }
    if pattern::is_literal(later_pattern) {
        return matcher.pathname_matches(earlier.index, Some(earlier_pattern), later_pattern);
    }
    match pattern::tokens(earlier_pattern).as_slice() {
        [Token::Literal(prefix), Token::DoubleStar] => {
            pattern::literal_prefix(later_pattern).starts_with(prefix)
        }
        _ => false,
    }
}
