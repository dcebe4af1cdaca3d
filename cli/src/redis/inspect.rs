//! Reading and deleting sessions in the store without blocking it: `SCAN` (never `KEYS`) in
//! batches of [`SCAN_COUNT`], each batch read with one pipelined round trip (`MGET` of the batch,
//! a `TTL` per key, and the next `SCAN`), deletes with `UNLINK` (freed in the background). On a
//! Redis Cluster every master is scanned at once (a key lives on one master only), and a
//! command about one session goes to the master of its slot (see [`super::topology`]); through
//! Sentinel, the master the sentinels name.
//!
//! Owns the connections to the inspected Redis, the `sess:` namespace rule (every key it reads,
//! lists or deletes starts with `sess:`; nothing else is ever touched) and the summary of a
//! session for listings. It never prints, and its errors carry the masked URL, never the
//! password (a password that shows up in a driver message is replaced by `***`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use session::id::KEY_PREFIX;
use session::redis_url::{load_tls_ca_file, RedisUrl, TlsCaError};

use super::topology::{self, Keyed, Server, Topology};

/// How many keys one `SCAN` step asks for: big enough for few round trips, small enough that
/// no single command holds the server for long (an `MGET` of 1,000 small values is well under a
/// millisecond).
pub const SCAN_COUNT: usize = 1000;
/// The pattern of every session key.
pub const SESSION_PATTERN: &str = "sess:*";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot reach Redis at `{url}`: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Redis at `{url}` refused the credentials: {reason}")]
    Auth { url: String, reason: String },
    /// A `redis-cluster://` URL at a server without cluster mode, or `redis-sentinel://` at
    /// one that is no Sentinel.
    #[error("`{url}` is not {expected}: {reason}")]
    WrongKind {
        url: String,
        expected: &'static str,
        reason: String,
    },
    #[error("Redis at `{url}` failed during {operation}: {reason}")]
    Command {
        url: String,
        operation: &'static str,
        reason: String,
    },
    #[error("`REDIS_TLS_CA_FILE` is unusable: {0}")]
    BadTlsCaFile(#[from] TlsCaError),
}

/// A key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Seconds(i64),
    /// No expiry set (connect-redis never writes such a key; another writer did).
    Persistent,
}

impl Ttl {
    fn from_reply(seconds: i64) -> Option<Ttl> {
        match seconds {
            -2 => None,
            -1 => Some(Ttl::Persistent),
            seconds => Some(Ttl::Seconds(seconds.max(0))),
        }
    }

    /// Seconds, `None` for no expiry (the JSON form).
    pub fn seconds(self) -> Option<i64> {
        match self {
            Ttl::Seconds(seconds) => Some(seconds),
            Ttl::Persistent => None,
        }
    }
}

/// One `sess:` key as read.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key without `sess:`.
    pub id: String,
    pub ttl: Ttl,
    /// The stored text; `None` when the key holds another type than a string.
    pub value: Option<String>,
}

/// A session as a listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    /// Seconds to live; `null` for no expiry.
    pub ttl: Option<i64>,
    /// The `user` field as stored (exact JSON text), when there is one.
    pub user: Option<Box<RawValue>>,
    /// The other fields' names, in stored order (`cookie` and `user` left out).
    pub fields: Vec<String>,
    /// Bytes of the stored value.
    pub size: usize,
    /// Why the value is not a session object, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
}

impl Entry {
    /// The stored value parsed, or why it cannot be.
    pub fn parse(&self) -> Result<serde_json::Map<String, Value>, &'static str> {
        let Some(text) = &self.value else {
            return Err("not a string key");
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("not a JSON object"),
            Err(_) => Err("not JSON"),
        }
    }

    /// The listing's view. Reads only the top level of the value (fields stay raw text), so a
    /// listing of 100,000 sessions does not build 100,000 JSON trees.
    pub fn summary(&self) -> Summary {
        let size = self.value.as_ref().map_or(0, String::len);
        let top_level = match &self.value {
            Some(text) => top_level_fields(text),
            None => Err("not a string key"),
        };
        let (user, fields, problem) = match top_level {
            Ok(pairs) => {
                let mut user = None;
                let mut fields = Vec::new();
                for (name, value) in pairs {
                    match name.as_ref() {
                        "user" => user = Some(value.to_owned()),
                        "cookie" => {}
                        _ => fields.push(name.into_owned()),
                    }
                }
                (user, fields, None)
            }
            Err(problem) => (None, Vec::new(), Some(problem)),
        };
        Summary {
            id: self.id.clone(),
            ttl: self.ttl.seconds(),
            user,
            fields,
            size,
            problem,
        }
    }
}

/// A JSON object's top-level fields in stored order, values as raw text borrowed from `text`.
fn top_level_fields(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, &'static str> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let pairs = deserializer
        .deserialize_map(FieldsVisitor)
        .and_then(|pairs| deserializer.end().map(|()| pairs))
        .map_err(|error| match error.classify() {
            serde_json::error::Category::Data => "not a JSON object",
            _ => "not JSON",
        })?;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| (name.0, value))
        .collect())
}

/// A key, borrowed from the text unless it holds escapes.
struct FieldName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Vec<(FieldName<'de>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<FieldName<'de>, &'de RawValue>()? {
            pairs.push(pair);
        }
        Ok(pairs)
    }
}

/// The `SCAN` pattern for a user's pattern: always inside `sess:` (`abc*` means `sess:abc*`),
/// so a listing can never reach another application's keys.
pub fn session_pattern(pattern: &str) -> String {
    if pattern.starts_with(KEY_PREFIX) {
        pattern.to_owned()
    } else {
        format!("{KEY_PREFIX}{pattern}")
    }
}

/// Connections to the inspected Redis: every server that holds keys (see [`topology`]).
pub struct Inspector {
    topology: Topology,
    url: RedisUrl,
}

impl Inspector {
    /// Connects (authenticating and selecting the database) to every server the URL leads to
    /// and checks each with a `PING`. A `rediss://` URL trusts the CA in the environment's
    /// `REDIS_TLS_CA_FILE` when set, as the services do, and the bundled webpki roots otherwise.
    pub async fn connect(url: &RedisUrl) -> Result<Inspector, InspectError> {
        let url = &match std::env::var_os("REDIS_TLS_CA_FILE").filter(|path| !path.is_empty()) {
            Some(path) if url.is_tls() => url
                .clone()
                .with_tls_ca(load_tls_ca_file(std::path::Path::new(&path))?),
            _ => url.clone(),
        };
        let unreachable = |error: redis::RedisError| {
            let reason = redact(url, &error.to_string());
            let url = url.to_string();
            // A cluster's or a Sentinel set's client wraps the server's answer in its own
            // error, so its text is what tells.
            let auth = error.kind() == redis::ErrorKind::AuthenticationFailed
                || [
                    "NOAUTH",
                    "WRONGPASS",
                    "invalid password",
                    "AuthenticationFailed",
                ]
                .iter()
                .any(|word| reason.contains(word));
            let expected = if reason.contains("cluster support disabled") {
                Some("a Redis Cluster node (this server runs without cluster mode)")
            } else if reason.contains("unknown command 'SENTINEL'") {
                Some("a Redis Sentinel (this server is a Redis, not a sentinel)")
            } else {
                None
            };
            match (auth, expected) {
                (true, _) => InspectError::Auth { url, reason },
                (false, Some(expected)) => InspectError::WrongKind {
                    url,
                    expected,
                    reason,
                },
                (false, None) => InspectError::Unreachable { url, reason },
            }
        };
        let mut topology = topology::connect(url, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
            .await
            .map_err(unreachable)?;
        topology
            .ping_every_server()
            .await
            .map_err(|(_server, error)| unreachable(error))?;
        Ok(Inspector {
            topology,
            url: url.clone(),
        })
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Every server that holds keys: one, or each master of a cluster.
    pub fn servers(&mut self) -> &mut [Server] {
        &mut self.topology.servers
    }

    /// A command failure, with the masked URL.
    pub fn failed(&self, operation: &'static str, error: &redis::RedisError) -> InspectError {
        failed(&self.url, operation, error)
    }

    /// Every key matching `pattern` (see [`session_pattern`]), batch by batch, on every server
    /// at once: each batch is handed to `each` as soon as it is read. Keys that vanish meanwhile
    /// are skipped. `SCAN` may return a key twice (when the table is resized meanwhile):
    /// callers that care dedupe.
    pub async fn scan(
        &mut self,
        pattern: &str,
        each: impl FnMut(Vec<Entry>),
    ) -> Result<(), InspectError> {
        let pattern = session_pattern(pattern);
        let each = std::cell::RefCell::new(each);
        let (url, is_cluster) = (&self.url, self.topology.is_cluster);
        let scans = self.topology.servers.iter_mut().map(|server| {
            scan_server(&mut server.connection, &pattern, is_cluster, url, |batch| {
                // The scans run interleaved on one task; a batch is handed over whole.
                (each.borrow_mut())(batch)
            })
        });
        futures_util::future::try_join_all(scans).await?;
        Ok(())
    }

    /// One session by id, `None` when there is no such key.
    pub async fn get(&mut self, id: &str) -> Result<Option<Entry>, InspectError> {
        let key = format!("{KEY_PREFIX}{id}");
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(&key).cmd("TTL").arg(&key);
        let (values, ttl): (Vec<Option<Vec<u8>>>, i64) = match &mut self.topology.keyed {
            Keyed::Server(connection) => pipe.query_async(connection).await,
            Keyed::Cluster(connection) => pipe.query_async(connection).await,
        }
        .map_err(|error| self.failed("GET", &error))?;
        Ok(Ttl::from_reply(ttl).map(|ttl| Entry {
            id: id.to_owned(),
            ttl,
            value: values.into_iter().next().flatten().as_deref().map(text_of),
        }))
    }

    /// Deletes sessions by id; for each id, whether it existed.
    pub async fn delete(&mut self, ids: &[String]) -> Result<Vec<bool>, InspectError> {
        let keys: Vec<String> = ids.iter().map(|id| format!("{KEY_PREFIX}{id}")).collect();
        let removed: Vec<i64> = match &mut self.topology.keyed {
            Keyed::Server(connection) => {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("UNLINK").arg(key);
                }
                pipe.query_async(connection).await
            }
            // Each key to the master of its slot.
            Keyed::Cluster(connection) => {
                futures_util::future::try_join_all(keys.iter().map(|key| {
                    let mut connection = connection.clone();
                    async move {
                        redis::cmd("UNLINK")
                            .arg(key)
                            .query_async::<i64>(&mut connection)
                            .await
                    }
                }))
                .await
            }
        }
        .map_err(|error| self.failed("UNLINK", &error))?;
        Ok(removed.into_iter().map(|n| n > 0).collect())
    }

    /// How many `sess:` keys there are (a `SCAN` pass on every server; no values read).
    pub async fn count(&mut self) -> Result<usize, InspectError> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for server in &mut self.topology.servers {
            let mut cursor = 0_u64;
            loop {
                let (next, keys) = scan_step(&mut server.connection, cursor, &self.url).await?;
                seen.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(seen.len())
    }

    /// Deletes every `sess:` key, a `SCAN` batch at a time on every server; how many were
    /// deleted. On a cluster the keys of one batch may sit in different slots, so each is
    /// unlinked on its own (in one pipelined round trip).
    pub async fn flush(&mut self) -> Result<u64, InspectError> {
        let mut deleted = 0_u64;
        let is_cluster = self.topology.is_cluster;
        for server in &mut self.topology.servers {
            let mut cursor = 0_u64;
            loop {
                let (next, keys) = scan_step(&mut server.connection, cursor, &self.url).await?;
                if !keys.is_empty() {
                    let n: u64 = if is_cluster {
                        let mut pipe = redis::pipe();
                        for key in &keys {
                            pipe.cmd("UNLINK").arg(key);
                        }
                        pipe.query_async::<Vec<u64>>(&mut server.connection)
                            .await
                            .map(|each| each.iter().sum())
                    } else {
                        redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async(&mut server.connection)
                            .await
                    }
                    .map_err(|error| failed(&self.url, "UNLINK", &error))?;
                    deleted += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }
}

/// Bytes from Redis as text: UTF-8 as it is, any other byte as `\xNN` (a key or value another
/// program wrote need not be UTF-8, and one such key must not hide every other session).
fn text_of(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                return text;
            }
            Err(error) => {
                let (valid, after) = rest.split_at(error.valid_up_to());
                text.push_str(std::str::from_utf8(valid).expect("valid up to here"));
                let bad = error.error_len().unwrap_or(after.len());
                for byte in &after[..bad] {
                    text.push_str(&format!("\\x{byte:02x}"));
                }
                rest = &after[bad..];
            }
        }
    }
}

/// A command failure, with the masked URL.
fn failed(url: &RedisUrl, operation: &'static str, error: &redis::RedisError) -> InspectError {
    InspectError::Command {
        url: url.to_string(),
        operation,
        reason: redact(url, &error.to_string()),
    }
}

/// One server's keys matching `pattern`: each `SCAN` batch read with one pipelined round trip
/// that also asks for the next batch. On a cluster the values are read with one `MGET` per key
/// (a batch spans slots, and no command may).
async fn scan_server(
    connection: &mut MultiplexedConnection,
    pattern: &str,
    is_cluster: bool,
    url: &RedisUrl,
    mut each: impl FnMut(Vec<Entry>),
) -> Result<(), InspectError> {
    let scan = |cursor: u64| {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        cmd
    };
    // Keys and values as bytes: another program may have written ones that are not UTF-8.
    let (mut cursor, mut keys): (u64, Vec<Vec<u8>>) = scan(0)
        .query_async(connection)
        .await
        .map_err(|error| failed(url, "SCAN", &error))?;
    loop {
        if keys.is_empty() && cursor == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        if !keys.is_empty() {
            if is_cluster {
                for key in &keys {
                    pipe.cmd("MGET").arg(key);
                }
            } else {
                pipe.cmd("MGET").arg(&keys);
            }
            for key in &keys {
                pipe.cmd("TTL").arg(key);
            }
        }
        if cursor != 0 {
            pipe.add_command(scan(cursor));
        }
        let mut replies: Vec<redis::Value> = pipe
            .query_async(connection)
            .await
            .map_err(|error| failed(url, "SCAN", &error))?;
        let next = if cursor != 0 {
            let reply = replies.pop().expect("the pipeline ends with its SCAN");
            Some(
                redis::from_redis_value::<(u64, Vec<Vec<u8>>)>(&reply)
                    .map_err(|error| failed(url, "SCAN", &error))?,
            )
        } else {
            None
        };
        if !keys.is_empty() {
            let ttls = replies.split_off(if is_cluster { keys.len() } else { 1 });
            let values: Vec<Option<Vec<u8>>> = if is_cluster {
                replies
                    .iter()
                    .map(|reply| {
                        redis::from_redis_value::<Vec<Option<Vec<u8>>>>(reply)
                            .map(|value| value.into_iter().next().flatten())
                    })
                    .collect()
            } else {
                redis::from_redis_value(&replies[0])
            }
            .map_err(|error| failed(url, "MGET", &error))?;
            let mut batch = Vec::with_capacity(keys.len());
            for ((key, value), ttl) in keys.iter().zip(values).zip(ttls) {
                let ttl: i64 =
                    redis::from_redis_value(&ttl).map_err(|error| failed(url, "TTL", &error))?;
                if let Some(ttl) = Ttl::from_reply(ttl) {
                    batch.push(Entry {
                        id: text_of(&key[KEY_PREFIX.len()..]),
                        ttl,
                        value: value.as_deref().map(text_of),
                    });
                }
            }
            each(batch);
        }
        match next {
            Some((next_cursor, next_keys)) => {
                cursor = next_cursor;
                keys = next_keys;
            }
            None => return Ok(()),
        }
    }
}

/// One `SCAN` step over every session key of one server.
async fn scan_step(
    connection: &mut MultiplexedConnection,
    cursor: u64,
    url: &RedisUrl,
) -> Result<(u64, Vec<Vec<u8>>), InspectError> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(SESSION_PATTERN)
        .arg("COUNT")
        .arg(SCAN_COUNT)
        .query_async(connection)
        .await
        .map_err(|error| failed(url, "SCAN", &error))
}

/// `text` with the URL's password (raw and percent-encoded) replaced by `***`: driver messages
/// are not ours, so they are scrubbed before they reach a person.
pub fn redact(url: &RedisUrl, text: &str) -> String {
    match url.password() {
        Some(password) if !password.is_empty() => {
            let encoded = session::cookie::encode_uri_component(password);
            text.replace(password, "***").replace(&encoded, "***")
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_show_as_escapes_and_the_rest_as_it_is() {
        assert_eq!(text_of(b"plain"), "plain");
        assert_eq!(text_of("é✓".as_bytes()), "é✓");
        assert_eq!(text_of(b"bad\xff\xfeutf"), r"bad\xff\xfeutf");
        // A sequence cut short at the end, and one cut short in the middle.
        assert_eq!(text_of(b"a\xe2\x9c"), r"a\xe2\x9c");
        assert_eq!(text_of(b"a\xe2\x9cb"), r"a\xe2\x9cb");
    }

    #[test]
    fn patterns_stay_inside_the_session_namespace() {
        assert_eq!(session_pattern("sess:*"), "sess:*");
        assert_eq!(session_pattern("*"), "sess:*");
        assert_eq!(session_pattern("abc*"), "sess:abc*");
        assert_eq!(session_pattern("sess:ab?"), "sess:ab?");
    }

    #[test]
    fn summaries_name_the_user_and_the_other_fields() {
        let entry = |value: Option<&str>| Entry {
            id: "abc".into(),
            ttl: Ttl::Seconds(60),
            value: value.map(str::to_owned),
        };
        let summary = entry(Some(
            r#"{"cookie":{"path":"/"},"user":{"id":0.36535326065695717},"count":2,"theme":"dark"}"#,
        ))
        .summary();
        assert_eq!(
            summary.user.as_ref().map(|user| user.get()),
            Some(r#"{"id":0.36535326065695717}"#)
        );
        assert_eq!(summary.fields, ["count", "theme"]);
        assert_eq!(summary.ttl, Some(60));
        assert_eq!(summary.problem, None);
        assert_eq!(
            entry(Some("[1]")).summary().problem,
            Some("not a JSON object")
        );
        assert_eq!(entry(Some("{oops")).summary().problem, Some("not JSON"));
        assert_eq!(entry(None).summary().problem, Some("not a string key"));
    }

    #[test]
    fn redacts_the_password_from_driver_messages() {
        let url = RedisUrl::parse("redis://:can%40ary@h:1").expect("valid");
        assert_eq!(
            redact(&url, "auth can@ary failed, can%40ary"),
            "auth *** failed, ***"
        );
    }
}
