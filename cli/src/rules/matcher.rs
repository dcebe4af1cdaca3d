//! The compiled form of a rule set's patterns, built once at load and only read afterwards.
//!
//! - Literal pathnames (most rules) go into one hash map from path to rule indices, so they
//!   cost one lookup however many there are.
//! - Wildcard and fallthrough rules are indexed by their literal prefix (the text before the
//!   first `*`): a lookup hashes only the path's prefixes of the lengths some rule's prefix has,
//!   and checks only the rules whose prefix the path starts with. Twenty thousand `/pN/*/**`
//!   rules cost a few lookups, not a scan.
//! - Each candidate is checked behind its literal suffix and minimum length. The common shapes
//!   `/x/**`, `/x**` and `/**.js` are decided by those filters alone; a pattern with `*` but no
//!   `**` matches segment by segment (`*` never crosses `/`); one mixing `**` with other
//!   wildcards (`/a/**/b*`) runs a small automaton over the path's bytes (a bit set of pattern
//!   positions, linear in the path's length). No regex: no size limit, no compile cost.
//!
//! The first rule (lowest index) whose method and path match wins, as RULES.md says, whichever
//! structure it sits in.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use http::Method;

use super::method::{self, MethodSet};
use super::pattern::{self, Token};

type FnvMap<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv1a>>;

#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    /// Literal pathname to the indices of the rules that have it, ascending.
    exact: FnvMap<Vec<u32>>,
    /// Wildcard and fallthrough rules, ascending by index.
    globs: Vec<Glob>,
    /// Literal prefix to the positions in `globs` of the rules that have it, ascending. The
    /// fallthroughs (no prefix at all) are apart, in `unprefixed`: no hashing for them.
    by_prefix: FnvMap<Vec<u32>>,
    unprefixed: Vec<u32>,
    /// The lengths of those prefixes, ascending, each once.
    prefix_lengths: Vec<usize>,
    /// Each rule's methods, by rule index.
    methods: Vec<MethodSet>,
}

#[derive(Debug, Clone)]
struct Glob {
    index: u32,
    suffix: Box<str>,
    /// `prefix.len() + suffix.len()`: shorter paths cannot match.
    min_len: usize,
    check: Check,
}

/// What decides a wildcard rule once its prefix, suffix and length fit.
#[derive(Debug, Clone)]
enum Check {
    /// Prefix, suffix and length decide alone (fallthrough, `P**`, `P**S`).
    Filters,
    /// `*` wildcards only: the path has exactly these segments after its leading `/`.
    Segments(Box<[SegmentGlob]>),
    /// `**` with other wildcards: the automaton over the whole pattern.
    Automaton(Automaton),
}

/// One segment of a `*`-only pattern, split at its stars: `b-*-x` is `["b-", "-x"]`.
#[derive(Debug, Clone)]
struct SegmentGlob {
    pieces: Box<[Box<str>]>,
}

impl Matcher {
    /// `rules` is each rule's (pathname, methods), in file order. Pathnames are validated and
    /// normalised already.
    pub(crate) fn new(rules: &[(Option<&str>, MethodSet)]) -> Matcher {
        let mut exact: FnvMap<Vec<u32>> = HashMap::default();
        let mut globs = Vec::new();
        let mut by_prefix: FnvMap<Vec<u32>> = HashMap::default();
        let mut unprefixed = Vec::new();
        for (index, (pathname, _)) in rules.iter().enumerate() {
            let index = u32::try_from(index).expect("a rules file has fewer than 4 billion rules");
            match pathname {
                Some(pattern) if pattern::is_literal(pattern) => {
                    exact.entry((*pattern).into()).or_default().push(index)
                }
                _ => {
                    let pattern = pathname.unwrap_or("");
                    let position = u32::try_from(globs.len()).expect("fewer globs than rules");
                    match pattern::literal_prefix(pattern) {
                        "" => unprefixed.push(position),
                        prefix => by_prefix.entry(prefix.into()).or_default().push(position),
                    }
                    globs.push(Glob::new(index, pattern));
                }
            }
        }
        let mut prefix_lengths: Vec<usize> = by_prefix.keys().map(|prefix| prefix.len()).collect();
        prefix_lengths.sort_unstable();
        prefix_lengths.dedup();
        Matcher {
            exact,
            globs,
            by_prefix,
            unprefixed,
            prefix_lengths,
            methods: rules.iter().map(|&(_, methods)| methods).collect(),
        }
    }

    /// Index of the first rule whose pathname and method match the (normalised) path.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Option<usize> {
        let bit = method::bit_of(method);
        self.first_match(path, u32::MAX, |index| self.methods[index].contains(bit))
    }

    /// The lowest rule index below `before` whose pathname matches `path` and that `wanted`
    /// accepts (by rule index).
    pub(crate) fn first_match(
        &self,
        path: &str,
        before: u32,
        wanted: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best = before;
        if let Some(indices) = self.exact.get(path) {
            if let Some(&index) = indices
                .iter()
                .take_while(|&&index| index < best)
                .find(|&&index| wanted(index as usize))
            {
                best = index;
            }
        }
        // Each bucket is ascending: its first match is its best; the best over buckets wins.
        for bucket in self.buckets(path) {
            for &position in bucket {
                let glob = &self.globs[position as usize];
                if glob.index >= best {
                    break;
                }
                if wanted(glob.index as usize) && glob.matches(path) {
                    best = glob.index;
                    break;
                }
            }
        }
        (best != before).then_some(best as usize)
    }

    /// The glob positions of the rules whose literal prefix `path` starts with, bucket by
    /// bucket.
    fn buckets<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a [u32]> + 'a {
        let prefixed = self
            .prefix_lengths
            .iter()
            .take_while(move |&&length| length <= path.len())
            .filter_map(move |&length| {
                let prefix = path.get(..length)?;
                self.by_prefix.get(prefix).map(Vec::as_slice)
            });
        std::iter::once(self.unprefixed.as_slice())
            .filter(|bucket| !bucket.is_empty())
            .chain(prefixed)
    }
}

impl Glob {
    fn new(index: u32, pattern: &str) -> Glob {
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
            Check::Automaton(Automaton::new(&tokens))
        };
        Glob {
            index,
            suffix: suffix.into(),
            min_len: prefix.len() + suffix.len(),
            check,
        }
    }

    /// Whether the path matches, its prefix being known to match already.
    fn matches(&self, path: &str) -> bool {
        if path.len() < self.min_len || !ends_with(path, &self.suffix) {
            return false;
        }
        match &self.check {
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
            Check::Automaton(automaton) => automaton.matches(path.as_bytes()),
        }
    }
}

/// A pattern as a sequence of steps run over a path's bytes: the set of steps reached so far
/// is a bit set, advanced once per byte (a Thompson simulation), so time is linear in the
/// path's length and no input backtracks.
#[derive(Debug, Clone)]
struct Automaton {
    steps: Box<[Step]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Byte(u8),
    /// Any bytes but `/`, including none.
    Star,
    /// Any bytes, including none.
    DoubleStar,
}

impl Automaton {
    fn new(tokens: &[Token<'_>]) -> Automaton {
        let mut steps = Vec::new();
        for token in tokens {
            match token {
                Token::Literal(text) => steps.extend(text.bytes().map(Step::Byte)),
                Token::Star => steps.push(Step::Star),
                Token::DoubleStar => steps.push(Step::DoubleStar),
            }
        }
        Automaton {
            steps: steps.into(),
        }
    }

    fn matches(&self, path: &[u8]) -> bool {
        let n_states = self.steps.len() + 1;
        // State `i`: the first `i` steps are done. Up to 128 states live in one word; longer
        // patterns (rare) use a vector.
        if n_states <= 128 {
            let mut states =
                self.closure(1u128, |set, i| set & (1 << i) != 0, |set, i| *set |= 1 << i);
            for &byte in path {
                let mut next = 0u128;
                for (i, step) in self.steps.iter().enumerate() {
                    if states & (1 << i) != 0 && self.advances(*step, byte) {
                        next |= 1
                            << if matches!(step, Step::Byte(_)) {
                                i + 1
                            } else {
                                i
                            };
                    }
                }
                states = self.closure(next, |set, i| set & (1 << i) != 0, |set, i| *set |= 1 << i);
                if states == 0 {
                    return false;
                }
            }
            states & (1 << self.steps.len()) != 0
        } else {
            let mut states = vec![false; n_states];
            states[0] = true;
            let mut states = self.closure(states, |set, i| set[i], |set, i| set[i] = true);
            for &byte in path {
                let mut next = vec![false; n_states];
                for (i, step) in self.steps.iter().enumerate() {
                    if states[i] && self.advances(*step, byte) {
                        next[if matches!(step, Step::Byte(_)) {
                            i + 1
                        } else {
                            i
                        }] = true;
                    }
                }
                states = self.closure(next, |set, i| set[i], |set, i| set[i] = true);
            }
            states[self.steps.len()]
        }
    }

    /// Whether the step at a reached state takes `byte` (to the next state for a byte, to
    /// itself for a star).
    fn advances(&self, step: Step, byte: u8) -> bool {
        match step {
            Step::Byte(wanted) => byte == wanted,
            Step::Star => byte != b'/',
            Step::DoubleStar => true,
        }
    }

    /// Adds the states reached without a byte: a star can match nothing, so the state after
    /// it is reached whenever it is.
    fn closure<S>(
        &self,
        mut set: S,
        has: impl Fn(&S, usize) -> bool,
        add: impl Fn(&mut S, usize),
    ) -> S {
        // In order, so a run of stars passes the state on to its end.
        for (i, step) in self.steps.iter().enumerate() {
            if !matches!(step, Step::Byte(_)) && has(&set, i) {
                add(&mut set, i + 1);
            }
        }
        set
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
