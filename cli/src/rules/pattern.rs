//! `pathname` patterns: `*` is any run of characters inside one segment (never `/`), `**` any
//! run including `/`, everything else is literal (so `.` or `+` mean themselves), and a pattern
//! is anchored at both ends. Three or more stars in a row mean the same as `**`.
//!
//! This module turns a pattern into tokens, and keeps a direct, obviously-correct matcher over
//! the tokens that tests use as the reference.

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Literal(&'a str),
    /// `*`: any run without `/`.
    Star,
    /// `**`: any run, `/` included.
    DoubleStar,
}

pub(crate) fn tokens(pattern: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        let stars = rest.len() - rest.trim_start_matches('*').len();
        if stars == 0 {
            let end = rest.find('*').unwrap_or(rest.len());
            out.push(Token::Literal(&rest[..end]));
            rest = &rest[end..];
        } else {
            out.push(if stars == 1 {
                Token::Star
            } else {
                Token::DoubleStar
            });
            rest = &rest[stars..];
        }
    }
    out
}

/// True when the pattern has no wildcard: it matches exactly one path.
pub(crate) fn is_literal(pattern: &str) -> bool {
    !pattern.contains('*')
}

/// The pattern's text before its first wildcard: every path it matches starts with this.
pub(crate) fn literal_prefix(pattern: &str) -> &str {
    &pattern[..pattern.find('*').unwrap_or(pattern.len())]
}

/// The pattern's text after its last wildcard: every path it matches ends with this.
pub(crate) fn literal_suffix(pattern: &str) -> &str {
    &pattern[pattern.rfind('*').map_or(0, |i| i + 1)..]
}

/// The reference matcher: a direct recursive reading of the definition. Exponential in the
/// worst case, which is fine for tests and lint, never used on the request path.
#[cfg(test)]
pub(crate) fn reference_match(pattern: &str, path: &str) -> bool {
    fn go(tokens: &[Token<'_>], path: &str) -> bool {
        match tokens.split_first() {
            None => path.is_empty(),
            Some((Token::Literal(text), rest)) => {
                path.starts_with(text) && go(rest, &path[text.len()..])
            }
            Some((Token::Star, rest)) => {
                let limit = path.find('/').unwrap_or(path.len());
                (0..=limit)
                    .filter(|&n| path.is_char_boundary(n))
                    .any(|n| go(rest, &path[n..]))
            }
            Some((Token::DoubleStar, rest)) => (0..=path.len())
                .filter(|&n| path.is_char_boundary(n))
                .any(|n| go(rest, &path[n..])),
        }
    }
    go(&tokens(pattern), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_fold_runs_of_stars() {
        assert_eq!(
            tokens("/a/***x*"),
            vec![
                Token::Literal("/a/"),
                Token::DoubleStar,
                Token::Literal("x"),
                Token::Star
            ]
        );
        assert_eq!(literal_prefix("/api/**"), "/api/");
        assert_eq!(literal_suffix("/**/x.js"), "/x.js");
        assert_eq!(literal_suffix("/login"), "/login");
    }
}
