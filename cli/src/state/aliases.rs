//! The `aliases` section of the state file: alias host to what it points at.
//! (Owned by the alias rules work; see issue 3.)

use serde::{Deserialize, Serialize};

/// What an alias points at, and when it was set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alias {
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
