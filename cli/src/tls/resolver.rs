//! Which certificate a TLS client gets: a leaf for exactly the local name it asked for.
//!
//! Leaves are issued on the first handshake for a name and kept in a bounded cache (the
//! least recently used goes first), so a name costs one signature per day at most, and ten
//! thousand distinct names cost no more memory than [`CACHE_CAPACITY`] leaves. A client that
//! sends no SNI, or a name outside `localhost`, gets no certificate: rustls answers with an
//! `access_denied` alert rather than a certificate for some other name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Ca;

/// Leaves kept at once (each about 1.5 KB with its key).
pub const CACHE_CAPACITY: usize = 1024;
/// A leaf is issued again after this long (it is valid for 30 days; a `stack up` may run for
/// longer).
const REISSUE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// rustls's certificate choice for the proxy.
pub struct LeafResolver {
    ca: Arc<Ca>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    leaves: HashMap<String, Cached>,
    /// Bumped on every use: the entry with the lowest stamp is the least recently used.
    clock: u64,
}

struct Cached {
    leaf: Arc<CertifiedKey>,
    issued: Instant,
    used: u64,
}

impl std::fmt::Debug for LeafResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafResolver").finish_non_exhaustive()
    }
}

/// Whether the CA may sign `name` (lower-case): `localhost` or a name under it.
pub fn is_local_name(name: &str) -> bool {
    name == "localhost" || (name.ends_with(".localhost") && name.len() > ".localhost".len())
}

impl LeafResolver {
    pub fn new(ca: Arc<Ca>) -> Self {
        Self {
            ca,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The leaf for `name`, from the cache or newly issued; `None` for a name the CA may not
    /// sign.
    pub fn leaf_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        if !is_local_name(&name) {
            tracing::debug!(sni = %name, "TLS client asked for a name outside localhost");
            return None;
        }
        {
            let mut cache = self.lock();
            cache.clock += 1;
            let now = cache.clock;
            if let Some(cached) = cache.leaves.get_mut(&name) {
                if cached.issued.elapsed() < REISSUE_AFTER {
                    cached.used = now;
                    return Some(Arc::clone(&cached.leaf));
                }
            }
        }
        // Issued outside the lock: two first handshakes for one name may both sign, and the
        // second one's leaf stays; no handshake waits on another's signature.
        let leaf = match self.ca.issue(&name) {
            Ok(leaf) => leaf,
            Err(error) => {
                tracing::warn!(%error, "cannot issue a TLS certificate");
                return None;
            }
        };
        let mut cache = self.lock();
        cache.clock += 1;
        let used = cache.clock;
        if cache.leaves.len() >= CACHE_CAPACITY && !cache.leaves.contains_key(&name) {
            let oldest = cache
                .leaves
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                cache.leaves.remove(&oldest);
            }
        }
        cache.leaves.insert(
            name,
            Cached {
                leaf: Arc::clone(&leaf),
                issued: Instant::now(),
                used,
            },
        );
        Some(leaf)
    }

    /// How many leaves are cached.
    pub fn n_cached(&self) -> usize {
        self.lock().leaves.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .expect("the leaf cache lock is never held across a panic")
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name() else {
            tracing::debug!("TLS client sent no SNI");
            return None;
        };
        self.leaf_for(name)
    }
}
