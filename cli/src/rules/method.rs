//! HTTP method names: the IANA registry, and a bit set of them for fast rule matching.
//!
//! In the rules file, methods are compared case-insensitively (`"get"` means `GET`), as RULES.md
//! says. On a request, the method is taken exactly as it came on the wire: HTTP methods are
//! case-sensitive (RFC 9110 9.1), so a request with method `get` is not a `GET` request; it is an
//! unknown method that only rules without a `method` match (nginx likewise treats `get` as
//! unknown). The upstream receives the same method, so routing and service agree.

use http::Method;

/// The IANA HTTP Method Registry (2024), sorted, without the reserved `*`.
pub(crate) const KNOWN_METHODS: [&str; 40] = [
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PRI",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// The registry name for a method written in a rules file, any case; `None` if unknown.
pub(crate) fn canonical(name: &str) -> Option<Method> {
    let upper = name.to_ascii_uppercase();
    KNOWN_METHODS.binary_search(&upper.as_str()).ok()?;
    Some(Method::from_bytes(upper.as_bytes()).expect("registry names are valid method tokens"))
}

/// A set of known methods, one bit each (the registry has 40, fewer than 64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodSet(u64);

impl MethodSet {
    pub(crate) const ANY: MethodSet = MethodSet(u64::MAX);

    pub(crate) fn of(methods: &[Method]) -> MethodSet {
        MethodSet(
            methods
                .iter()
                .filter_map(bit_of)
                .fold(0, |set, bit| set | 1 << bit),
        )
    }

    /// Whether a request with this method (as received) is in the set. A method outside the
    /// registry (including `get` in lower case) is only in [`MethodSet::ANY`].
    pub(crate) fn contains(self, method: Option<u32>) -> bool {
        match method {
            Some(bit) => self.0 & (1 << bit) != 0,
            None => self == MethodSet::ANY,
        }
    }

    pub(crate) fn is_superset_of(self, other: MethodSet) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A request method's bit, `None` for a method outside the registry. The common methods are
/// compared as `http::Method` values first, which costs no string comparison.
pub(crate) fn bit_of(method: &Method) -> Option<u32> {
    let name = match *method {
        Method::GET => return Some(8),
        Method::POST => return Some(23),
        Method::HEAD => return Some(9),
        Method::PUT => return Some(27),
        Method::DELETE => return Some(7),
        Method::OPTIONS => return Some(20),
        Method::PATCH => return Some(22),
        _ => method.as_str(),
    };
    KNOWN_METHODS.binary_search(&name).ok().map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_fast_bits_agree() {
        assert!(KNOWN_METHODS.windows(2).all(|w| w[0] < w[1]));
        for name in KNOWN_METHODS {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(KNOWN_METHODS[bit_of(&method).unwrap() as usize], name);
        }
    }

    #[test]
    fn file_methods_any_case_request_methods_exact() {
        assert_eq!(canonical("get"), Some(Method::GET));
        assert_eq!(canonical("Patch"), Some(Method::PATCH));
        assert_eq!(canonical("GTE"), None);
        let get = MethodSet::of(&[Method::GET]);
        assert!(get.contains(bit_of(&Method::GET)));
        assert!(!get.contains(bit_of(&Method::HEAD)));
        let lower = Method::from_bytes(b"get").unwrap();
        assert!(!get.contains(bit_of(&lower)));
        assert!(MethodSet::ANY.contains(bit_of(&lower)));
    }
}
