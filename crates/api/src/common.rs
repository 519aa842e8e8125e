//! Small types shared by several kinds.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to the PostgresCluster a resource belongs to, in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct ClusterReference {
    /// Name of the PostgresCluster in this namespace.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

impl ClusterReference {
    /// A reference to the cluster called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Who asked for a backup: a person (or the platform's API acting for one), or a schedule that
/// tusk created by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggeredBy {
    /// Requested by a customer, through the platform or kubectl.
    #[default]
    User,
    /// Requested by tusk itself, from the cluster's `default` schedule.
    System,
}

impl std::fmt::Display for TriggeredBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TriggeredBy::User => "user",
            TriggeredBy::System => "system",
        })
    }
}

/// Selects one key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}
