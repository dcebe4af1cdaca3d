//! The compiled form of a rule set's patterns, built once at load and only read afterwards.
//!
//! Literal pathnames (most rules) go into one hash map from path to rule indices, so they cost
//! one lookup however many there are. Wildcard and fallthrough rules stay in file order, each
//! with its literal prefix, literal suffix and minimum length as cheap filters; the common
//! shapes `/x/**`, `/x**` and `/**.js` are decided by those filters alone. Every other shape
//! is one pattern of a single `RegexSet`, run at most once per lookup (only when a rule of that
//! kind survives the filters), so a file full of such rules costs one automaton pass, not one
//! regex per rule. The first rule (lowest index) whose method and path match wins, as RULES.md
//! says, whichever structure it sits in.

use std::collections::HashMap;

use http::Method;
use regex::{RegexSet, SetMatches};

use super::method::{self, MethodSet};
use super::pattern::{self, Token};

#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    /// Literal pathname to the indices of the rules that have it, ascending.
    exact: HashMap<Box<str>, Vec<u32>>,
    /// Wildcard and fallthrough rules, ascending by index.
    globs: Vec<Glob>,
    /// Each rule's methods, by rule index.
    methods: Vec<MethodSet>,
    /// The patterns that filters cannot decide, one set pattern each (`Glob::set_index`).
    set: RegexSet,
}

#[derive(Debug, Clone)]
struct Glob {
    index: u32,
    prefix: Box<str>,
    suffix: Box<str>,
    /// `prefix.len() + suffix.len()`: shorter paths cannot match.
    min_len: usize,
    /// Its pattern's index in the `RegexSet`; `None` when prefix, suffix and length decide.
    set_index: Option<usize>,
}

impl Matcher {
    /// `rules` is each rule's (pathname, methods), in file order. Pathnames are validated and
    /// normalised already; only a pathname the regex crate refuses (too big) is an error.
    pub(crate) fn new(rules: &[(Option<&str>, MethodSet)]) -> Result<Matcher, regex::Error> {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut globs = Vec::new();
        let mut set_patterns = Vec::new();
        for (index, (pathname, _)) in rules.iter().enumerate() {
            let index = u32::try_from(index).expect("a rules file has fewer than 4 billion rules");
            match pathname {
                Some(pattern) if pattern::is_literal(pattern) => {
                    exact.entry((*pattern).into()).or_default().push(index)
                }
                _ => {
                    globs.push(Glob::new(index, *pathname, &mut set_patterns));
                }
            }
        }
        Ok(Matcher {
            exact,
            globs,
            methods: rules.iter().map(|&(_, methods)| methods).collect(),
            set: RegexSet::new(&set_patterns)?,
        })
    }

    /// Index of the first rule whose pathname and method match the (normalised) path.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Option<usize> {
        let bit = method::bit_of(method);
        let mut best = u32::MAX;
        if let Some(indices) = self.exact.get(path) {
            if let Some(&index) = indices
                .iter()
                .find(|&&index| self.methods[index as usize].contains(bit))
            {
                best = index;
            }
        }
        let mut set_matches: Option<SetMatches> = None;
        for glob in &self.globs {
            if glob.index >= best {
                break;
            }
            if self.methods[glob.index as usize].contains(bit)
                && glob.passes_filters(path)
                && glob.set_index.is_none_or(|set_index| {
                    set_matches
                        .get_or_insert_with(|| self.set.matches(path))
                        .matched(set_index)
                })
            {
                best = glob.index;
                break;
            }
        }
        (best != u32::MAX).then_some(best as usize)
    }

    /// For each rule, whether its pathname alone (methods aside) matches `path`. For lint,
    /// which asks this about every literal pathname: one pass over the rules per question.
    pub(crate) fn pathnames_matching(&self, path: &str) -> Vec<bool> {
        let mut matching = vec![false; self.methods.len()];
        for &index in self.exact.get(path).into_iter().flatten() {
            matching[index as usize] = true;
        }
        let mut set_matches: Option<SetMatches> = None;
        for glob in &self.globs {
            matching[glob.index as usize] = glob.passes_filters(path)
                && glob.set_index.is_none_or(|set_index| {
                    set_matches
                        .get_or_insert_with(|| self.set.matches(path))
                        .matched(set_index)
                });
        }
        matching
    }
}

impl Glob {
    /// `pattern` is `None` for a fallthrough. Adds the pattern's regex to `set_patterns` when
    /// the filters cannot decide it alone.
    fn new(index: u32, pattern: Option<&str>, set_patterns: &mut Vec<String>) -> Glob {
        let pattern = pattern.unwrap_or("");
        let prefix = pattern::literal_prefix(pattern);
        let suffix = pattern::literal_suffix(pattern);
        // Prefix, suffix and length decide exactly when the only wildcard is one `**`.
        let decided_by_filters = matches!(
            pattern::tokens(pattern).as_slice(),
            [] | [Token::Literal(_), Token::DoubleStar]
                | [Token::Literal(_), Token::DoubleStar, Token::Literal(_)]
        );
        let set_index = (!decided_by_filters).then(|| {
            set_patterns.push(pattern::to_regex(pattern));
            set_patterns.len() - 1
        });
        Glob {
            index,
            prefix: prefix.into(),
            suffix: suffix.into(),
            min_len: prefix.len() + suffix.len(),
            set_index,
        }
    }

    fn passes_filters(&self, path: &str) -> bool {
        path.len() >= self.min_len
            && path.starts_with(&*self.prefix)
            && path.ends_with(&*self.suffix)
    }
}
