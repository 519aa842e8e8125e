//! Strategic merge patch, for the built-in kinds only (custom resources get 415 as from
//! kube-apiserver, and kubectl then falls back to a JSON merge patch).
//!
//! Supported: lists merged by key (`containers`, `env`, `ports`, `volumes`...), primitive lists
//! merged as sets (`finalizers`), `$patch: replace|delete|merge`, `$retainKeys`,
//! `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>`.

use serde_json::{Map, Value};

use super::{ListSemantics, PatchError, list_semantics};

/// The API groups whose kinds the sandbox serves as built-ins.
const BUILTIN_API_VERSIONS: [&str; 9] = [
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "rbac.authorization.k8s.io/v1",
    "coordination.k8s.io/v1",
    "events.k8s.io/v1",
    "discovery.k8s.io/v1",
    "apiextensions.k8s.io/v1",
];

const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to an object of a built-in kind.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), PatchError> {
    if !BUILTIN_API_VERSIONS.contains(&api_version) {
        return Err(PatchError::UnsupportedMediaType);
    }
    let Value::Object(patch_map) = patch else {
        return Err(PatchError::Malformed(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}"
                .into(),
        ));
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut path = Vec::new();
    let mut merged = target.clone();
    if let Value::Object(target_map) = &mut merged {
        match merge_map(target_map, patch_map, kind, &mut path)? {
            MapOutcome::Keep => {}
            MapOutcome::Delete => *target_map = Map::new(),
        }
    }
    *target = merged;
    Ok(())
}

enum MapOutcome {
    Keep,
    Delete,
}

/// A copy of a patch value without its directives, for values that land where there is
/// nothing to merge with.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map<'p>(
    target: &mut Map<String, Value>,
    patch: &'p Map<String, Value>,
    kind: &str,
    path: &mut Vec<&'p str>,
) -> Result<MapOutcome, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            if let Value::Object(replacement) = strip_directives(&Value::Object(patch.clone())) {
                *target = replacement;
            }
            return Ok(MapOutcome::Keep);
        }
        Some("delete") => return Ok(MapOutcome::Delete),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "Unknown patch type: {other}. Allowed values are: replace, merge, delete"
            )));
        }
    }

    let mut element_orders = Vec::new();
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            element_orders.push((field, value));
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            if let (Some(Value::Array(items)), Value::Array(doomed)) =
                (target.get_mut(field), value)
            {
                items.retain(|item| !doomed.contains(item));
            }
            continue;
        }
        path.push(key.as_str());
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(patch_child) => match target.get_mut(key) {
                Some(Value::Object(target_child)) => {
                    if let MapOutcome::Delete = merge_map(target_child, patch_child, kind, path)? {
                        target.remove(key);
                    }
                }
                _ => {
                    if patch_child.get("$patch").and_then(Value::as_str) == Some("delete") {
                        target.remove(key);
                    } else {
                        target.insert(key.clone(), strip_directives(value));
                    }
                }
            },
            Value::Array(patch_items) => {
                let semantics = list_semantics(kind, path);
                let merged = match target.get_mut(key) {
                    Some(Value::Array(target_items)) => {
                        merge_list(target_items, patch_items, &semantics, kind, path)?;
                        None
                    }
                    _ => {
                        let mut fresh = Vec::new();
                        merge_list(&mut fresh, patch_items, &semantics, kind, path)?;
                        Some(fresh)
                    }
                };
                if let Some(fresh) = merged {
                    target.insert(key.clone(), Value::Array(fresh));
                }
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }

    for (field, order) in element_orders {
        if let (Some(Value::Array(items)), Value::Array(order)) = (target.get_mut(field), order) {
            path.push(field);
            let semantics = list_semantics(kind, path);
            path.pop();
            reorder(items, order, &semantics);
        }
    }

    if let Some(Value::Array(retained)) = patch.get("$retainKeys") {
        let retained: Vec<&str> = retained.iter().filter_map(Value::as_str).collect();
        target.retain(|key, _| retained.contains(&key.as_str()));
    }
    Ok(MapOutcome::Keep)
}

fn key_matches(item: &Value, other: &Value, keys: &[&str]) -> bool {
    keys.iter().all(|k| item.get(*k) == other.get(*k))
        && keys.iter().any(|k| item.get(*k).is_some())
}

fn merge_list<'p>(
    target: &mut Vec<Value>,
    patch: &'p [Value],
    semantics: &ListSemantics,
    kind: &str,
    path: &mut Vec<&'p str>,
) -> Result<(), PatchError> {
    let replace_whole = patch
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    match semantics {
        _ if replace_whole => {
            *target = patch
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip_directives)
                .collect();
        }
        ListSemantics::Atomic => {
            *target = patch.iter().map(strip_directives).collect();
        }
        ListSemantics::Set => {
            for item in patch {
                if !target.contains(item) {
                    target.push(item.clone());
                }
            }
        }
        ListSemantics::Map(keys) => {
            for item in patch {
                let Value::Object(item_map) = item else {
                    return Err(PatchError::Invalid(format!(
                        "cannot merge a non-object element into a list merged by {}",
                        keys.join(",")
                    )));
                };
                if !keys.iter().any(|k| item_map.contains_key(*k)) {
                    return Err(PatchError::Invalid(format!(
                        "map: {} does not contain declared merge key: {}",
                        Value::Object(item_map.clone()),
                        keys.join(",")
                    )));
                }
                let position = target.iter().position(|t| key_matches(t, item, keys));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(_), true) => target.retain(|t| !key_matches(t, item, keys)),
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Value::Object(existing) = &mut target[i] {
                            merge_map(existing, item_map, kind, path)?;
                        }
                    }
                    (None, false) => target.push(strip_directives(item)),
                }
            }
        }
    }
    Ok(())
}

/// Orders a merged list as `$setElementOrder` says; elements it does not name keep their
/// relative order after the named ones.
fn reorder(items: &mut Vec<Value>, order: &[Value], semantics: &ListSemantics) {
    let matches = |item: &Value, wanted: &Value| match semantics {
        ListSemantics::Map(keys) => key_matches(item, wanted, keys),
        _ => item == wanted,
    };
    let mut remaining = std::mem::take(items);
    for wanted in order {
        if let Some(i) = remaining.iter().position(|item| matches(item, wanted)) {
            items.push(remaining.remove(i));
        }
    }
    items.append(&mut remaining);
}
