//! The compiled form of a rule set's patterns, built once at load and only read afterwards.
//!
//! Literal pathnames (most rules) go into one hash map from path to rule indices, so they cost
//! one lookup however many there are. Wildcard and fallthrough rules stay in file order, each
//! with its literal prefix, literal suffix and minimum length as cheap filters; the common
//! shapes `/x/**`, `/x**` and `/**.js` are decided by those filters alone, and only other
//! shapes run their anchored regex. The first rule (lowest index) whose method and path match
//! wins, as RULES.md says, whichever of the two structures it sits in.

use std::collections::HashMap;

use http::Method;
use regex::Regex;

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
}

#[derive(Debug, Clone)]
struct Glob {
    index: u32,
    prefix: Box<str>,
    suffix: Box<str>,
    /// `prefix.len() + suffix.len()`: shorter paths cannot match.
    min_len: usize,
    /// `None` when prefix, suffix and length decide alone.
    regex: Option<Regex>,
}

impl Matcher {
    /// `rules` is each rule's (pathname, methods), in file order. Pathnames are validated and
    /// normalised already; only a pathname the regex crate refuses (too big) is an error.
    pub(crate) fn new(rules: &[(Option<&str>, MethodSet)]) -> Result<Matcher, regex::Error> {
        let mut exact: HashMap<Box<str>, Vec<u32>> = HashMap::new();
        let mut globs = Vec::new();
        for (index, (pathname, _)) in rules.iter().enumerate() {
            let index = u32::try_from(index).expect("a rules file has fewer than 4 billion rules");
            match pathname {
                Some(pattern) if pattern::is_literal(pattern) => {
                    exact.entry((*pattern).into()).or_default().push(index)
                }
                Some(pattern) => globs.push(Glob::new(index, pattern)?),
                None => globs.push(Glob {
                    index,
                    prefix: "".into(),
                    suffix: "".into(),
                    min_len: 0,
                    regex: None,
                }),
            }
        }
        Ok(Matcher {
            exact,
            globs,
            methods: rules.iter().map(|&(_, methods)| methods).collect(),
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
        for glob in &self.globs {
            if glob.index >= best {
                break;
            }
            if self.methods[glob.index as usize].contains(bit) && glob.matches(path) {
                best = glob.index;
                break;
            }
        }
        (best != u32::MAX).then_some(best as usize)
    }

    /// Whether rule `index`'s pathname alone matches `path` (for lint).
    pub(crate) fn pathname_matches(
        &self,
        index: usize,
        pathname: Option<&str>,
        path: &str,
    ) -> bool {
        match pathname {
            None => true,
            Some(pattern) if pattern::is_literal(pattern) => pattern == path,
            Some(_) => self
                .globs
                .iter()
                .find(|glob| glob.index as usize == index)
                .is_some_and(|glob| glob.matches(path)),
        }
    }
}

impl Glob {
    fn new(index: u32, pattern: &str) -> Result<Glob, regex::Error> {
        let prefix = pattern::literal_prefix(pattern);
        let suffix = pattern::literal_suffix(pattern);
        // Prefix, suffix and length decide exactly when the only wildcard is one `**`.
        let decided_by_filters = matches!(
            pattern::tokens(pattern).as_slice(),
            [Token::Literal(_), Token::DoubleStar]
                | [Token::Literal(_), Token::DoubleStar, Token::Literal(_)]
        );
        let regex = if decided_by_filters {
            None
        } else {
            Some(Regex::new(&pattern::to_regex(pattern))?)
        };
        Ok(Glob {
            index,
            prefix: prefix.into(),
            suffix: suffix.into(),
            min_len: prefix.len() + suffix.len(),
            regex,
        })
    }

    fn matches(&self, path: &str) -> bool {
        path.len() >= self.min_len
            && path.starts_with(&*self.prefix)
            && path.ends_with(&*self.suffix)
            && self.regex.as_ref().is_none_or(|regex| regex.is_match(path))
    }
}
