//! Warnings for rules that are legal but almost certainly not what the author meant: a rule
//! that never matches because an earlier one catches everything it could (duplicates being the
//! plainest case), and a `/x/**` rule with nothing for `/x` itself.
//!
//! The shadowing check is sound but not complete: it only claims a rule is shadowed when that
//! is certain (an earlier fallthrough or `/**`, an equal pattern, an earlier `P**` or `P/**`
//! whose literal part prefixes the later pattern's literal prefix, or an earlier pattern that
//! matches a later literal pathname), with a superset of its methods. It never warns wrongly.

use std::collections::HashMap;

use super::error::{RuleWarning, RuleWarningKind};
use super::matcher::Matcher;
use super::pattern::{self, Token};
use super::Rule;

pub(crate) fn lint(file: &str, rules: &[Rule], matcher: &Matcher) -> Vec<RuleWarning> {
    let mut warnings = Vec::new();
    let covering = Covering::new(rules);
    for later in rules {
        let superset = |index: usize| rules[index].method_set.is_superset_of(later.method_set);
        // A literal pathname is one path: which rule matches it first is one question to the
        // matcher. A wildcard one is covered by few shapes, each looked up, never scanned.
        let before = u32::try_from(later.index).expect("fewer than 4 billion rules");
        let shadowing = match later
            .pathname
            .as_deref()
            .filter(|pattern| pattern::is_literal(pattern))
        {
            Some(path) => matcher.first_match(path, before, superset),
            None => covering.first(later, superset),
        }
        .map(|index| &rules[index]);
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
                    .first_match(base, u32::MAX, |index| rules[index].pathname.is_some())
                    .is_some();
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

/// The earlier rules that certainly match every path a wildcard (or absent) pathname matches,
/// indexed by the three shapes that can: a fallthrough or `/**`, the same pattern, and a
/// `P**` whose `P` starts the later pattern's literal prefix.
struct Covering<'a> {
    /// Fallthroughs and `/**`, ascending.
    universal: Vec<usize>,
    /// Each wildcard pattern to the rules that have it, ascending.
    same: HashMap<&'a str, Vec<usize>>,
    /// Each `P` of a `P**` pattern to the rules that have it, ascending, and the lengths of
    /// those `P`s.
    subtrees: HashMap<&'a str, Vec<usize>>,
    subtree_lengths: Vec<usize>,
}

impl<'a> Covering<'a> {
    fn new(rules: &'a [Rule]) -> Covering<'a> {
        let mut covering = Covering {
            universal: Vec::new(),
            same: HashMap::new(),
            subtrees: HashMap::new(),
            subtree_lengths: Vec::new(),
        };
        for rule in rules {
            let Some(pattern) = rule.pathname.as_deref() else {
                covering.universal.push(rule.index);
                continue;
            };
            if pattern == "/**" {
                covering.universal.push(rule.index);
            }
            if pattern::is_literal(pattern) {
                continue;
            }
            covering.same.entry(pattern).or_default().push(rule.index);
            if let [Token::Literal(prefix), Token::DoubleStar] = pattern::tokens(pattern).as_slice()
            {
                covering
                    .subtrees
                    .entry(prefix)
                    .or_default()
                    .push(rule.index);
                covering.subtree_lengths.push(prefix.len());
            }
        }
        covering.subtree_lengths.sort_unstable();
        covering.subtree_lengths.dedup();
        covering
    }

    /// The first rule before `later` that covers it and that `wanted` accepts.
    fn first(&self, later: &Rule, wanted: impl Fn(usize) -> bool) -> Option<usize> {
        let first_of = |indices: &[usize]| {
            indices
                .iter()
                .copied()
                .take_while(|&index| index < later.index)
                .find(|&index| wanted(index))
        };
        let mut best = first_of(&self.universal);
        if let Some(pattern) = later.pathname.as_deref() {
            let candidates =
                self.same
                    .get(pattern)
                    .into_iter()
                    .chain(self.subtree_lengths.iter().filter_map(|&length| {
                        self.subtrees
                            .get(pattern::literal_prefix(pattern).get(..length)?)
                    }));
            for indices in candidates {
                best = match (best, first_of(indices)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        best
    }
}
