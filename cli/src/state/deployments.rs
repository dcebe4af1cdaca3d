//! The `deployments` section of the state file: each service's deployment history.
//! (Owned by the supervisor work; see issue 5.)

use serde::{Deserialize, Serialize};

/// One service's deployments, newest last, and which one is live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceHistory {
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
