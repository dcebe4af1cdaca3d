//! The aliases of a running stack and the proxy's routing table built from them: rebuilt and
//! swapped whole after every change of the supervisor ([`follow`]) and after every alias
//! change ([`Aliases::apply`]), both under one lock, so a table never mixes two alias sets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::routes;
use super::{DaemonError, WaitingStart, WaitingStarts};
use crate::control::api::AliasChange;
use crate::output;
use crate::proxy::Routing;
use crate::state::{Alias, Store};
use crate::supervisor::{Snapshot, Supervisor};

pub struct Aliases {
    current: Mutex<BTreeMap<String, Alias>>,
    routing: Routing,
    /// First deployments still waiting for their `depends_on`: their hosts are theirs.
    waiting: Arc<WaitingStarts>,
}

impl Aliases {
    pub fn new(
        aliases: BTreeMap<String, Alias>,
        routing: Routing,
        waiting: Arc<WaitingStarts>,
    ) -> Aliases {
        Aliases {
            current: Mutex::new(aliases),
            routing,
            waiting,
        }
    }

    fn waiting(&self) -> BTreeMap<String, WaitingStart> {
        self.waiting
            .lock()
            .expect("never poisoned: no panics while held")
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Alias>> {
        self.current
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// The aliases in force.
    pub fn all(&self) -> BTreeMap<String, Alias> {
        self.lock().clone()
    }

    /// Rebuilds the table for `snapshot` and swaps it in; returns what building it noted.
    pub fn refresh(&self, snapshot: &Snapshot) -> Vec<String> {
        let aliases = self.lock();
        let built = routes::build(snapshot, &self.waiting(), &aliases);
        self.routing.swap(built.table);
        built.notes
    }

    /// Validates the change against what runs (every `dest` of the changed host must resolve),
    /// saves it and swaps the new table in: all of it, or nothing.
    pub fn apply(
        &self,
        change: &AliasChange,
        snapshot: &Snapshot,
        store: &Store,
    ) -> Result<(), DaemonError> {
        let mut aliases = self.lock();
        let mut candidate = aliases.clone();
        match change {
            AliasChange::Set { host, alias } => {
                if let Some(owner) = routes::owner(snapshot, &self.waiting(), host) {
                    return Err(DaemonError::HostTaken(owner));
                }
                candidate.insert(host.clone(), alias.clone());
            }
            AliasChange::Remove { host } => {
                candidate.remove(host);
            }
        }
        let built = routes::build(snapshot, &self.waiting(), &candidate);
        let unresolved: Vec<_> = built
            .unresolved
            .into_iter()
            .filter(|unresolved| unresolved.host == change.host())
            .collect();
        if !unresolved.is_empty() {
            return Err(DaemonError::UnresolvedAlias(unresolved));
        }
        store.update(|state| change.apply_to(state))?;
        self.routing.swap(built.table);
        *aliases = candidate;
        Ok(())
    }
}

/// Rebuilds and swaps the routing table after every supervisor change until `shutdown`;
/// each note (a now.sh fallback, a `dest` gone) is printed once.
pub async fn follow(aliases: Arc<Aliases>, supervisor: Supervisor, shutdown: CancellationToken) {
    let mut changes = supervisor.subscribe();
    let mut warned: Vec<String> = Vec::new();
    loop {
        let snapshot = changes.borrow_and_update().clone();
        for note in aliases.refresh(&snapshot) {
            if !warned.contains(&note) {
                output::warn(&note);
                warned.push(note);
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}
