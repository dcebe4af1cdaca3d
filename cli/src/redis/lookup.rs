//! What `stack redis get` was given: a session id, a signed cookie value (`s:<id>.<sig>`, raw
//! or percent-encoded), a `connect.sid=...` pair or a whole `Cookie` header; and the verdict on
//! a signed cookie's signature.
//!
//! Owns recognising the forms and verifying signatures (through `session::cookie`, constant
//! time, every secret of the rotation list). It never reads the store: the caller looks up an
//! id only when it is plain or its cookie verified, as express-session does.

use session::cookie::{decode_uri_component, find_session_cookie, COOKIE_NAME};
use session::id::KEY_PREFIX;

use super::locate::SecretList;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("nothing to look up: give a session id, a signed cookie value or a `connect.sid=...` header")]
    Empty,
    #[error("the header has no `{COOKIE_NAME}` cookie")]
    NoSessionCookie,
    #[error(
        "the `{COOKIE_NAME}` cookie is not signed (no `s:` prefix), so express-session ignores it"
    )]
    Unsigned,
    #[error("`{0}` is not a session id (ids have no spaces, `;` or `=`; to name a key exactly as it is, give `sess:` and the rest of it)")]
    NotAnId(String),
}

/// What the argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRef {
    /// A plain id (a `sess:` prefix is dropped; with it, the rest is the id exactly, whatever
    /// it holds, as `stack redis keys` may list a key that another program wrote).
    Id(String),
    /// A signed value `s:<id>.<signature>`, percent-decoded.
    Signed(String),
}

impl SessionRef {
    /// Recognises every form `get` takes.
    pub fn parse(input: &str) -> Result<Self, LookupError> {
        if let Some(id) = input.strip_prefix(KEY_PREFIX).filter(|id| !id.is_empty()) {
            return Ok(SessionRef::Id(id.to_owned()));
        }
        let mut text = input.trim();
        if text.is_empty() {
            return Err(LookupError::Empty);
        }
        if text.len() > 7 && text[..7].eq_ignore_ascii_case("cookie:") {
            text = text[7..].trim();
        }
        if text.contains('=') || text.contains(';') {
            let value = find_session_cookie([text]).ok_or(LookupError::NoSessionCookie)?;
            return if value.starts_with("s:") {
                Ok(SessionRef::Signed(value))
            } else {
                Err(LookupError::Unsigned)
            };
        }
        let decoded = decode_uri_component(text);
        if decoded.starts_with("s:") {
            return Ok(SessionRef::Signed(decoded));
        }
        let id = decoded.strip_prefix(KEY_PREFIX).unwrap_or(&decoded);
        if id.is_empty() || id.chars().any(char::is_whitespace) {
            return Err(LookupError::NotAnId(id.to_owned()));
        }
        Ok(SessionRef::Id(id.to_owned()))
    }
}

/// Whether a signed cookie verifies, and with which secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Signed by secret number `secret` (1-based) of `n_secrets`.
    Valid {
        id: String,
        secret: usize,
        n_secrets: usize,
    },
    /// No secret verifies it; `claimed_id` is what it says, not to be trusted.
    Invalid {
        claimed_id: Option<String>,
        n_secrets: usize,
    },
}

/// Verifies `signed` (`s:<id>.<sig>`) against every secret.
pub fn verify(signed: &str, secrets: &SecretList) -> Signature {
    let n_secrets = secrets.each.len();
    if let Some(id) = secrets.all.unsign(signed) {
        let secret = secrets
            .each
            .iter()
            .position(|one| one.unsign(signed).is_some())
            .map_or(1, |index| index + 1);
        return Signature::Valid {
            id: id.to_owned(),
            secret,
            n_secrets,
        };
    }
    let claimed_id = signed
        .strip_prefix("s:")
        .and_then(|body| body.rsplit_once('.'))
        .map(|(id, _)| id.to_owned())
        .filter(|id| !id.is_empty());
    Signature::Invalid {
        claimed_id,
        n_secrets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session::cookie::Secrets;

    const SIGNED: &str = "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0";
    const ENCODED: &str = "s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0";

    fn check(input: &str, expected: Result<SessionRef, LookupError>) {
        assert_eq!(SessionRef::parse(input), expected, "{input}");
    }

    #[test]
    fn recognises_every_form() {
        let signed = || Ok(SessionRef::Signed(SIGNED.to_owned()));
        check("abc123", Ok(SessionRef::Id("abc123".into())));
        check(" sess:abc123 ", Ok(SessionRef::Id("abc123".into())));
        check(SIGNED, signed());
        check(ENCODED, signed());
        check(&format!("connect.sid={ENCODED}"), signed());
        check(&format!("a=1; connect.sid={ENCODED}; b=2"), signed());
        check(
            &format!("Cookie: theme=dark; connect.sid={ENCODED}"),
            signed(),
        );
        check("", Err(LookupError::Empty));
        check("theme=dark", Err(LookupError::NoSessionCookie));
        check("connect.sid=abc123", Err(LookupError::Unsigned));
        check("two words", Err(LookupError::NotAnId("two words".into())));
        // A whole key is taken as it is: spaces, `;`, `=` and `%` included.
        check("sess:a b;c=d%41 ", Ok(SessionRef::Id("a b;c=d%41 ".into())));
        check("sess: ", Ok(SessionRef::Id(" ".into())));
        check("sess:", Err(LookupError::NotAnId(String::new())));
    }

    fn secrets(list: &[&str]) -> SecretList {
        SecretList {
            all: Secrets::new(list.iter().copied()),
            each: list.iter().map(|one| Secrets::new([*one])).collect(),
        }
    }

    #[test]
    fn verifies_with_every_secret_and_names_the_one() {
        assert_eq!(
            verify(SIGNED, &secrets(&["new", "keyboard cat"])),
            Signature::Valid {
                id: "abc123".into(),
                secret: 2,
                n_secrets: 2
            }
        );
        assert_eq!(
            verify(SIGNED, &secrets(&["wrong"])),
            Signature::Invalid {
                claimed_id: Some("abc123".into()),
                n_secrets: 1
            }
        );
        let tampered = SIGNED.replace("abc123", "abc124");
        assert_eq!(
            verify(&tampered, &secrets(&["keyboard cat"])),
            Signature::Invalid {
                claimed_id: Some("abc124".into()),
                n_secrets: 1
            }
        );
        assert_eq!(
            verify("s:nodot", &secrets(&["keyboard cat"])),
            Signature::Invalid {
                claimed_id: None,
                n_secrets: 1
            }
        );
    }
}
