//! The four patch types kube-apiserver accepts: JSON merge, JSON, strategic merge and server-side apply.

mod apply;
mod fields;
mod json;
mod strategic;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use apply::{ApplyOutcome, record_update, server_side_apply};
pub use json::json_patch;
pub use strategic::strategic_merge_patch;

/// One field that another manager owns with a different value, refusing an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The manager as kube-apiserver prints it: `"kubectl" using apps/v1` for an Update
    /// manager, `"other"` for an Apply manager.
    pub manager: String,
    /// The field, as structured-merge-diff prints paths: `.spec.replicas`,
    /// `.spec.containers[name="app"].image`.
    pub field: String,
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not a patch of the announced type (not JSON, not a list of operations...).
    #[error("{0}")]
    Malformed(String),
    /// A JSON patch `test` operation found another value.
    #[error("testing value {path} failed: test failed")]
    TestFailed {
        /// The JSON pointer the test named.
        path: String,
    },
    /// A JSON patch operation could not be applied to the object (missing path, bad index...).
    #[error("{0}")]
    OperationFailed(String),
    /// Strategic merge patch on a kind that has no patch strategy (custom resources).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    UnsupportedMediaType,
    /// A server-side apply touches fields other managers own with other values.
    #[error("{message}")]
    Conflict {
        /// The whole message, as kube-apiserver words it.
        message: String,
        /// Each conflicting field, for `details.causes` (reason `FieldManagerConflict`).
        conflicts: Vec<ApplyConflict>,
    },
    /// The patch is well-formed but its result is not an acceptable object.
    #[error("{0}")]
    Invalid(String),
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::Malformed(_) => 400,
            PatchError::TestFailed { .. } | PatchError::OperationFailed(_) => 422,
            PatchError::UnsupportedMediaType => 415,
            PatchError::Conflict { .. } => 409,
            PatchError::Invalid(_) => 422,
        }
    }

    /// The Status `reason` that goes with [`Self::http_status`].
    pub fn status_reason(&self) -> &'static str {
        match self {
            PatchError::Malformed(_) => "BadRequest",
            PatchError::UnsupportedMediaType => "UnsupportedMediaType",
            PatchError::Conflict { .. } => "Conflict",
            PatchError::TestFailed { .. }
            | PatchError::OperationFailed(_)
            | PatchError::Invalid(_) => "Invalid",
        }
    }
}

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, and
/// anything else (lists included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// How the elements of a list are told apart when lists are merged (strategic merge patch)
/// or owned (server-side apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListSemantics {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars (finalizers).
    Set,
    /// Objects identified by these keys.
    Map(Vec<&'static str>),
}

/// The list semantics of the built-in kinds (and of tusk's conditions), from the Go types'
/// `patchStrategy`/`patchMergeKey` and `listType` markers. `path` holds the field names from
/// the object's root, list indices left out.
pub(crate) fn list_semantics(kind: &str, path: &[&str]) -> ListSemantics {
    let Some(field) = path.last() else {
        return ListSemantics::Atomic;
    };
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    match *field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListSemantics::Map(vec!["name"]),
        "volumeMounts" => ListSemantics::Map(vec!["mountPath"]),
        "volumeDevices" => ListSemantics::Map(vec!["devicePath"]),
        "hostAliases" => ListSemantics::Map(vec!["ip"]),
        "topologySpreadConstraints" => ListSemantics::Map(vec!["topologyKey"]),
        "conditions" => ListSemantics::Map(vec!["type"]),
        "ownerReferences" if parent == Some("metadata") => ListSemantics::Map(vec!["uid"]),
        "finalizers" if parent == Some("metadata") => ListSemantics::Set,
        "ports" => match (kind, parent) {
            ("Service", Some("spec")) => ListSemantics::Map(vec!["port"]),
            (_, Some("containers" | "initContainers" | "ephemeralContainers")) => {
                ListSemantics::Map(vec!["containerPort"])
            }
            _ => ListSemantics::Atomic,
        },
        _ => ListSemantics::Atomic,
    }
}
