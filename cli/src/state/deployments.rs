//! The `deployments` section of the state file: each service's deployments, oldest first, and
//! which one is current. A deployment's artifact lives in `.stack/deployments/<id>/`; this
//! section says how to start it again. Plain data: no I/O beyond what `State` does.

use serde::{Deserialize, Serialize};

/// One service's deployments, oldest first, and which one is live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceHistory {
    /// The deployment that `<service>.localhost` and a `dest` naming the service reach.
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub deployments: Vec<DeploymentRecord>,
}

/// How one deployment was built and how to start it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentRecord {
    /// `<service>-<10 lowercase letters>`.
    pub id: String,
    pub service: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// `cargo` or `npm`.
    pub kind: String,
    /// The program, relative to the deployment directory when it is a copied artifact
    /// (`writer`), else a name looked up on PATH (`npm`).
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Identifies the build output, so an unchanged build reuses its deployment.
    pub fingerprint: String,
    #[serde(default)]
    pub release: bool,
}

impl ServiceHistory {
    pub fn find(&self, id: &str) -> Option<&DeploymentRecord> {
        self.deployments.iter().find(|record| record.id == id)
    }

    pub fn current_record(&self) -> Option<&DeploymentRecord> {
        self.find(self.current.as_deref()?)
    }
}
