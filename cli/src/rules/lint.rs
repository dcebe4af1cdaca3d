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
    // For each rule of the `P**` shape (one trailing `**`), its `P`; worked out once, not per pair.
    let subtree_prefixes: Vec<Option<&str>> = rules
        .iter()
        .map(
            |rule| match pattern::tokens(rule.pathname.as_deref()?).as_slice() {
                [Token::Literal(prefix), Token::DoubleStar] => Some(*prefix),
                _ => None,
            },
        )
        .collect();
    for later in rules {
        // A literal pathname is one path: which rules match it is one question to the matcher.
        let matching_later = later
            .pathname
            .as_deref()
            .filter(|pattern| pattern::is_literal(pattern))
            .map(|path| matcher.pathnames_matching(path));
        let shadowing = rules[..later.index].iter().find(|earlier| {
            earlier.method_set.is_superset_of(later.method_set)
                && match &matching_later {
                    Some(matching) => matching[earlier.index],
                    None => pathname_covers(earlier, subtree_prefixes[earlier.index], later),
                }
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
                || matcher
                    .pathnames_matching(base)
                    .iter()
                    .zip(rules)
                    .any(|(&matches, rule)| matches && rule.pathname.is_some());
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

/// Whether every path `later`'s (wildcard or absent) pathname matches is certainly matched by
/// `earlier`'s. Literal `later` pathnames are asked of the matcher instead.
/// `earlier_subtree_prefix` is `P` when `earlier`'s pattern is `P**`.
fn pathname_covers(earlier: &Rule, earlier_subtree_prefix: Option<&str>, later: &Rule) -> bool {
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
    earlier_subtree_prefix
        .is_some_and(|prefix| pattern::literal_prefix(later_pattern).starts_with(prefix))
}
