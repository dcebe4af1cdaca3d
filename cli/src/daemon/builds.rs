//! The services being built right now, and since when: `stack ls` shows them as BUILDING
//! (beside the deployment that keeps serving, during a redeploy), and a starting daemon says
//! what it is building.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::supervisor::build::Service;
use crate::supervisor::logs::now_ms;

/// Shared by the start, the redeployer and the daemon's answers; cheap to clone.
#[derive(Clone, Default)]
pub struct Builds {
    building: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Builds {
    /// Marks `services` as building until the returned guard is dropped (build over, failed,
    /// or abandoned at shutdown).
    pub fn start(&self, services: &[Service]) -> BuildsGuard {
        let started_ms = now_ms();
        let names: Vec<String> = services
            .iter()
            .map(|service| service.name.clone())
            .collect();
        let mut building = self.lock();
        for name in &names {
            building.insert(name.clone(), started_ms);
        }
        BuildsGuard {
            builds: self.clone(),
            names,
        }
    }

    /// Each service being built, with when its build started (ms since the Unix epoch).
    pub fn in_progress(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .map(|(name, started_ms)| (name.clone(), *started_ms))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.building
            .lock()
            .expect("never poisoned: no panics while held")
    }
}

#[must_use = "the services show as building only while the guard lives"]
pub struct BuildsGuard {
    builds: Builds,
    names: Vec<String>,
}

impl Drop for BuildsGuard {
    fn drop(&mut self) {
        let mut building = self.builds.lock();
        for name in &self.names {
            building.remove(name);
        }
    }
}
