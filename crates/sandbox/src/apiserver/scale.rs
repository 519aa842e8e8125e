//! The `/scale` subresource: an `autoscaling/v1` `Scale` view of a workload's replica count,
//! which `kubectl scale` and HorizontalPodAutoscalers read and write.
//!
//! Deployments, ReplicaSets and StatefulSets serve it, and so does a custom resource whose CRD
//! declares `subresources.scale`. Reading it shows the object's desired and observed replicas and
//! its selector as a string; writing it changes `spec.replicas` (or the CRD's
//! `specReplicasPath`) of the object, through the ordinary update path, so its generation moves
//! and its controller converges as after any other spec change.

use serde_json::{Value, json};

use super::error::ApiError;
use super::ext::{self, Cause};
use super::ops::{self, PatchType, WriteOptions, meta_str, present};
use super::resources::ResourceType;
use super::store::{Key, Store};

/// Updates retried when another writer raced this one, as the other write paths do.
const MAX_RETRIES: usize = 5;

/// Where a kind keeps what its Scale shows, as JSON pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    /// A string-valued selector (custom resources); built-in kinds derive theirs from the
    /// `spec.selector` LabelSelector instead.
    pub label_selector: Option<String>,
}

impl ScalePaths {
    /// The paths of the built-in kinds that serve `/scale`.
    pub fn builtin(kind: &str) -> Option<Self> {
        matches!(
            kind,
            "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController"
        )
        .then(|| ScalePaths {
            spec_replicas: "/spec/replicas".to_string(),
            status_replicas: "/status/replicas".to_string(),
            label_selector: None,
        })
    }

    /// The paths a CRD version's `subresources.scale` declares, if it declares one.
    pub fn from_crd_version(version: &Value) -> Option<Self> {
        let scale = version.pointer("/subresources/scale")?;
        let path = |field: &str| scale.get(field).and_then(Value::as_str).map(json_pointer);
        Some(ScalePaths {
            spec_replicas: path("specReplicasPath")?,
            status_replicas: path("statusReplicasPath")?,
            label_selector: path("labelSelectorPath"),
        })
    }
}

/// `.spec.replicas` as the JSON pointer `/spec/replicas`.
fn json_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The Scale of `object`.
pub(crate) fn scale_of(paths: &ScalePaths, object: &Value) -> Value {
    let replicas = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
    let selector = match &paths.label_selector {
        Some(pointer) => object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        None => selector_string(object.pointer("/spec/selector")),
    };
    let mut status = json!({"replicas": replicas(&paths.status_replicas)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = object.pointer(&format!("/metadata/{field}")) {
            metadata[field] = value.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": replicas(&paths.spec_replicas)},
        "status": status,
    })
}

/// A LabelSelector in the string form of `labels.Selector`: requirements sorted by key,
/// `k=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`. ReplicationControllers keep a plain
/// map, which reads as `matchLabels`.
pub(crate) fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector.and_then(Value::as_object) else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    let is_label_selector =
        selector.contains_key("matchLabels") || selector.contains_key("matchExpressions");
    let labels = if is_label_selector {
        selector.get("matchLabels").and_then(Value::as_object)
    } else {
        Some(selector)
    };
    for (key, value) in labels.into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        requirements.push((key.clone(), format!("{key}={value}")));
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort();
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

fn paths_of(rt: &ResourceType) -> Result<&ScalePaths, ApiError> {
    rt.scale.as_deref().ok_or_else(ApiError::no_route)
}

/// `GET .../<name>/scale`.
pub(crate) fn get(store: &Store, rt: &ResourceType, key: &Key) -> Result<Value, ApiError> {
    let paths = paths_of(rt)?;
    let object = store.read().get(&rt.storage, key).cloned();
    let object = object.ok_or_else(|| ApiError::not_found(rt, &key.1))?;
    Ok(scale_of(paths, &present(rt, &object)))
}

/// `PUT .../<name>/scale`: sets the object's replicas to the Scale's `spec.replicas`, refusing
/// a Scale whose resourceVersion is not the object's.
pub(crate) fn update(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    scale: Value,
    opts: &mut WriteOptions,
) -> Result<Value, ApiError> {
    let paths = paths_of(rt)?;
    let name = meta_str(&scale, "name").unwrap_or_default();
    if name != key.1 {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.1
        )));
    }
    let replicas = scale.pointer("/spec/replicas");
    let replicas = match replicas {
        None | Some(Value::Null) => 0,
        Some(value) => match value
            .as_i64()
            .filter(|n| *n >= 0 && *n <= i64::from(i32::MAX))
        {
            Some(replicas) => replicas,
            None => {
                return Err(ApiError::invalid_kind(
                    "autoscaling",
                    "Scale",
                    &key.1,
                    vec![Cause {
                        field: "spec.replicas".to_string(),
                        reason: "FieldValueInvalid",
                        message: format!(
                            "Invalid value: {value}: must be greater than or equal to 0"
                        ),
                    }],
                ));
            }
        },
    };
    let pinned = meta_str(&scale, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(str::to_string);
    for _ in 0..MAX_RETRIES {
        let current = store.read().get(&rt.storage, key).cloned();
        let current = current.ok_or_else(|| ApiError::not_found(rt, &key.1))?;
        let current_rv = meta_str(&current, "resourceVersion").map(str::to_string);
        if pinned.is_some() && pinned != current_rv {
            return Err(ApiError::conflict(rt, &key.1));
        }
        let mut object = present(rt, &current);
        set_pointer(&mut object, &paths.spec_replicas, json!(replicas));
        match ops::replace(store, rt, key, object, None, opts) {
            Ok(stored) => return Ok(scale_of(paths, &present(rt, &stored))),
            // Another writer came between the read and the write: read again, unless the
            // client asked for this very version.
            Err(error) if error.code == 409 && pinned.is_none() => continue,
            Err(error) => return Err(error),
        }
    }
    Err(ApiError::conflict(rt, &key.1))
}

/// `PATCH .../<name>/scale`: the patch applies to the current Scale, which is then written as
/// by [`update`]. A Scale has no lists, so a strategic merge patch is a merge patch, and an
/// apply patch sets the fields it names.
pub(crate) fn patch(
    store: &Store,
    rt: &ResourceType,
    key: &Key,
    patch_type: PatchType,
    body: &[u8],
    opts: &mut WriteOptions,
) -> Result<Value, ApiError> {
    let patch = ops::parse_patch_body(body, matches!(patch_type, PatchType::Apply { .. }))?;
    let mut scale = get(store, rt, key)?;
    match patch_type {
        PatchType::Json => {
            ext::json_patch(&mut scale, &patch).map_err(|f| ApiError::from_patch(rt, &key.1, f))?
        }
        _ if !patch.is_object() => {
            return Err(ApiError::bad_request("the patch must be a JSON object"));
        }
        _ => ext::merge_patch(&mut scale, &patch),
    }
    update(store, rt, key, scale, opts)
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_pointer(object: &mut Value, pointer: &str, value: Value) {
    let mut target = object;
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !target.is_object() {
            *target = json!({});
        }
        target = target
            .as_object_mut()
            .map(|map| map.entry(part).or_insert(Value::Null))
            .expect("an object");
    }
    *target = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_read_as_labels_selector_strings() {
        let selector = json!({
            "matchLabels": {"tier": "db", "app": "pg"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        });
        assert_eq!(
            selector_string(Some(&selector)),
            "app=pg,!canary,tier=db,zone in (a,b)"
        );
        assert_eq!(selector_string(Some(&json!({"app": "web"}))), "app=web");
        assert_eq!(selector_string(None), "");
    }

    #[test]
    fn crd_paths_become_pointers() {
        let version = json!({"subresources": {"scale": {
            "specReplicasPath": ".spec.instances",
            "statusReplicasPath": ".status.readyInstances",
            "labelSelectorPath": ".status.selector",
        }}});
        let paths = ScalePaths::from_crd_version(&version).expect("declared");
        assert_eq!(paths.spec_replicas, "/spec/instances");
        assert_eq!(paths.status_replicas, "/status/readyInstances");
        assert_eq!(paths.label_selector.as_deref(), Some("/status/selector"));
    }
}
