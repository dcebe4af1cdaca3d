//! `RedisStore`: the connect-redis store format (`sess:<id>` -> JSON, always with a TTL) on one
//! shared multiplexed connection, every command bounded by a timeout.
//!
//! Owns the connection (made lazily, replaced when it breaks or stalls, so the service starts
//! while Redis is down and recovers on the next request once Redis is back) and the store
//! commands: read-and-touch in one round trip (`GETEX`), create (`SET NX`), compare-and-set and
//! rotate-id as Lua scripts (a save only lands on the value it read, so it never resurrects a
//! destroyed session and never loses a concurrent change), and destroy (`DEL`). It never decides
//! what a session holds, and its errors never carry the Redis password.

use crate::data::{DataError, SessionData, DEFAULT_TTL_SECONDS};
use crate::id::SessionId;
use crate::redis_url::RedisUrl;
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
    connector: Arc<Connector>,
    compare_and_set: Arc<redis::Script>,
    rotate: Arc<redis::Script>,
}

struct Connector {
    client: redis::Client,
    url: RedisUrl,
    current: ArcSwapOption<Connection>,
    connecting: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

struct Connection {
    generation: u64,
    connection: MultiplexedConnection,
}

impl RedisStore {
    /// A store for `url`. Connects lazily: Redis may well be down at this point.
    pub fn new(url: &RedisUrl) -> Result<Self, StoreError> {
        let client = url.client().map_err(|source| StoreError::Redis {
            operation: "configuration",
            source,
        })?;
        Ok(Self {
            connector: Arc::new(Connector {
                client,
                url: url.clone(),
                current: ArcSwapOption::empty(),
                connecting: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
            }),
            compare_and_set: Arc::new(redis::Script::new(COMPARE_AND_SET)),
            rotate: Arc::new(redis::Script::new(ROTATE)),
        })
    }

    /// The store's URL, masked (safe to log).
    pub fn url(&self) -> &RedisUrl {
        &self.connector.url
    }

    /// Reads a session and extends its TTL in one round trip (`GETEX key EX 86400`). A session
    /// with `cookie.expires` gets its TTL corrected by a second command (or is deleted when past).
    pub async fn load_and_touch(
        &self,
        id: &SessionId,
    ) -> Result<Option<StoredSession>, StoreError> {
        let key = id.store_key();
        let raw: Option<String> = self
            .run("read", Retry::Idempotent, |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("GETEX")
                        .arg(&key)
                        .arg("EX")
                        .arg(DEFAULT_TTL_SECONDS)
                        .query_async(&mut connection)
                        .await
                }
            })
            .await?;
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
        self.run("touch", Retry::Idempotent, |mut connection| {
            let key = key.clone();
            async move {
                redis::cmd("EXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .query_async::<i64>(&mut connection)
                    .await
            }
        })
        .await?;
        Ok(Some(stored))
    }

    /// Reads a session without touching it (used to retry a write on fresh data).
    pub async fn get(&self, id: &SessionId) -> Result<Option<StoredSession>, StoreError> {
        let key = id.store_key();
        let raw: Option<String> = self
            .run("read", Retry::Idempotent, |mut connection| {
                let key = key.clone();
                async move {
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                }
            })
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
            let written: Option<String> = self
                .run("create", Retry::Idempotent, |mut connection| {
                    let (key, json) = (key.clone(), json.clone());
                    async move {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(&json)
                            .arg("EX")
                            .arg(ttl)
                            .arg("NX")
                            .query_async(&mut connection)
                            .await
                    }
                })
                .await?;
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
        let outcome: i64 = self
            .run("save", Retry::Never, |mut connection| {
                let script = Arc::clone(&self.compare_and_set);
                let (key, expected, json) = (key.clone(), expected.to_owned(), json.clone());
                async move {
                    script
                        .key(&key)
                        .arg(&expected)
                        .arg(&json)
                        .arg(ttl)
                        .invoke_async(&mut connection)
                        .await
                }
            })
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
        let ttl = new.ttl_seconds(SystemTime::now());
        let old_key = id.store_key();
        for _ in 0..4 {
            let new_id = SessionId::generate();
            let new_key = new_id.store_key();
            let outcome: i64 = self
                .run("rotate", Retry::Never, |mut connection| {
                    let script = Arc::clone(&self.rotate);
                    let (old_key, new_key) = (old_key.clone(), new_key.clone());
                    let (expected, json) = (expected.to_owned(), json.clone());
                    async move {
                        script
                            .key(&old_key)
                            .key(&new_key)
                            .arg(&expected)
                            .arg(&json)
                            .arg(ttl)
                            .invoke_async(&mut connection)
                            .await
                    }
                })
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
        self.run("destroy", Retry::Idempotent, |mut connection| {
            let key = key.clone();
            async move {
                redis::cmd("DEL")
                    .arg(&key)
                    .query_async::<i64>(&mut connection)
                    .await
            }
        })
        .await?;
        Ok(())
    }

    /// Runs one command within `COMMAND_TIMEOUT`, connecting first when needed. A connection
    /// that breaks or stalls is dropped so the next command makes a new one. When a connection
    /// made earlier turns out dead (Redis restarted meanwhile), an `Idempotent` command is
    /// retried once on a new connection; a compare-and-set is not, because it may have landed
    /// before the connection broke and running it twice could apply a change twice.
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        retry: Retry,
        command: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let timeout = || StoreError::Timeout { operation };
        for attempt in 0..2 {
            let (connection, fresh) = tokio::time::timeout_at(deadline, self.connector.get())
                .await
                .map_err(|_| timeout())?
                .map_err(|source| StoreError::Redis { operation, source })?;
            let generation = connection.generation;
            match tokio::time::timeout_at(deadline, command(connection.connection.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(source)) if is_connection_failure(&source) => {
                    self.connector.forget(generation);
                    if fresh || attempt == 1 || retry == Retry::Never {
                        return Err(StoreError::Redis { operation, source });
                    }
                    tracing::debug!(operation, error = %source, "the Redis connection had died; retrying on a new one");
                }
                Ok(Err(source)) => return Err(StoreError::Redis { operation, source }),
                Err(_elapsed) => {
                    self.connector.forget(generation);
                    return Err(timeout());
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// Whether a command may run again after its connection broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Running it twice is the same as once (reads, touch, delete, `SET NX` of a fresh id).
    Idempotent,
    /// It may have landed already (compare-and-set, rotate).
    Never,
}

fn is_connection_failure(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

impl Connector {
    /// The live connection, or a new one. `true` when it was made for this call.
    async fn get(&self) -> redis::RedisResult<(Arc<Connection>, bool)> {
        if let Some(connection) = self.current.load_full() {
            return Ok((connection, false));
        }
        // One task connects; the others wait for it instead of each opening a socket.
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current.load_full() {
            return Ok((connection, false));
        }
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&redis::AsyncConnectionConfig::new())
            .await?;
        let connection = Arc::new(Connection {
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
            connection,
        });
        tracing::info!(redis = %self.url, "connected to the session store");
        self.current.store(Some(Arc::clone(&connection)));
        Ok((connection, true))
    }

    /// Drops the connection of `generation` unless it was replaced already.
    fn forget(&self, generation: u64) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            tracing::warn!(redis = %self.url, "dropping the session store connection; the next request reconnects");
            self.current.compare_and_swap(&*current, None);
        }
    }
}
