//! `RedisStore`: the connect-redis store format (`sess:<id>` -> JSON, always with a TTL) on one
//! shared connection (to one server, a Sentinel set's master or a Redis Cluster, see
//! [`crate::connection`]), every command bounded by a timeout.
//!
//! Owns the store commands and when each may be sent again (the service starts while Redis is
//! down and recovers on the next request once Redis is back, or a failover is over): read-and-touch in one round trip (`GETEX`), create (`SET NX`), compare-and-set and
//! rotate-id as Lua scripts (a save only lands on the value it read, so it never resurrects a
//! destroyed session and never loses a concurrent change), and destroy (`DEL`). It never decides
//! what a session holds, and its errors never carry the Redis password.

use crate::connection::{Backend, Failure, Retry};
use crate::data::{DataError, SessionData, DEFAULT_TTL_SECONDS};
use crate::id::SessionId;
use crate::redis_url::RedisUrl;
use redis::{Cmd, ErrorKind};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Bound on every store operation, connecting included: a stalled Redis becomes a 503 after
/// this long, not a hung request.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Saves `ARGV[2]` (TTL `ARGV[3]`, deleting when <= 0) only if the key still holds `ARGV[1]`.
/// A missing key never matches, so a save after a destroy cannot bring the session back.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl <= 0 then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl) end
return 1
";

/// Moves a session to a new key (`KEYS[2]`, written NX) with new contents and deletes the old
/// one, only if the old key still holds `ARGV[1]`. 1 = done, 0 = changed meanwhile, -1 = the
/// new id exists already.
const ROTATE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  if not redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl, 'NX') then return -1 end
end
redis.call('DEL', KEYS[1])
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer within {} ms during {operation}", COMMAND_TIMEOUT.as_millis())]
    Timeout { operation: &'static str },
    #[error("the session store failed during {operation}: {source}")]
    Redis {
        operation: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error(
        "the session store keeps changing under {operation}; gave up after {attempts} attempts"
    )]
    Contention {
        operation: &'static str,
        attempts: u32,
    },
}

/// A session as read from the store: its exact stored text (what a compare-and-set expects)
/// and its parsed fields.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub raw: String,
    pub data: SessionData,
}

impl StoredSession {
    fn parse(id: &SessionId, raw: String) -> Option<Self> {
        match SessionData::parse(&raw) {
            Ok(data) => Some(Self { raw, data }),
            Err(DataError::NotAnObject(error)) => {
                // Not ours to repair or overwrite: treat it as no session.
                tracing::warn!(session = ?id, %error, "ignoring a stored session that is not a JSON object");
                None
            }
        }
    }
}

/// Outcome of a compare-and-set style write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Written (or deleted, for a TTL of 0 or less).
    Done,
    /// The stored value was not the expected one (changed or destroyed meanwhile).
    Conflict,
}

/// The session store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    url: RedisUrl,
    compare_and_set: Script,
    rotate: Script,
}

/// A Lua script as the commands that run it: `EVALSHA` first, `SCRIPT LOAD` when Redis does not
/// know it yet (a new server, a promoted replica, a `SCRIPT FLUSH`).
struct Script {
    hash: String,
    load: Cmd,
}

impl Script {
    fn new(code: &str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_owned();
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(code);
        Self { hash, load }
    }

    fn call(&self, keys: &[&str], args: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(keys.len()).arg(keys).arg(args);
        cmd
    }
}

impl RedisStore {
    /// A store for `url`. Connects lazily: Redis may well be down at this point.
    pub fn new(url: &RedisUrl) -> Result<Self, StoreError> {
        let backend = Backend::new(url, COMMAND_TIMEOUT).map_err(|source| StoreError::Redis {
            operation: "configuration",
            source,
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                url: url.clone(),
                compare_and_set: Script::new(COMPARE_AND_SET),
                rotate: Script::new(ROTATE),
            }),
        })
    }

    /// The store's URL, masked (safe to log).
    pub fn url(&self) -> &RedisUrl {
        &self.inner.url
    }

    /// Reads a session and extends its TTL in one round trip (`GETEX key EX 86400`). A session
    /// with `cookie.expires` gets its TTL corrected by a second command (or is deleted when past).
    pub async fn load_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<StoredSession>, StoreError> {
        let key = id.store_key();
        let mut getex = redis::cmd("GETEX");
        getex.arg(&key).arg("EX").arg(DEFAULT_TTL_SECONDS);
        let raw: Option<String> = self.run("read", Retry::Idempotent, &getex).await?;
        let Some(stored) = raw.and_then(|raw| StoredSession::parse(id, raw)) else {
            return Ok(None);
        };
        let ttl = stored.data.ttl_seconds(SystemTime::now());
        if ttl == DEFAULT_TTL_SECONDS {
            return Ok(Some(stored));
        }
        if ttl <= 0 {
            self.destroy(id).await?;
            return Ok(None);
        }
        let mut expire = redis::cmd("EXPIRE");
        expire.arg(&key).arg(ttl);
        self.run::<i64>("touch", Retry::Idempotent, &expire).await?;
        Ok(Some(stored))
    }

    /// Reads a session without touching it (used to retry a write on fresh data).
    pub async fn get(&self, id: &SessionId) -> Result<Option<StoredSession>, StoreError> {
        let key = id.store_key();
        let raw: Option<String> = self
            .run("read", Retry::Idempotent, redis::cmd("GET").arg(&key))
            .await?;
        Ok(raw.and_then(|raw| StoredSession::parse(id, raw)))
    }

    /// Stores a new session under a new id (`SET NX`, never over an existing key).
    pub async fn create(&self, data: &SessionData) -> Result<(SessionId, String), StoreError> {
        let json = data.to_json();
        let ttl = data.ttl_seconds(SystemTime::now()).max(1);
        // 192 random bits never collide in practice; the loop makes "never" certain.
        for _ in 0..4 {
            let id = SessionId::generate();
            let key = id.store_key();
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&json).arg("EX").arg(ttl).arg("NX");
            let written: Option<String> = self.run("create", Retry::Idempotent, &set).await?;
            if written.is_some() {
                return Ok((id, json));
            }
        }
        Err(StoreError::Contention {
            operation: "create",
            attempts: 4,
        })
    }

    /// Saves `new` only if the session still holds `expected` (see `COMPARE_AND_SET`).
    pub async fn compare_and_set(
        &self,
        id: &SessionId,
        expected: &str,
        new: &SessionData,
    ) -> Result<(Saved, String), StoreError> {
        let json = new.to_json();
        let ttl = new.ttl_seconds(SystemTime::now());
        let key = id.store_key();
        let ttl = ttl.to_string();
        let outcome: i64 = self
            .run_script(
                "save",
                &self.inner.compare_and_set,
                &[&key],
                &[expected, &json, &ttl],
            )
            .await?;
        let saved = if outcome == 1 {
            Saved::Done
        } else {
            Saved::Conflict
        };
        Ok((saved, json))
    }

    /// Moves the session to a new id with contents `new`, deleting the old key, only if it
    /// still holds `expected`. `Ok(None)` means it changed meanwhile.
    pub async fn rotate(
        &self,
        id: &SessionId,
        expected: &str,
        new: &SessionData,
    ) -> Result<Option<(SessionId, String)>, StoreError> {
        let json = new.to_json();
        let ttl = new.ttl_seconds(SystemTime::now()).to_string();
        let old_key = id.store_key();
        for _ in 0..4 {
            // On a cluster both keys must share a slot for the script to run atomically on one
            // master (README: "Login on a cluster"); one server takes any id.
            let new_id = if self.inner.backend.is_cluster() {
                SessionId::generate_in_slot(id.slot())
            } else {
                SessionId::generate()
            };
            let new_key = new_id.store_key();
            let outcome: i64 = self
                .run_script(
                    "rotate",
                    &self.inner.rotate,
                    &[&old_key, &new_key],
                    &[expected, &json, &ttl],
                )
                .await?;
            match outcome {
                1 => return Ok(Some((new_id, json))),
                0 => return Ok(None),
                _ => continue,
            }
        }
        Err(StoreError::Contention {
            operation: "rotate",
            attempts: 4,
        })
    }

    /// Deletes a session.
    pub async fn destroy(&self, id: &SessionId) -> Result<(), StoreError> {
        let key = id.store_key();
        self.run::<i64>("destroy", Retry::Idempotent, redis::cmd("DEL").arg(&key))
            .await?;
        Ok(())
    }

    /// Runs a script (`EVALSHA`), loading it first when this Redis does not know it. Scripts
    /// here all write, so they never run twice (`Retry::Never`); a `NOSCRIPT` answer means it
    /// did not run at all.
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Result<T, StoreError> {
        let call = script.call(keys, args);
        match self.run(operation, Retry::Never, &call).await {
            Err(StoreError::Redis { source, .. }) if source.kind() == ErrorKind::NoScriptError => {
                self.run::<String>(operation, Retry::Idempotent, &script.load)
                    .await?;
                self.run(operation, Retry::Never, &call).await
            }
            other => other,
        }
    }

    /// Runs one command within `COMMAND_TIMEOUT`, connecting first when needed. A connection
    /// that breaks or stalls is dropped so the next command makes a new one. When a connection
    /// made earlier turns out dead (Redis restarted meanwhile), an `Idempotent` command is
    /// retried once on a new connection; a compare-and-set is not, because it may have landed
    /// before the connection broke and running it twice could apply a change twice. A command
    /// refused before it ran (a cluster redirection or failover, a demoted master) is sent again
    /// until the deadline, whatever its kind: see `connection`'s docs.
    async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        retry: Retry,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let timeout = || StoreError::Timeout { operation };
        let backend = &self.inner.backend;
        let mut ask = None;
        let mut reconnected = false;
        loop {
            let lease = tokio::time::timeout_at(deadline, backend.lease(retry))
                .await
                .map_err(|_| timeout())?
                .map_err(|source| StoreError::Redis { operation, source })?;
            let target = ask.take();
            let reply = tokio::time::timeout_at(deadline, lease.send(cmd, target.as_ref()));
            let source = match reply.await {
                Ok(Ok(value)) => {
                    return redis::from_owned_redis_value(value)
                        .map_err(|source| StoreError::Redis { operation, source })
                }
                Ok(Err(source)) => source,
                Err(_elapsed) => {
                    backend.forget(&lease);
                    return Err(timeout());
                }
            };
            match Failure::of(&source) {
                Failure::NotRun { ask: target } => {
                    if source.kind() == ErrorKind::ReadOnly {
                        // A master demoted by a failover: ask the sentinels again.
                        backend.forget(&lease);
                    }
                    tracing::debug!(operation, error = %source, "Redis refused the command before running it; sending it again");
                    ask = target;
                    if ask.is_none() {
                        // Give a failover or a slot map refresh a moment.
                        let pause = Instant::now() + REFUSED_PAUSE;
                        if pause >= deadline {
                            return Err(StoreError::Redis { operation, source });
                        }
                        tokio::time::sleep_until(pause).await;
                    }
                }
                Failure::Connection => {
                    backend.forget(&lease);
                    if lease.fresh || reconnected || retry == Retry::Never {
                        return Err(StoreError::Redis { operation, source });
                    }
                    reconnected = true;
                    tracing::debug!(operation, error = %source, "the Redis connection had died; retrying on a new one");
                }
                Failure::Answer => return Err(StoreError::Redis { operation, source }),
            }
        }
    }
}

/// How long a command refused before it ran waits before it is sent again.
const REFUSED_PAUSE: Duration = Duration::from_millis(20);
