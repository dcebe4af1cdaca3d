//! Request path normalisation: the one function that decides which path a request is matched
//! on and forwarded with, so the routing decision and the upstream always see the same path.
//!
//! What it does, in order (RULES.md "Matching"):
//! - a path must start with `/`; a `?` or `#` means the caller passed more than the path;
//! - control characters, spaces and non-ASCII bytes are rejected (they never reach us on the
//!   wire through a valid request line);
//! - `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`/lo%67in` is
//!   `/login`); other escapes are kept with upper-case hex (`%3a` becomes `%3A`);
//! - an encoded `/` (`%2F`) is rejected: decoding it would let `/login%2F..%2Fadmin` mean
//!   `/admin` to an upstream that decodes before resolving, keeping it would make one segment
//!   look like two to some upstreams; refusing it (400) is the only answer both sides agree on
//!   (Apache's `AllowEncodedSlashes Off` does the same). `%00` is rejected too;
//! - empty segments are merged (`//login` is `/login`, as nginx's `merge_slashes`), `.` segments
//!   removed and `..` segments pop the previous one, never above the root (RFC 3986 5.2.4);
//! - case and trailing slashes are kept: `/LOGIN` and `/login/` are not `/login`.
//!
//! It never looks at the query string or the host, and never allocates for a path that is
//! already normal.

use std::borrow::Cow;

/// Why a request path is refused; the proxy answers 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a path must start with `/`")]
    NotAbsolute,
    #[error("a path cannot contain `{0}`: pass only the path, without query string or fragment")]
    NotAPath(char),
    #[error("invalid character {0:?} in the path")]
    InvalidCharacter(char),
    #[error("`%` must be followed by two hex digits")]
    BadEscape,
    #[error("an encoded `/` (`%2F`) is not allowed in a path")]
    EncodedSlash,
    #[error("an encoded NUL (`%00`) is not allowed in a path")]
    EncodedNul,
}

/// Normalises a request path (no query string) the way matching and forwarding both use it.
/// See the module documentation for the exact rules.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // One pass over the bytes: refuse what is never valid, and notice whether anything needs
    // rewriting (an escape, an empty, `.` or `..` segment); most paths need nothing.
    let bytes = path.as_bytes();
    let mut needs_rewrite = false;
    let mut segment_start = 1;
    for i in 1..=bytes.len() {
        // A virtual `/` after the last byte closes the last segment.
        let byte = bytes.get(i).copied().unwrap_or(b'/');
        match byte {
            b'/' => {
                let segment = &bytes[segment_start..i];
                // An empty last segment is a trailing slash, which is kept.
                let empty_inside = segment.is_empty() && i < bytes.len();
                if empty_inside || matches!(segment, [b'.'] | [b'.', b'.']) {
                    needs_rewrite = true;
                }
                segment_start = i + 1;
            }
            b'?' | b'#' => return Err(PathError::NotAPath(byte as char)),
            b'%' => needs_rewrite = true,
            0x21..=0x7e => {}
            _ => {
                // Every byte before `i` is ASCII, so `i` is a character boundary.
                let bad = path[i..].chars().next().unwrap_or(byte as char);
                return Err(PathError::InvalidCharacter(bad));
            }
        }
    }
    if !needs_rewrite {
        return Ok(Cow::Borrowed(path));
    }

    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<String> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, raw) in segments.iter().enumerate() {
        let segment = decode_segment(raw)?;
        trailing_slash = false;
        match segment.as_str() {
            "" | "." => trailing_slash = i == last,
            ".." => {
                kept.pop();
                trailing_slash = i == last;
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    // A path whose only escapes are already upper-case hex comes out as it went in.
    if out == path {
        return Ok(Cow::Borrowed(path));
    }
    Ok(Cow::Owned(out))
}

/// Decodes the escapes of unreserved characters in one segment and upper-cases the others.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let high = bytes.get(i + 1).and_then(|&b| (b as char).to_digit(16));
        let low = bytes.get(i + 2).and_then(|&b| (b as char).to_digit(16));
        let (Some(high), Some(low)) = (high, low) else {
            return Err(PathError::BadEscape);
        };
        let decoded = (high * 16 + low) as u8;
        match decoded {
            b'/' => return Err(PathError::EncodedSlash),
            0 => return Err(PathError::EncodedNul),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(decoded as char)
            }
            _ => {
                out.push('%');
                out.push_str(&format!("{decoded:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Ok(path)` = normalised to that path; `Err` = refused with 400.
    fn check(input: &str, expected: Result<&str, PathError>) {
        let got = normalize_path(input);
        assert_eq!(
            got.as_deref().map_err(Clone::clone),
            expected,
            "normalize_path({input:?})"
        );
    }

    #[test]
    fn table() {
        use PathError::*;
        check("/login", Ok("/login"));
        check("/x/../login", Ok("/login"));
        check("/%2e%2e/login", Ok("/login"));
        check("/%2E%2E/login", Ok("/login"));
        check("/lo%67in", Ok("/login"));
        check("/login/../admin", Ok("/admin"));
        check("//login", Ok("/login"));
        check("/login//", Ok("/login/"));
        check("/login%2F..%2Fadmin", Err(EncodedSlash));
        check("/login%2f..%2fadmin", Err(EncodedSlash));
        check("/LOGIN", Ok("/LOGIN"));
        check("/login/", Ok("/login/"));
        check("/loginx", Ok("/loginx"));
        check("/login%00", Err(EncodedNul));
        check("/login?next=/login", Err(NotAPath('?')));
        check("/login#top", Err(NotAPath('#')));
        check("/", Ok("/"));
        check("/..", Ok("/"));
        check("/../../etc/passwd", Ok("/etc/passwd"));
        check("/a/b/..", Ok("/a/"));
        check("/a/./b/.", Ok("/a/b/"));
        check("/a/%2e/b", Ok("/a/b"));
        check("/a/.%2E/b", Ok("/b"));
        check("/...", Ok("/..."));
        check("/a%3ab", Ok("/a%3Ab"));
        check("/caf%C3%A9", Ok("/caf%C3%A9"));
        check("/%7euser", Ok("/~user"));
        check("/a%", Err(BadEscape));
        check("/a%4", Err(BadEscape));
        check("/a%zz", Err(BadEscape));
        check("login", Err(NotAbsolute));
        check("", Err(NotAbsolute));
        check("*", Err(NotAbsolute));
        check("/a b", Err(InvalidCharacter(' ')));
        check("/café", Err(InvalidCharacter('é')));
        check("/a\tb", Err(InvalidCharacter('\t')));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/login", "/api/x/y", "/login/", "/a.b/c..d"] {
            assert!(
                matches!(normalize_path(path), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in ["/x/../login", "//a//b/", "/%2e/%7e/%3a", "/a/b/../../.."] {
            let once = normalize_path(path).unwrap().into_owned();
            assert_eq!(normalize_path(&once).unwrap(), once);
        }
    }
}
