//! `Session`: one request's view of its session, loaded at most once and saved only on change.
//!
//! Owns the request-level rules of SESSION-FORMAT.md: a cookie that verifies names the session,
//! anything else means none; reading touches (through the store's `GETEX`); a change is a
//! closure re-run on fresh data until its compare-and-set lands (no lost update across
//! processes), with same-session changes inside this process taking turns (so 100 parallel
//! increments do not thrash); a new session is created only when a change needs one, always
//! under a new id; rotation (login) keeps the data under a new id. It never writes headers: the
//! layer turns `take_new_cookie_id` into `Set-Cookie`.

use crate::data::SessionData;
use crate::id::SessionId;
use crate::store::{RedisStore, Saved, StoreError, StoredSession};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// How many times a change is re-applied on fresh data before giving up (each lost race means
/// another writer landed, so this only runs out under pathological contention).
const MAX_ATTEMPTS: u32 = 64;

/// Same-session turn-taking inside one process, and the newest value this process knows for
/// each session in use (so a waiting change starts from it instead of a stale read).
#[derive(Default)]
pub(crate) struct SessionLocks {
    by_id: Mutex<HashMap<String, Weak<Turn>>>,
}

/// One session's turn: held while a change is saved; holds what the last holder learnt.
type Turn = tokio::sync::Mutex<Option<Newest>>;

/// The newest state of a session that this process knows.
enum Newest {
    /// Stored with this value.
    Saved(String),
    /// Moved to a new id by a login (rotation), with this value: a change waiting on the old
    /// id follows it there instead of finding the old key gone and starting a new session.
    MovedTo(SessionId, String),
}

/// Entries above this count trigger a sweep of those no request holds any more.
const LOCK_SWEEP_THRESHOLD: usize = 1024;

impl SessionLocks {
    fn for_id(&self, id: &SessionId) -> Arc<Turn> {
        let mut by_id = self
            .by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lock) = by_id.get(id.as_str()).and_then(Weak::upgrade) {
            return lock;
        }
        if by_id.len() >= LOCK_SWEEP_THRESHOLD {
            by_id.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(None));
        by_id.insert(id.as_str().to_owned(), Arc::downgrade(&lock));
        lock
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The session of one request. Cheap to clone (clones share state).
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    store: RedisStore,
    locks: Arc<SessionLocks>,
    new_session_cookie: Arc<str>,
    /// The id of a cookie whose signature verified, if any.
    cookie_id: Option<SessionId>,
    state: tokio::sync::Mutex<State>,
    new_cookie_id: Mutex<Option<SessionId>>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    current: Option<(SessionId, StoredSession)>,
}

impl Session {
    pub(crate) fn new(
        store: RedisStore,
        locks: Arc<SessionLocks>,
        new_session_cookie: Arc<str>,
        cookie_id: Option<SessionId>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                locks,
                new_session_cookie,
                cookie_id,
                state: tokio::sync::Mutex::new(State::default()),
                new_cookie_id: Mutex::new(None),
            }),
        }
    }

    /// The session's id, once loaded (`None` for no session).
    pub async fn id(&self) -> Result<Option<SessionId>, SessionError> {
        let mut state = self.inner.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state.current.as_ref().map(|(id, _)| id.clone()))
    }

    /// The session's fields, or `None` when the request has no session. Reading extends the
    /// session's TTL in the same round trip; it never writes.
    pub async fn data(&self) -> Result<Option<SessionData>, SessionError> {
        let mut state = self.inner.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        Ok(state
            .current
            .as_ref()
            .map(|(_, stored)| stored.data.clone()))
    }

    /// Applies `change` and saves the result if it changed anything. `change` may run more than
    /// once (on fresh data after a concurrent write), so it must only compute from its input.
    /// Without a session, it runs on a new empty one, which is created (under a new id) only if
    /// the change left it different. Returns what the last run of `change` returned.
    pub async fn update<T>(
        &self,
        mut change: impl FnMut(&mut SessionData) -> T,
    ) -> Result<T, SessionError> {
        let mut state = self.inner.state.lock().await;
        self.ensure_loaded(&mut state).await?;
        let turn = state
            .current
            .as_ref()
            .map(|(id, _)| self.inner.locks.for_id(id));
        let mut newest_known = match &turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        let turn_id = state.current.as_ref().map(|(id, _)| id.clone());
        match (newest_known.as_deref(), &mut state.current) {
            // Another request of this process saved after our read: start from its value.
            (Some(Some(Newest::Saved(newest))), Some((_, stored))) if *newest != stored.raw => {
                if let Ok(data) = SessionData::parse(newest) {
                    *stored = StoredSession {
                        raw: newest.clone(),
                        data,
                    };
                }
            }
            (Some(Some(Newest::MovedTo(new_id, newest))), Some(current)) => {
                if let Ok(data) = SessionData::parse(newest) {
                    self.set_new_cookie_id(new_id);
                    *current = (
                        new_id.clone(),
                        StoredSession {
                            raw: newest.clone(),
                            data,
                        },
                    );
                }
            }
            _ => {}
        }
        // What this request learns goes back to its turn, for the next one waiting on that id.
        let mut remember = |id: &SessionId, newest: Option<Newest>| {
            if let Some(slot) = newest_known.as_deref_mut() {
                if turn_id.as_ref() == Some(id) {
                    *slot = newest;
                }
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((id, stored)) = &state.current else {
                let mut data = SessionData::new(&self.inner.new_session_cookie);
                let unchanged = data.to_json();
                let output = change(&mut data);
                data.take_rotate_id(); // a new session has a new id anyway
                if data.to_json() != unchanged {
                    let (id, raw) = self.inner.store.create(&data).await?;
                    self.set_new_cookie_id(&id);
                    state.current = Some((id, StoredSession { raw, data }));
                }
                return Ok(output);
            };
            let mut data = stored.data.clone();
            let output = change(&mut data);
            let rotate = data.take_rotate_id();
            if !rotate && data.to_json() == stored.data.to_json() {
                return Ok(output);
            }
            let (id, expected) = (id.clone(), stored.raw.clone());
            if rotate {
                if let Some((new_id, raw)) = self.inner.store.rotate(&id, &expected, &data).await? {
                    self.set_new_cookie_id(&new_id);
                    remember(&id, Some(Newest::MovedTo(new_id.clone(), raw.clone())));
                    state.current = Some((new_id, StoredSession { raw, data }));
                    return Ok(output);
                }
            } else {
                let (saved, raw) = self
                    .inner
                    .store
                    .compare_and_set(&id, &expected, &data)
                    .await?;
                if saved == Saved::Done {
                    remember(&id, Some(Newest::Saved(raw.clone())));
                    state.current = Some((id, StoredSession { raw, data }));
                    return Ok(output);
                }
            }
            // Someone else wrote or destroyed it meanwhile: re-run the change on what is there.
            tracing::debug!(session = ?id, "session changed under a save; retrying on fresh data");
            let fresh = self.inner.store.get(&id).await?;
            remember(
                &id,
                fresh
                    .as_ref()
                    .map(|stored| Newest::Saved(stored.raw.clone())),
            );
            state.current = fresh.map(|stored| (id, stored));
        }
        Err(StoreError::Contention {
            operation: "save",
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Deletes the session from the store (logout). The request then has no session. Without
    /// a loaded session this is one `DEL` of the cookie's id, with no read first.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let mut state = self.inner.state.lock().await;
        let id = if state.loaded {
            state.current.take().map(|(id, _)| id)
        } else {
            self.inner.cookie_id.clone()
        };
        if let Some(id) = id {
            self.inner.store.destroy(&id).await?;
        }
        state.loaded = true;
        state.current = None;
        Ok(())
    }

    /// The id the client must be sent in `Set-Cookie`, if this request created or rotated one.
    pub fn take_new_cookie_id(&self) -> Option<SessionId> {
        self.inner
            .new_cookie_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn set_new_cookie_id(&self, id: &SessionId) {
        *self
            .inner
            .new_cookie_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(id.clone());
    }

    async fn ensure_loaded(&self, state: &mut State) -> Result<(), SessionError> {
        if state.loaded {
            return Ok(());
        }
        if let Some(id) = &self.inner.cookie_id {
            state.current = self
                .inner
                .store
                .load_and_touch(id)
                .await?
                .map(|stored| (id.clone(), stored));
        }
        state.loaded = true;
        Ok(())
    }
}
