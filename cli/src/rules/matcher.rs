//! The compiled form of a rule set's patterns, built once at load and only read afterwards.
//!
//! - Literal pathnames (most rules) go into one hash map from path to rule indices, so they
//!   cost one lookup however many there are.
//! - Wildcard and fallthrough rules stay in file order, each with its literal prefix, literal
//!   suffix and minimum length as cheap filters. The common shapes `/x/**`, `/x**` and
//!   `/**.js` are decided by those filters alone.
//! - A pattern with `*` but no `**` matches segment by segment (`*` never crosses `/`), each
//!   segment by its literal pieces in order; no regex, no allocation.
//! - Only patterns mixing `**` with other wildcards (`/a/**/b*`) need an automaton: they are
//!   the patterns of one `RegexSet`, run at most once per lookup and only when such a rule
//!   survives the filters.
//!
//! The first rule (lowest index) whose method and path match wins, as RULES.md says, whichever
//! structure it sits in: the scan stops at the first wildcard rule past the best literal hit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use http::Method;
use regex::{RegexSet, SetMatches};

use super::method::{self, MethodSet};
use super::pattern::{self, Token};

#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    /// Literal pathname to the indices of the rules that have it, ascending.
    exact: HashMap<Box<str>, Vec<u32>, BuildHasherDefault<Fnv1a>>,
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
    check: Check,
}

/// What decides a wildcard rule once its filters pass.
#[derive(Debug, Clone)]
enum Check {
    /// Prefix, suffix and length decide alone (fallthrough, `P**`, `P**S`).
    Filters,
    /// `*` wildcards only: the path has exactly these segments after its leading `/`.
    Segments(Box<[SegmentGlob]>),
    /// Its pattern's index in the `RegexSet`.
    Set(usize),
}

/// One segment of a `*`-only pattern, split at its stars: `b-*-x` is `["b-", "-x"]`.
#[derive(Debug, Clone)]
struct SegmentGlob {
    pieces: Box<[Box<str>]>,
}

impl Matcher {
    /// `rules` is each rule's (pathname, methods), in file order. Pathnames are validated and
    /// normalised already; only a pathname the regex crate refuses (too big) is an error.
    pub(crate) fn new(rules: &[(Option<&str>, MethodSet)]) -> Result<Matcher, regex::Error> {
        let mut exact: HashMap<Box<str>, Vec<u32>, BuildHasherDefault<Fnv1a>> = HashMap::default();
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
                && self.check(glob, path, &mut set_matches)
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
            matching[glob.index as usize] =
                glob.passes_filters(path) && self.check(glob, path, &mut set_matches);
        }
        matching
    }

    /// The part of a wildcard rule's match that its filters leave open. The `RegexSet` runs
    /// only the first time a lookup needs it.
    fn check(&self, glob: &Glob, path: &str, set_matches: &mut Option<SetMatches>) -> bool {
        match &glob.check {
            Check::Filters => true,
            Check::Segments(segments) => {
                // Walk the path's segments by hand: `str::split` costs more than the checks.
                // A path that does not start with `/` (not normalised) matches no pattern.
                let Some(mut rest) = path.strip_prefix('/') else {
                    return false;
                };
                let last = segments.len() - 1;
                for (i, segment) in segments.iter().enumerate() {
                    let end = rest.bytes().position(|b| b == b'/');
                    let (path_segment, after) = match end {
                        Some(end) if i < last => (&rest[..end], &rest[end + 1..]),
                        None if i == last => (rest, ""),
                        _ => return false,
                    };
                    if !segment.matches(path_segment) {
                        return false;
                    }
                    rest = after;
                }
                true
            }
            Check::Set(set_index) => set_matches
                .get_or_insert_with(|| self.set.matches(path))
                .matched(*set_index),
        }
    }
}

impl Glob {
    /// `pattern` is `None` for a fallthrough. Adds the pattern's regex to `set_patterns` when
    /// only an automaton can decide it.
    fn new(index: u32, pattern: Option<&str>, set_patterns: &mut Vec<String>) -> Glob {
        let pattern = pattern.unwrap_or("");
        let prefix = pattern::literal_prefix(pattern);
        let suffix = pattern::literal_suffix(pattern);
        let tokens = pattern::tokens(pattern);
        let check = if matches!(
            tokens.as_slice(),
            [] | [Token::Literal(_), Token::DoubleStar]
                | [Token::Literal(_), Token::DoubleStar, Token::Literal(_)]
        ) {
            Check::Filters
        } else if !tokens.contains(&Token::DoubleStar) {
            // Patterns start with `/` (validated), so segments start after it.
            Check::Segments(pattern[1..].split('/').map(SegmentGlob::new).collect())
        } else {
            set_patterns.push(pattern::to_regex(pattern));
            Check::Set(set_patterns.len() - 1)
        };
        Glob {
            index,
            prefix: prefix.into(),
            suffix: suffix.into(),
            min_len: prefix.len() + suffix.len(),
            check,
        }
    }

    fn passes_filters(&self, path: &str) -> bool {
        path.len() >= self.min_len
            && starts_with(path, &self.prefix)
            && ends_with(path, &self.suffix)
    }
}

impl SegmentGlob {
    fn new(segment: &str) -> SegmentGlob {
        SegmentGlob {
            pieces: segment.split('*').map(Box::from).collect(),
        }
    }

    /// `p0*p1*...*pn` matches when the segment starts with `p0`, ends with `pn`, and the
    /// pieces between occur in order in what is left: finding each leftmost is enough.
    fn matches(&self, segment: &str) -> bool {
        let [first, middle @ .., last] = &*self.pieces else {
            let [only] = &*self.pieces else {
                unreachable!("split always yields at least one piece")
            };
            return segment.len() == only.len() && starts_with(segment, only);
        };
        if segment.len() < first.len() + last.len()
            || !starts_with(segment, first)
            || !ends_with(segment, last)
        {
            return false;
        }
        let mut rest = &segment[first.len()..segment.len() - last.len()];
        for piece in middle.iter().filter(|piece| !piece.is_empty()) {
            match rest.find(&**piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

// Prefix and suffix checks compare bytes in a plain loop instead of calling `memcmp`: the
// needles are a few bytes long, a call cost ~10 ns each on the bench machine, and an empty
// needle (an empty `Box<str>` has a dangling pointer) sent glibc's AVX-512 `memcmp` into a
// suppressed-fault path of ~300 ns per call.
fn starts_with(haystack: &str, needle: &str) -> bool {
    haystack.len() >= needle.len()
        && same_bytes(&haystack.as_bytes()[..needle.len()], needle.as_bytes())
}

fn ends_with(haystack: &str, needle: &str) -> bool {
    haystack.len() >= needle.len()
        && same_bytes(
            &haystack.as_bytes()[haystack.len() - needle.len()..],
            needle.as_bytes(),
        )
}

/// `a == b` for slices of equal length, without a `memcmp` call.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut differ = 0u8;
    for (x, y) in a.iter().zip(b) {
        differ |= x ^ y;
    }
    differ == 0
}

/// FNV-1a: a fast hash for short keys. The keys come from the rules file, not from requests,
/// so there is no key flooding to defend against; a lookup only reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_globs() {
        let glob = SegmentGlob::new("a*b*c");
        for yes in ["abc", "aXbYc", "abbc", "abcbc", "a-b-b-c"] {
            assert!(glob.matches(yes), "{yes}");
        }
        for no in ["ab", "acb", "bc", "aXc", ""] {
            assert!(!glob.matches(no), "{no}");
        }
        assert!(SegmentGlob::new("*").matches(""));
        assert!(SegmentGlob::new("").matches(""));
        assert!(!SegmentGlob::new("").matches("x"));
        assert!(SegmentGlob::new("**").matches("anything"));
    }
}
