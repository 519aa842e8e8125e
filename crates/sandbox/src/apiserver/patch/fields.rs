//! Field ownership as server-side apply records it in `metadata.managedFields` (FieldsV1).
//!
//! A path is a list of elements: `f:<field>`, `k:<key object as JSON>` for items of a list
//! merged by key, `v:<value as JSON>` for members of a set.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{ListSemantics, list_semantics};

/// A path to one owned field.
pub(super) type FieldPath = Vec<String>;

/// The fields that are never owned: identity and server-maintained metadata.
fn is_unowned(path: &[&str]) -> bool {
    matches!(path, ["apiVersion"] | ["kind"])
        || matches!(
            path,
            [
                "metadata",
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "managedFields"
                    | "selfLink"
            ]
        )
}

/// The key element of a list item: the key fields in name order, as compact JSON.
fn key_element(item: &Value, keys: &[&str]) -> String {
    let mut key = Map::new();
    let mut sorted: Vec<&&str> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        if let Some(v) = item.get(*k) {
            key.insert((*k).to_string(), v.clone());
        }
    }
    format!("k:{}", Value::Object(key))
}

/// Every owned path of an object, with the value found there. List items merged by key are
/// members too (their value is None: only their presence is owned).
pub(super) fn members(obj: &Value, kind: &str) -> BTreeMap<FieldPath, Option<Value>> {
    let mut out = BTreeMap::new();
    let mut names = Vec::new();
    let mut path = Vec::new();
    collect(obj, kind, &mut names, &mut path, &mut out);
    out
}

fn collect<'a>(
    value: &'a Value,
    kind: &str,
    names: &mut Vec<&'a str>,
    path: &mut FieldPath,
    out: &mut BTreeMap<FieldPath, Option<Value>>,
) {
    let Value::Object(map) = value else {
        return;
    };
    for (key, child) in map {
        names.push(key);
        if is_unowned(names) {
            names.pop();
            continue;
        }
        path.push(format!("f:{key}"));
        match child {
            Value::Object(inner) if !inner.is_empty() => collect(child, kind, names, path, out),
            Value::Array(items) => match list_semantics(kind, names) {
                ListSemantics::Map(keys) if items.iter().all(Value::is_object) => {
                    for item in items {
                        path.push(key_element(item, &keys));
                        out.insert(path.clone(), None);
                        collect(item, kind, names, path, out);
                        path.pop();
                    }
                }
                ListSemantics::Set => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        out.insert(path.clone(), Some(item.clone()));
                        path.pop();
                    }
                }
                _ => {
                    out.insert(path.clone(), Some(child.clone()));
                }
            },
            _ => {
                out.insert(path.clone(), Some(child.clone()));
            }
        }
        path.pop();
        names.pop();
    }
}

/// A set of paths as the FieldsV1 JSON tree: `{"f:spec": {"f:replicas": {}}}`.
pub(super) fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for (i, element) in path.iter().enumerate() {
            let child = node
                .entry(element.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(child_map) = child else {
                break;
            };
            // A path that is owned and also has owned children carries a "." member.
            let is_last = i + 1 == path.len();
            if is_last && !child_map.is_empty() {
                child_map.insert(".".into(), Value::Object(Map::new()));
            }
            node = child_map;
        }
    }
    // Parents that became members before their children were added need the marker too.
    fn mark(map: &mut Map<String, Value>, prefix: &mut FieldPath, paths: &BTreeSet<FieldPath>) {
        for (key, child) in map.iter_mut() {
            if key == "." {
                continue;
            }
            prefix.push(key.clone());
            if let Value::Object(child_map) = child {
                let has_children = child_map.keys().any(|k| k != ".");
                if has_children && paths.contains(prefix) {
                    child_map.insert(".".into(), Value::Object(Map::new()));
                }
                mark(child_map, prefix, paths);
            }
            prefix.pop();
        }
    }
    mark(&mut root, &mut Vec::new(), paths);
    Value::Object(root)
}

/// The paths a FieldsV1 tree holds.
pub(super) fn from_fields_v1(tree: &Value) -> BTreeSet<FieldPath> {
    fn walk(node: &Map<String, Value>, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        for (key, child) in node {
            if key == "." {
                out.insert(prefix.clone());
                continue;
            }
            prefix.push(key.clone());
            match child.as_object() {
                Some(grandchildren) if !grandchildren.is_empty() => {
                    walk(grandchildren, prefix, out)
                }
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    if let Some(map) = tree.as_object() {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="app"].image`.
pub(super) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else {
            out.push_str(&format!("[{element}]"));
        }
    }
    out
}

/// Removes the field at `path` from an object, if it is there.
pub(super) fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = obj;
    for element in parents {
        let next = match step_mut(current, element) {
            Some(next) => next,
            None => return,
        };
        current = next;
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Value::Object(map) = current {
            map.remove(field);
        }
    } else if let Some(key) = last.strip_prefix("k:") {
        if let (Value::Array(items), Ok(Value::Object(key))) =
            (current, serde_json::from_str::<Value>(key))
        {
            items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
        }
    } else if let Some(value) = last.strip_prefix("v:")
        && let (Value::Array(items), Ok(value)) = (current, serde_json::from_str::<Value>(value))
    {
        items.retain(|item| *item != value);
    }
}

fn step_mut<'a>(current: &'a mut Value, element: &str) -> Option<&'a mut Value> {
    if let Some(field) = element.strip_prefix("f:") {
        return current.get_mut(field);
    }
    let key = element.strip_prefix("k:")?;
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
        return None;
    };
    current
        .as_array_mut()?
        .iter_mut()
        .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}
