//! The live feed of `stack redis watch`: keyspace notifications for `sess:*`
//! (`PSUBSCRIBE __keyspace@<db>__:sess:*` on a dedicated connection), turned into changes
//! (created, changed, deleted, expired) with the fields that changed, against a cache of the
//! last value seen of every session.
//!
//! Owns checking `notify-keyspace-events` (an external Redis often has them off; the error says
//! how to turn them on), the cache (filled by one pipelined scan at start) and the field diff.
//! It never writes to Redis and never prints: changes go to the caller's callback.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use session::id::KEY_PREFIX;

use super::inspect::{redact, Entry, InspectError, Inspector, SESSION_PATTERN};

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("keyspace notifications are off in Redis at `{url}` (`notify-keyspace-events` is `{current}`), so session changes cannot be seen")]
    NotificationsOff { url: String, current: String },
    #[error("lost the notification connection to Redis at `{url}` and could not get it back within 30 s")]
    Lost { url: String },
}

impl FeedError {
    /// What to do, in now's voice.
    pub fn hint(&self) -> String {
        match self {
            FeedError::NotificationsOff { .. } => "Enable them: `redis-cli CONFIG SET notify-keyspace-events KEA` (add `-u <url>` for your server), or the line `notify-keyspace-events KEA` in redis.conf. The managed Redis of `stack up` has them on.".into(),
            FeedError::Lost { .. } => "Check that Redis is still running, then run `stack redis watch` again.".into(),
            FeedError::Inspect(_) => "Start it with `stack up`, or set REDIS_SESSION_URL (environment or `--dotenv`) to your Redis.".into(),
        }
    }
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Written, not seen before.
    Created,
    /// Written over a value seen before.
    Changed,
    Deleted,
    Expired,
    /// Removed by `maxmemory` eviction.
    Evicted,
}

impl ChangeKind {
    pub fn word(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Changed => "changed",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Expired => "expired",
            ChangeKind::Evicted => "evicted",
        }
    }
}

/// One field's change. Values are compact JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldChange {
    Added {
        name: String,
        value: String,
    },
    Removed {
        name: String,
        value: String,
    },
    Changed {
        name: String,
        old: String,
        new: String,
    },
}

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub kind: ChangeKind,
    pub fields: Vec<FieldChange>,
}

/// Field-by-field difference between two stored sessions. The `cookie` object is compared
/// one level down (`cookie.expires`), since a rolling expiry changes it on every save.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    diff_into("", old, new, &mut changes);
    changes
}

fn diff_into(
    prefix: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    changes: &mut Vec<FieldChange>,
) {
    for (name, new_value) in new {
        let full = format!("{prefix}{name}");
        match old.get(name) {
            None => changes.push(FieldChange::Added {
                name: full,
                value: compact(new_value),
            }),
            Some(old_value) if old_value == new_value => {}
            Some(old_value @ Value::Object(old_map)) if prefix.is_empty() && name == "cookie" => {
                if let Value::Object(new_map) = new_value {
                    diff_into("cookie.", old_map, new_map, changes);
                } else {
                    changes.push(changed(full, old_value, new_value));
                }
            }
            Some(old_value) => changes.push(changed(full, old_value, new_value)),
        }
    }
    for (name, old_value) in old {
        if !new.contains_key(name) {
            changes.push(FieldChange::Removed {
                name: format!("{prefix}{name}"),
                value: compact(old_value),
            });
        }
    }
}

fn changed(name: String, old: &Value, new: &Value) -> FieldChange {
    FieldChange::Changed {
        name,
        old: compact(old),
        new: compact(new),
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serialises")
}

/// Checks that every server sends keyspace events for what the feed needs: `K` (keyspace
/// channel) and the classes of `set` (`$`), `del` (`g`) and `expired` (`x`), or `A` for all. A
/// server that refuses `CONFIG` (managed services often do) is given the benefit of the doubt.
pub async fn check_notifications(inspector: &mut Inspector) -> Result<(), FeedError> {
    let url = inspector.url().clone();
    for server in inspector.servers() {
        let reply: redis::RedisResult<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut server.connection)
            .await;
        let current = match reply {
            Ok((_, current)) => current,
            Err(error) => {
                tracing::warn!(server = %server.label, error = %redact(&url, &error.to_string()), "cannot read notify-keyspace-events; assuming it is on");
                continue;
            }
        };
        let has = |class: char| current.contains(class);
        let classes_on = has('A') || (has('$') && has('g') && has('x'));
        if !(has('K') && classes_on) {
            let url = if url.is_cluster() {
                format!("{url} (node {})", server.label)
            } else {
                url.to_string()
            };
            return Err(FeedError::NotificationsOff { url, current });
        }
    }
    Ok(())
}

/// How long the feed tries to get its servers back after losing one (a failover takes a few
/// seconds; a server that stays away this long ends the feed with [`FeedError::Lost`]).
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// What happened to the feed's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A server's subscription ended (it died, or a failover moved the master): reconnecting.
    Lost,
    /// Subscribed again on every server, with this many sessions known.
    Back(usize),
}

/// The feed: fills the cache, subscribes on every server (each master of a cluster sends only
/// its own keys' events), calls `ready` once every subscription is confirmed, then `on_change`
/// for every session write, delete and expiry until `stop` resolves. When a server's
/// subscription ends (a restart, or a failover that moved the master), it says so through
/// `on_link`, connects again (through the sentinels, or to the cluster's masters of now) for up
/// to [`RECONNECT_DEADLINE`], and goes on; changes made while it was away are not shown.
pub async fn run(
    mut inspector: Inspector,
    ready: impl FnOnce(usize),
    mut on_change: impl FnMut(Change),
    mut on_link: impl FnMut(Link),
    stop: impl Future<Output = ()>,
) -> Result<(), FeedError> {
    let url = inspector.url().clone();
    tokio::pin!(stop);
    let mut ready = Some(ready);
    loop {
        let served = serve(
            &mut inspector,
            &mut |n_known| match ready.take() {
                Some(ready) => ready(n_known),
                None => on_link(Link::Back(n_known)),
            },
            &mut on_change,
            stop.as_mut(),
        )
        .await?;
        if served == Served::Stopped {
            return Ok(());
        }
        on_link(Link::Lost);
        let deadline = tokio::time::Instant::now() + RECONNECT_DEADLINE;
        inspector = loop {
            tokio::select! {
                () = stop.as_mut() => return Ok(()),
                connected = Inspector::connect(&url) => match connected {
                    Ok(inspector) => break inspector,
                    Err(error) if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(%error, "cannot reconnect the watch feed");
                        return Err(FeedError::Lost { url: url.to_string() });
                    }
                    Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
                },
            }
        };
    }
}

/// How one connection of the feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Stopped,
    Lost,
}

/// One connection's life: subscribe everywhere, fill the cache, then follow the events until
/// `stop` or until a server goes away (its subscription ends, or reading a session fails).
async fn serve(
    inspector: &mut Inspector,
    ready: &mut impl FnMut(usize),
    on_change: &mut impl FnMut(Change),
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<Served, FeedError> {
    check_notifications(inspector).await?;
    let url = inspector.url().clone();
    let channel_prefix = format!("__keyspace@{}__:", url.db);
    // Subscribe before filling the cache, so no write falls between the two.
    let mut subscriptions = Vec::new();
    for server in inspector.servers() {
        let mut pubsub =
            server
                .client
                .get_async_pubsub()
                .await
                .map_err(|error| InspectError::Unreachable {
                    url: url.to_string(),
                    reason: redact(&url, &error.to_string()),
                })?;
        pubsub
            .psubscribe(format!("{channel_prefix}{SESSION_PATTERN}"))
            .await
            .map_err(|error| InspectError::Command {
                url: url.to_string(),
                operation: "PSUBSCRIBE",
                reason: redact(&url, &error.to_string()),
            })?;
        subscriptions.push(pubsub);
    }
    let mut cache: HashMap<String, Map<String, Value>> = HashMap::new();
    inspector
        .scan(SESSION_PATTERN, |batch| {
            for entry in batch {
                if let Ok(map) = entry.parse() {
                    cache.insert(entry.id, map);
                }
            }
        })
        .await?;
    ready(cache.len());
    // One stream of every server's messages; `None` marks the end of one server's.
    let mut messages = futures_util::stream::select_all(subscriptions.iter_mut().map(|pubsub| {
        pubsub
            .on_message()
            .map(Some)
            .chain(futures_util::stream::once(async { None }))
            .boxed()
    }));
    loop {
        let message = tokio::select! {
            message = messages.next() => match message.flatten() {
                Some(message) => message,
                None => return Ok(Served::Lost),
            },
            () = stop.as_mut() => return Ok(Served::Stopped),
        };
        let channel = message.get_channel_name();
        let Some(key) = channel.strip_prefix(&channel_prefix) else {
            continue;
        };
        let Some(id) = key.strip_prefix(KEY_PREFIX) else {
            continue;
        };
        let event: String = message.get_payload().unwrap_or_default();
        let removed = match event.as_str() {
            "del" | "rename_from" => Some(ChangeKind::Deleted),
            "expired" => Some(ChangeKind::Expired),
            "evicted" => Some(ChangeKind::Evicted),
            "set" | "rename_to" => None,
            // `expire` (a touch, or the EX of a SET) and the rest change no field.
            _ => continue,
        };
        if let Some(kind) = removed {
            let fields = cache
                .remove(id)
                .map(|old| diff(&old, &Map::new()))
                .unwrap_or_default();
            on_change(Change {
                id: id.to_owned(),
                kind,
                fields,
            });
            continue;
        }
        let Ok(read) = inspector.get(id).await else {
            // The server went away between its event and this read.
            return Ok(Served::Lost);
        };
        let Some(entry): Option<Entry> = read else {
            // Gone again already: its `del` or `expired` event follows.
            continue;
        };
        let Ok(new) = entry.parse() else {
            continue;
        };
        let change = match cache.get(id) {
            Some(old) => Change {
                id: id.to_owned(),
                kind: ChangeKind::Changed,
                fields: diff(old, &new),
            },
            None => Change {
                id: id.to_owned(),
                kind: ChangeKind::Created,
                fields: diff(&Map::new(), &new),
            },
        };
        cache.insert(id.to_owned(), new);
        on_change(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).expect("test JSON") {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn check(old: &str, new: &str, expected: &[FieldChange]) {
        assert_eq!(diff(&map(old), &map(new)), expected, "{old} -> {new}");
    }

    fn added(name: &str, value: &str) -> FieldChange {
        FieldChange::Added {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn diffs_fields_and_the_cookie_one_level_down() {
        check(r#"{"count":1}"#, r#"{"count":1}"#, &[]);
        check(
            r#"{"count":1}"#,
            r#"{"count":2}"#,
            &[FieldChange::Changed {
                name: "count".into(),
                old: "1".into(),
                new: "2".into(),
            }],
        );
        check(
            r#"{"cookie":{"path":"/"}}"#,
            r#"{"cookie":{"path":"/"},"user":{"id":0.36535326065695717}}"#,
            &[added("user", r#"{"id":0.36535326065695717}"#)],
        );
        check(
            r#"{"user":{"id":1},"count":3}"#,
            "{}",
            &[
                FieldChange::Removed {
                    name: "user".into(),
                    value: r#"{"id":1}"#.into(),
                },
                FieldChange::Removed {
                    name: "count".into(),
                    value: "3".into(),
                },
            ],
        );
        check(
            r#"{"cookie":{"expires":null,"path":"/"}}"#,
            r#"{"cookie":{"expires":"2026-11-29T03:00:00.000Z","path":"/","secure":true}}"#,
            &[
                FieldChange::Changed {
                    name: "cookie.expires".into(),
                    old: "null".into(),
                    new: r#""2026-11-29T03:00:00.000Z""#.into(),
                },
                added("cookie.secure", "true"),
            ],
        );
    }
}
