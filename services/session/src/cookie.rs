//! The signed session cookie of express-session: `connect.sid=s%3A<id>.<signature>`.
//!
//! Owns signing and verifying with a list of secrets (the first signs, every one verifies, in
//! constant time through the HMAC library), the encodeURIComponent-compatible percent-encoding,
//! finding the session cookie in a `Cookie` header, and rendering `Set-Cookie`. It never talks to
//! the store and never logs or displays a secret (`Debug` of [`Secrets`] prints `***`).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;

/// The cookie name express-session uses by default.
pub const COOKIE_NAME: &str = "connect.sid";

/// Length of an unpadded base64 HMAC-SHA256 signature (32 bytes).
const SIGNATURE_LEN: usize = 43;

/// What encodeURIComponent leaves alone: ASCII alphanumerics and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("`SESSION_SECRET` is empty")]
    Empty,
    #[error(
        "`SESSION_SECRET` holds an empty secret at position {position} of its comma-separated list"
    )]
    EmptyEntry { position: usize },
}

/// The secrets that sign and verify session cookies. Never empty; the first one signs.
#[derive(Clone)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Builds the list from `SESSION_SECRET`'s value: one secret, or a comma-separated list
    /// (rotation: put the new secret first, keep the old ones after it until their cookies age out).
    pub fn parse(value: &str) -> Result<Self, SecretsError> {
        if value.is_empty() {
            return Err(SecretsError::Empty);
        }
        let secrets: Vec<String> = value.split(',').map(str::to_owned).collect();
        if let Some(index) = secrets.iter().position(String::is_empty) {
            return Err(SecretsError::EmptyEntry {
                position: index + 1,
            });
        }
        Ok(Self(secrets))
    }

    /// A list from explicit secrets (tests, embedders). Panics on an empty list, a caller bug.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(secrets: I) -> Self {
        let secrets: Vec<String> = secrets.into_iter().map(Into::into).collect();
        assert!(
            !secrets.is_empty() && secrets.iter().all(|s| !s.is_empty()),
            "Secrets::new needs at least one non-empty secret"
        );
        Self(secrets)
    }

    /// How many secrets verify (for logs: the count is not secret, the values are).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a `Secrets` holds at least one secret.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `s:<id>.<signature>` signed with the first secret, before percent-encoding.
    pub fn sign(&self, id: &str) -> String {
        sign(id, &self.0[0])
    }

    /// The id inside a signed value (`s:` prefix, percent-decoded) if any secret verifies it.
    pub fn unsign<'a>(&self, signed: &'a str) -> Option<&'a str> {
        let body = signed.strip_prefix("s:")?;
        // cookie-signature splits at the last dot: the id itself may hold dots.
        let (id, signature) = body.rsplit_once('.')?;
        if signature.len() != SIGNATURE_LEN {
            return None;
        }
        // The strict decoder also rejects non-zero trailing bits, so two spellings of one
        // signature cannot both pass (Node compares the text, and so, in effect, do we).
        let signature = STANDARD_NO_PAD.decode(signature).ok()?;
        self.0
            .iter()
            .any(|secret| mac(secret, id).verify_slice(&signature).is_ok())
            .then_some(id)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} × ***)", self.0.len())
    }
}

fn mac(secret: &str, id: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac
}

/// `s:<id>.<signature>`: cookie-signature's `sign`, with express-session's `s:` prefix.
pub fn sign(id: &str, secret: &str) -> String {
    let signature = STANDARD.encode(mac(secret, id).finalize().into_bytes());
    format!("s:{id}.{}", signature.trim_end_matches('='))
}

/// Percent-encodes exactly as JavaScript's `encodeURIComponent`.
pub fn encode_uri_component(value: &str) -> String {
    utf8_percent_encode(value, URI_COMPONENT).to_string()
}

/// Percent-decodes a cookie value as the `cookie` package does: on malformed input (a stray `%`
/// or invalid UTF-8) it keeps the raw text, which then simply fails to verify.
pub fn decode_uri_component(value: &str) -> String {
    match percent_decode_str(value).decode_utf8() {
        Ok(decoded) if !value.contains('%') || is_well_formed_escapes(value) => {
            decoded.into_owned()
        }
        _ => value.to_owned(),
    }
}

fn is_well_formed_escapes(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let is_hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
            if !(is_hex(index + 1) && is_hex(index + 2)) {
                return false;
            }
            index += 3;
        } else {
            index += 1;
        }
    }
    true
}

/// The (percent-decoded) value of the first `connect.sid` in `Cookie` header values, as the
/// `cookie` package picks it: the first occurrence wins, surrounding quotes are dropped.
pub fn find_session_cookie<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    header_values
        .into_iter()
        .flat_map(|header| header.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name.trim() == COOKIE_NAME).then(|| {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                decode_uri_component(value)
            })
        })
}

/// `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// express-session's `cookie.secure`: `false`, `true`, or `'auto'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecure {
    /// Never `Secure` (express-session's default).
    Never,
    /// Always `Secure`: browsers send it back over HTTPS only.
    Always,
    /// `Secure` when the request came over HTTPS, as a trusted proxy says
    /// (`X-Forwarded-Proto: https` from a loopback peer), as express-session with
    /// `trust proxy` does.
    Auto,
}

impl CookieSecure {
    /// `SESSION_COOKIE_SECURE`'s value: `auto`, `true` or `false` (any case); `None` otherwise.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "true" => Some(Self::Always),
            "false" => Some(Self::Never),
            _ => None,
        }
    }
}

impl SameSite {
    /// `SESSION_COOKIE_SAMESITE`'s value: `lax`, `strict` or `none` (any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "lax" => Some(Self::Lax),
            "strict" => Some(Self::Strict),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Attributes of the session cookie. The default is express-session's: `Path=/; HttpOnly`,
/// no `Expires` (a browser-session cookie), no `Secure`, no `SameSite`.
#[derive(Debug, Clone)]
pub struct CookieOptions {
    pub path: String,
    pub http_only: bool,
    pub secure: CookieSecure,
    pub same_site: Option<SameSite>,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            http_only: true,
            secure: CookieSecure::Never,
            same_site: None,
        }
    }
}

impl CookieOptions {
    /// Whether the cookie of a request that came over HTTPS (`over_https`) is `Secure`.
    pub fn is_secure(&self, over_https: bool) -> bool {
        match self.secure {
            CookieSecure::Never => false,
            CookieSecure::Always => true,
            CookieSecure::Auto => over_https,
        }
    }

    /// The `cookie` object stored with a new session, as express-session serialises it (for a
    /// request over plain HTTP when `secure` is `auto`).
    pub fn stored_json(&self) -> String {
        self.stored_json_for(self.is_secure(false))
    }

    /// [`CookieOptions::stored_json`] with `secure` decided for the request.
    pub fn stored_json_for(&self, secure: bool) -> String {
        let mut json = r#"{"originalMaxAge":null,"expires":null,"#.to_owned();
        if secure {
            json.push_str(r#""secure":true,"#);
        }
        json.push_str(&format!(
            r#""httpOnly":{},"path":{}"#,
            self.http_only,
            serde_json::Value::from(self.path.as_str())
        ));
        if let Some(same_site) = self.same_site {
            let name = match same_site {
                SameSite::Strict => "strict",
                SameSite::Lax => "lax",
                SameSite::None => "none",
            };
            json.push_str(&format!(r#","sameSite":"{name}""#));
        }
        json.push('}');
        json
    }

    /// The `Set-Cookie` header value for a session id (for a request over plain HTTP when
    /// `secure` is `auto`).
    pub fn set_cookie(&self, secrets: &Secrets, id: &str) -> String {
        self.set_cookie_for(secrets, id, self.is_secure(false))
    }

    /// [`CookieOptions::set_cookie`] with `secure` decided for the request.
    pub fn set_cookie_for(&self, secrets: &Secrets, id: &str, secure: bool) -> String {
        let mut header = format!(
            "{COOKIE_NAME}={}; Path={}",
            encode_uri_component(&secrets.sign(id)),
            self.path
        );
        if self.http_only {
            header.push_str("; HttpOnly");
        }
        if secure {
            header.push_str("; Secure");
        }
        match self.same_site {
            Some(SameSite::Strict) => header.push_str("; SameSite=Strict"),
            Some(SameSite::Lax) => header.push_str("; SameSite=Lax"),
            Some(SameSite::None) => header.push_str("; SameSite=None"),
            None => {}
        }
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: [(&str, &str, &str); 2] = [
        (
            "keyboard cat",
            "abc123",
            "s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0",
        ),
        (
            "abc123",
            "q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL",
            "s:q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL.HdYuWAjEP+tclnYntVOYuJkkGIC3m1m8QPBwC7cbs8Y",
        ),
    ];

    #[test]
    fn signs_the_session_format_test_vectors() {
        for (secret, id, signed) in VECTORS {
            assert_eq!(sign(id, secret), signed, "secret {secret:?}, id {id:?}");
            assert_eq!(Secrets::new([secret]).unsign(signed), Some(id));
        }
    }

    #[test]
    fn percent_encodes_like_encode_uri_component() {
        assert_eq!(
            format!("{COOKIE_NAME}={}", encode_uri_component(VECTORS[0].2)),
            "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0"
        );
        // Every character encodeURIComponent leaves alone, and a few it does not.
        assert_eq!(encode_uri_component("aZ09-_.!~*'()"), "aZ09-_.!~*'()");
        assert_eq!(
            encode_uri_component("+/:= ;,é"),
            "%2B%2F%3A%3D%20%3B%2C%C3%A9"
        );
        assert_eq!(decode_uri_component("s%3Aab%2Bc"), "s:ab+c");
        // Malformed escapes keep the raw text, as the cookie package does.
        assert_eq!(decode_uri_component("s%3Aab%zz"), "s%3Aab%zz");
        assert_eq!(decode_uri_component("%ff"), "%ff");
    }

    #[test]
    fn rejects_what_does_not_verify() {
        let secrets = Secrets::new(["keyboard cat"]);
        let good = VECTORS[0].2;
        let cases: Vec<(&str, String)> = vec![
            ("unsigned", "abc123".to_owned()),
            ("no s: prefix", good[2..].to_owned()),
            ("truncated signature", good[..good.len() - 1].to_owned()),
            ("no signature", "s:abc123".to_owned()),
            ("empty signature", "s:abc123.".to_owned()),
            ("tampered id", good.replace("abc123", "abc124")),
            ("tampered signature", good.replace("L3URH", "L3URI")),
            ("padded signature", format!("{good}=")),
            ("long signature", format!("{good}A")),
            ("url-safe alphabet", good.replace('/', "_")),
            // The last character carries 2 unused bits: `1` and `0` decode alike unless strict.
            (
                "non-canonical last char",
                format!("{}1", &good[..good.len() - 1]),
            ),
            ("empty", String::new()),
        ];
        for (what, value) in cases {
            assert_eq!(secrets.unsign(&value), None, "{what}: {value:?}");
        }
        assert_eq!(
            Secrets::new(["wrong secret"]).unsign(good),
            None,
            "wrong secret"
        );
    }

    #[test]
    fn rotation_signs_with_the_first_and_verifies_with_all() {
        let rotated = Secrets::parse("new secret,keyboard cat").expect("two non-empty secrets");
        assert_eq!(rotated.len(), 2);
        assert_eq!(
            rotated.unsign(VECTORS[0].2),
            Some("abc123"),
            "old secret still verifies"
        );
        assert_eq!(rotated.sign("abc123"), sign("abc123", "new secret"));
        assert_ne!(rotated.sign("abc123"), VECTORS[0].2);
        assert_eq!(
            rotated.unsign(&rotated.sign("x.y")),
            Some("x.y"),
            "ids may hold dots"
        );
        let retired = Secrets::parse("new secret").expect("one secret");
        assert_eq!(
            retired.unsign(VECTORS[0].2),
            None,
            "a retired secret no longer verifies"
        );
    }

    #[test]
    fn parses_secret_lists_and_never_shows_them() {
        assert_eq!(Secrets::parse("").unwrap_err(), SecretsError::Empty);
        assert_eq!(
            Secrets::parse("a,,b").unwrap_err(),
            SecretsError::EmptyEntry { position: 2 }
        );
        let secrets = Secrets::parse("canary-secret-1,canary-secret-2").expect("valid list");
        assert_eq!(format!("{secrets:?}"), "Secrets(2 × ***)");
    }

    #[test]
    fn finds_the_first_session_cookie() {
        let encoded = "s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0";
        let header = format!("a=1; connect.sid={encoded}; connect.sid=second");
        assert_eq!(
            find_session_cookie([header.as_str()]).as_deref(),
            Some(VECTORS[0].2)
        );
        assert_eq!(
            find_session_cookie(["x=1", "connect.sid=\"s%3Aq\""]).as_deref(),
            Some("s:q")
        );
        assert_eq!(find_session_cookie(["connect.sidx=1; other=2"]), None);
    }

    #[test]
    fn renders_set_cookie_and_the_stored_cookie_object() {
        let options = CookieOptions::default();
        assert_eq!(
            options.set_cookie(&Secrets::new(["keyboard cat"]), "abc123"),
            "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0; Path=/; HttpOnly"
        );
        assert_eq!(
            options.stored_json(),
            r#"{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}"#
        );
        let strict = CookieOptions {
            secure: CookieSecure::Always,
            same_site: Some(SameSite::Lax),
            ..CookieOptions::default()
        };
        assert_eq!(
            strict.stored_json(),
            r#"{"originalMaxAge":null,"expires":null,"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}"#
        );
        assert!(strict
            .set_cookie(&Secrets::new(["s"]), "id")
            .ends_with("; Path=/; HttpOnly; Secure; SameSite=Lax"));
    }

    #[test]
    fn auto_is_secure_over_https_only_as_express_session_is() {
        let auto = CookieOptions {
            secure: CookieSecure::Auto,
            ..CookieOptions::default()
        };
        let secrets = Secrets::new(["s"]);
        assert!(auto
            .set_cookie_for(&secrets, "id", auto.is_secure(true))
            .ends_with("; HttpOnly; Secure"));
        assert!(auto
            .set_cookie_for(&secrets, "id", auto.is_secure(false))
            .ends_with("; HttpOnly"));
        assert!(auto
            .stored_json_for(auto.is_secure(true))
            .contains(r#""secure":true"#));
        assert!(!auto.stored_json().contains("secure"));
        for (value, parsed) in [
            ("auto", Some(CookieSecure::Auto)),
            ("TRUE", Some(CookieSecure::Always)),
            ("false", Some(CookieSecure::Never)),
            ("yes", None),
        ] {
            assert_eq!(CookieSecure::parse(value), parsed, "{value}");
        }
        for (value, parsed) in [
            ("lax", Some(SameSite::Lax)),
            ("Strict", Some(SameSite::Strict)),
            ("none", Some(SameSite::None)),
            ("", None),
        ] {
            assert_eq!(SameSite::parse(value), parsed, "{value}");
        }
    }
}
