//! Session ids: 24 bytes from the operating system's CSPRNG, base64url without padding
//! (32 characters of `[A-Za-z0-9_-]`), as uid-safe makes them for express-session.
//!
//! Owns making new ids, naming the store key of an id and its Redis Cluster hash slot. It never
//! accepts an id a client chose: an id enters from outside only through a cookie whose
//! signature verified.
//!
//! On a cluster, login moves a session to a new id (rotation) atomically only if both keys live
//! in one hash slot, so [`SessionId::generate_in_slot`] makes ids whose key hashes to a given
//! slot: it draws 24 bytes from the OS as always, then changes only the last 3 (XOR with a
//! counter) until the key lands in the slot, about 16,384 CRC16 steps over 4 characters (well
//! under a millisecond). The first 21 bytes (168 bits) stay untouched OS randomness, so the id
//! is as unguessable as ever; only its slot (which the old id's holder knew anyway) is fixed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Random bytes in a new id (192 bits: guessing one is hopeless).
const ID_BYTES: usize = 24;

/// The prefix connect-redis puts before an id to make its key.
pub const KEY_PREFIX: &str = "sess:";

/// How many hash slots a Redis Cluster has.
pub const CLUSTER_SLOTS: u16 = 16_384;

/// Bytes of an id that `generate_in_slot` keeps as drawn (a multiple of 3, so their base64 is a
/// prefix of the whole id's).
const FIXED_BYTES: usize = 21;

/// Redis Cluster's hash slot of `key`: CRC16/XMODEM of the key (or of its `{hash tag}`, when it
/// has a non-empty one) modulo 16,384, as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tag = &key[open + 1..];
            let close = tag.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tag[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % CLUSTER_SLOTS
}

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

    /// A new id whose store key lives in Redis Cluster hash slot `slot` (see the module docs).
    pub fn generate_in_slot(slot: u16) -> Self {
        let slot = slot % CLUSTER_SLOTS;
        loop {
            let mut bytes = [0_u8; ID_BYTES];
            getrandom::getrandom(&mut bytes)
                .expect("the operating system's random source is available on every supported OS");
            let fixed = URL_SAFE_NO_PAD.encode(&bytes[..FIXED_BYTES]);
            let mut prefix = crc16::State::<crc16::XMODEM>::new();
            prefix.update(KEY_PREFIX.as_bytes());
            prefix.update(fixed.as_bytes());
            let drawn = u32::from_be_bytes([0, bytes[21], bytes[22], bytes[23]]);
            let mut tail = [0_u8; 4];
            // 2^24 tails over 2^14 slots: one matches after ~16,384 tries; all failing (never
            // seen) just draws again.
            for counter in 0..(1_u32 << 24) {
                let [_, a, b, c] = (drawn ^ counter).to_be_bytes();
                URL_SAFE_NO_PAD
                    .encode_slice([a, b, c], &mut tail)
                    .expect("3 bytes are exactly 4 base64 characters");
                let mut state = prefix;
                state.update(&tail);
                if state.get() % CLUSTER_SLOTS == slot {
                    let tail = std::str::from_utf8(&tail).expect("base64 is ASCII");
                    return Self(format!("{fixed}{tail}"));
                }
            }
        }
    }

    /// The Redis Cluster hash slot of this session's store key.
    pub fn slot(&self) -> u16 {
        key_slot(self.store_key().as_bytes())
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

    #[test]
    fn computes_cluster_slots_as_redis_does() {
        // Values from `redis-cli CLUSTER KEYSLOT` (Redis 7).
        for (key, slot) in [
            ("foo", 12182),
            ("sess:abc123", 3217),
            ("{user1000}.following", 3443),
            ("foo{}{bar}", 8363),
            ("foo{{bar}}zap", 4015),
        ] {
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
    }

    #[test]
    fn generates_ids_in_the_slot_asked_for_with_random_heads() {
        let old = SessionId::generate();
        let mut heads = std::collections::HashSet::new();
        for _ in 0..20 {
            let id = SessionId::generate_in_slot(old.slot());
            assert_eq!(id.slot(), old.slot(), "{id}");
            assert_eq!(id.as_str().len(), 32);
            assert!(id
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            heads.insert(id.as_str()[..28].to_owned());
        }
        assert_eq!(
            heads.len(),
            20,
            "the first 28 characters are fresh randomness"
        );
        for slot in [0, 1, 8191, 16383] {
            assert_eq!(SessionId::generate_in_slot(slot).slot(), slot);
        }
    }
}
