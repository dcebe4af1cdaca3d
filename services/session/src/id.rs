//! Session ids: 24 bytes from the operating system's CSPRNG, base64url without padding
//! (32 characters of `[A-Za-z0-9_-]`), as uid-safe makes them for express-session.
//!
//! Owns making new ids and naming the store key of an id. It never accepts an id a client chose:
//! an id enters from outside only through a cookie whose signature verified.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Random bytes in a new id (192 bits: guessing one is hopeless).
const ID_BYTES: usize = 24;

/// The prefix connect-redis puts before an id to make its key.
pub const KEY_PREFIX: &str = "sess:";

/// A session id: either freshly generated or taken from a cookie whose signature verified.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new random id from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; ID_BYTES];
        getrandom::getrandom(&mut bytes)
            .expect("the operating system's random source is available on every supported OS");
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// An id whose cookie signature verified (see `cookie::Secrets::unsign`). Ids written by
    /// other express-session services may have any shape, so no further check is made.
    pub fn from_verified(id: &str) -> Self {
        Self(id.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Redis key of this session: `sess:<id>`.
    pub fn store_key(&self) -> String {
        format!("{KEY_PREFIX}{}", self.0)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An id is a bearer credential once signed; logs show only a prefix to correlate.
        let prefix: String = self.0.chars().take(6).collect();
        write!(f, "SessionId({prefix}…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_32_url_safe_characters_that_differ() {
        let ids: Vec<SessionId> = (0..100).map(|_| SessionId::generate()).collect();
        for id in &ids {
            assert_eq!(id.as_str().len(), 32, "{id}");
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        let unique: std::collections::HashSet<&SessionId> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(ids[0].store_key(), format!("sess:{}", ids[0]));
    }
}
