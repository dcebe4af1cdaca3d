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
    /// The HTTP path that must answer before an instance is ready (see `supervisor::build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// A worker (`kind = "worker"`, a Procfile entry that is not web): no URL.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worker: bool,
}

impl ServiceHistory {
    pub fn find(&self, id: &str) -> Option<&DeploymentRecord> {
        self.deployments.iter().find(|record| record.id == id)
    }

    pub fn current_record(&self) -> Option<&DeploymentRecord> {
        self.find(self.current.as_deref()?)
    }
}

/// Where deployment artifacts live under `.stack/`.
pub const DEPLOYMENTS_DIR: &str = "deployments";

impl super::State {
    /// Forgets a deployment's record (the service's `current` moves to the newest remaining
    /// one); `false` when no such deployment is recorded. The artifact is the caller's to
    /// remove ([`remove_artifact`]), once the change is saved.
    pub fn forget_deployment(&mut self, deployment_id: &str) -> bool {
        let mut found = false;
        for history in self.deployments.values_mut() {
            let before = history.deployments.len();
            history
                .deployments
                .retain(|record| record.id != deployment_id);
            if history.deployments.len() != before {
                found = true;
                if history.current.as_deref() == Some(deployment_id) {
                    history.current = history.deployments.last().map(|record| record.id.clone());
                }
            }
        }
        self.deployments
            .retain(|_, history| !history.deployments.is_empty());
        found
    }
}

/// `<project>/.stack/deployments`.
pub fn deployments_dir(project_dir: &std::path::Path) -> std::path::PathBuf {
    project_dir.join(super::STATE_DIR).join(DEPLOYMENTS_DIR)
}

/// Deletes a deployment's artifact directory (a missing one is fine).
pub fn remove_artifact(project_dir: &std::path::Path, deployment_id: &str) {
    let dir = deployments_dir(project_dir).join(deployment_id);
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(%error, dir = %dir.display(), "cannot remove the deployment's files");
        }
    }
}
