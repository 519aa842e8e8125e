//! Server-side apply and the managedFields bookkeeping of ordinary writes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::fields::{FieldPath, display_path, from_fields_v1, members, remove_path, to_fields_v1};
use super::{ApplyConflict, ListSemantics, PatchError, list_semantics};

/// The result of a server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplyOutcome {
    /// The object to store: the merge of the live object and the applied configuration, with
    /// `metadata.managedFields` updated.
    pub object: Value,
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

impl ManagedEntry {
    fn parse(entry: &Value) -> Option<ManagedEntry> {
        Some(ManagedEntry {
            manager: entry.get("manager")?.as_str()?.to_string(),
            operation: entry.get("operation")?.as_str()?.to_string(),
            api_version: entry
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            time: entry
                .get("time")
                .and_then(Value::as_str)
                .map(str::to_string),
            subresource: entry
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fields: entry
                .get("fieldsV1")
                .map(from_fields_v1)
                .unwrap_or_default(),
        })
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.fields),
        });
        if let Some(time) = &self.time {
            entry["time"] = json!(time);
        }
        if let Some(subresource) = &self.subresource {
            entry["subresource"] = json!(subresource);
        }
        entry
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// How kube-apiserver names this manager in a conflict message.
    fn describe(&self) -> String {
        let mut name = format!("{:?}", self.manager);
        if let Some(subresource) = &self.subresource {
            name = format!("{name} with subresource {subresource:?}");
        }
        if self.operation == "Update" {
            match &self.time {
                Some(time) => format!("{name} using {} at {time}", self.api_version),
                None => format!("{name} using {}", self.api_version),
            }
        } else {
            name
        }
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn managed_entries(obj: Option<&Value>) -> Vec<ManagedEntry> {
    obj.and_then(|o| o.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
        .map(|entries| entries.iter().filter_map(ManagedEntry::parse).collect())
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, entries: Vec<ManagedEntry>) {
    let entries: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(ManagedEntry::to_json)
        .collect();
    if !obj.is_object() {
        return;
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if let Some(metadata) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

fn kind_of(obj: &Value) -> String {
    obj.get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn api_version_of(obj: &Value) -> String {
    obj.get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The part of an object a write through `subresource` may touch: only `status` through the
/// status subresource, everything but `status` through the main resource.
fn scoped(obj: &Value, subresource: Option<&str>) -> Value {
    let Value::Object(map) = obj else {
        return obj.clone();
    };
    let keep = |key: &str| match subresource {
        Some("status") => key == "status",
        _ => key != "status",
    };
    Value::Object(
        map.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn path_is_under(path: &[String], prefix: &[String]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

/// Applies a configuration as `manager` (server-side apply). Creates the object when `live` is
/// None. Fields this manager applied before and no longer applies are removed unless another
/// manager owns them; fields another manager owns with a different value conflict (409) unless
/// `force`, which moves their ownership to this manager.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<ApplyOutcome, PatchError> {
    if !applied.is_object() {
        return Err(PatchError::Malformed(
            "error decoding YAML: the applied configuration must be an object".into(),
        ));
    }
    let mut applied = applied.clone();
    if let Some(metadata) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    let kind = kind_of(&applied);
    let api_version = api_version_of(&applied);
    let scoped_applied = scoped(&applied, subresource);
    let applied_members = members(&scoped_applied, &kind);
    let applied_paths: BTreeSet<FieldPath> = applied_members.keys().cloned().collect();

    let Some(live) = live else {
        let mut object = applied.clone();
        if subresource == Some("status") {
            return Err(PatchError::Invalid(
                "the status subresource cannot create an object".into(),
            ));
        }
        if let Value::Object(map) = &mut object {
            map.remove("status");
        }
        let entry = ManagedEntry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            time: Some(now()),
            subresource: subresource.map(str::to_string),
            fields: applied_paths,
        };
        store_entries(&mut object, vec![entry]);
        return Ok(ApplyOutcome { object });
    };

    let live_members = members(live, &kind_of(live));
    let mut entries = managed_entries(Some(live));
    let is_self = |e: &ManagedEntry| e.is(manager, "Apply", subresource);

    // Conflicts: another manager owns a field this apply sets to a different value.
    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if is_self(entry) {
            continue;
        }
        for (path, value) in &applied_members {
            let Some(value) = value else { continue };
            if entry.fields.contains(path) && live_members.get(path) != Some(&Some(value.clone())) {
                conflicts.push((index, path.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        let migrating = !force && manager == KUBECTL_MANAGER && {
            // kubectl's move from client-side to server-side apply: fields whose live value
            // is still the one its last client-side apply recorded are taken over without
            // conflict.
            let allowed = last_applied_fields(live);
            conflicts.retain(|(_, path)| !allowed.contains(path));
            conflicts.is_empty()
        };
        if !force && !migrating {
            return Err(conflict_error(&entries, &conflicts));
        }
        for (index, path) in &conflicts {
            entries[*index].fields.remove(path);
        }
    }

    // Fields this manager stops applying go, unless someone else still owns them.
    let previously_applied = entries
        .iter()
        .find(|e| is_self(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut object = live.clone();
    let mut dropped: Vec<&FieldPath> = previously_applied.difference(&applied_paths).collect();
    // Shallowest first: a list item is found by its key fields, so it must go before them.
    dropped.sort_by_key(|p| p.len());
    for path in dropped {
        let owned_elsewhere = entries
            .iter()
            .any(|e| !is_self(e) && e.fields.iter().any(|owned| path_is_under(owned, path)));
        let still_applied = applied_paths.iter().any(|p| path_is_under(p, path));
        if !owned_elsewhere && !still_applied {
            remove_path(&mut object, path);
        }
    }

    let mut names = Vec::new();
    merge_applied(&mut object, &scoped_applied, &kind, &mut names);

    match entries.iter_mut().find(|e| is_self(e)) {
        Some(entry) => {
            entry.fields = applied_paths;
            entry.time = Some(now());
            entry.api_version = api_version;
        }
        None => entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            time: Some(now()),
            subresource: subresource.map(str::to_string),
            fields: applied_paths,
        }),
    }
    store_entries(&mut object, entries);
    if manager == KUBECTL_MANAGER {
        keep_last_applied_current(&mut object, &applied);
    }
    Ok(ApplyOutcome { object })
}

/// The field manager of `kubectl apply --server-side`, for which kube-apiserver eases the move
/// from client-side apply.
const KUBECTL_MANAGER: &str = "kubectl";
/// Where client-side apply keeps the configuration it last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn last_applied(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()
        .filter(|text| !text.is_empty())
}

/// The fields of the last client-side applied configuration whose live value is still the
/// applied one (kube-apiserver's `lastAppliedManager`): none without the annotation.
fn last_applied_fields(live: &Value) -> BTreeSet<FieldPath> {
    let Some(configuration) =
        last_applied(live).and_then(|text| serde_json::from_str::<Value>(text).ok())
    else {
        return BTreeSet::new();
    };
    let live_members = members(live, &kind_of(live));
    members(&configuration, &kind_of(live))
        .into_iter()
        .filter(|(path, value)| live_members.get(path) == Some(value))
        .map(|(path, _)| path)
        .collect()
}

/// After a server-side apply by kubectl, an object that carries a client-side apply
/// annotation gets the configuration just applied there, so that a later client-side apply
/// computes its changes from it (kube-apiserver's `lastAppliedUpdater`).
fn keep_last_applied_current(object: &mut Value, applied: &Value) {
    if last_applied(object).is_none() {
        return;
    }
    let mut configuration = applied.clone();
    if let Some(metadata) = configuration
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        let now_empty = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
            .is_some_and(|annotations| {
                annotations.remove(LAST_APPLIED_ANNOTATION);
                annotations.is_empty()
            });
        if now_empty {
            metadata.remove("annotations");
        }
    }
    let text = serde_json::to_string(&configuration).unwrap_or_default();
    if let Some(annotations) = object
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED_ANNOTATION.into(), Value::String(text));
    }
}

fn conflict_error(entries: &[ManagedEntry], conflicts: &[(usize, FieldPath)]) -> PatchError {
    let listed: Vec<ApplyConflict> = conflicts
        .iter()
        .map(|(index, path)| ApplyConflict {
            manager: entries[*index].describe(),
            field: display_path(path),
        })
        .collect();
    let message = if let [only] = listed.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.field
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for conflict in &listed {
            by_manager
                .entry(conflict.manager.as_str())
                .or_default()
                .push(conflict.field.as_str());
        }
        let mut lines = Vec::new();
        for (manager, fields) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(fields.iter().map(|f| format!("- {f}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            listed.len(),
            lines.join("\n")
        )
    };
    PatchError::Conflict {
        message,
        conflicts: listed,
    }
}

/// Merges an applied configuration into an object: maps recursively, lists merged by key
/// item by item, sets as unions, everything else replaced.
fn merge_applied<'a>(target: &mut Value, applied: &'a Value, kind: &str, names: &mut Vec<&'a str>) {
    let Value::Object(applied_map) = applied else {
        *target = applied.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in applied_map {
        names.push(key);
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                merge_applied(slot, value, kind, names);
            }
            Value::Array(items) => {
                let semantics = list_semantics(kind, names);
                let slot = target_map
                    .entry(key.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match (semantics, slot) {
                    (ListSemantics::Map(keys), Value::Array(existing))
                        if items.iter().all(Value::is_object) =>
                    {
                        for item in items {
                            let matching = existing
                                .iter_mut()
                                .find(|e| keys.iter().all(|k| e.get(*k) == item.get(*k)));
                            match matching {
                                Some(existing_item) => {
                                    merge_applied(existing_item, item, kind, names)
                                }
                                None => existing.push(item.clone()),
                            }
                        }
                    }
                    (ListSemantics::Set, Value::Array(existing)) => {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                    }
                    (_, slot) => *slot = value.clone(),
                }
            }
            scalar => {
                target_map.insert(key.clone(), scalar.clone());
            }
        }
        names.pop();
    }
}

/// Whether `new` carries (non-empty) managedFields other than `old`'s.
fn resets_managed_fields(old: &Value, new: &Value) -> bool {
    let given = new.pointer("/metadata/managedFields");
    given
        .and_then(Value::as_array)
        .is_some_and(|entries| !entries.is_empty())
        && given != old.pointer("/metadata/managedFields")
}

/// Records a create, update or patch (`operation` "Update") by `manager` in
/// `new.metadata.managedFields`, as kube-apiserver does, so that later applies see who owns
/// what: the manager takes the fields it changed, away from any other manager, and fields that
/// disappeared are owned by nobody.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
) {
    let kind = kind_of(new);
    let api_version = api_version_of(new);
    let in_scope = |path: &FieldPath| match subresource {
        Some("status") => path.first().is_some_and(|p| p == "f:status"),
        _ => true,
    };
    let new_members = members(new, &kind);
    let old_members = old.map(|o| members(o, &kind)).unwrap_or_default();
    let changed: BTreeSet<FieldPath> = new_members
        .iter()
        .filter(|(path, value)| in_scope(path) && old_members.get(*path) != Some(*value))
        .map(|(path, _)| path.clone())
        .collect();
    let removed: BTreeSet<FieldPath> = old_members
        .keys()
        .filter(|path| in_scope(path) && !new_members.contains_key(*path))
        .cloned()
        .collect();

    let mut entries = match old {
        None => Vec::new(),
        // A write of the main resource that brings managedFields of its own, other than the
        // stored ones, sets them, as kube-apiserver lets it (kubectl's migration from
        // client-side apply rewrites them so).
        Some(old) if subresource.is_none() && resets_managed_fields(old, new) => {
            managed_entries(Some(new))
        }
        Some(old) => managed_entries(Some(old)),
    };
    for entry in &mut entries {
        entry.fields.retain(|path| {
            !changed.contains(path) && !removed.iter().any(|r| path_is_under(path, r))
        });
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.is(manager, operation, subresource))
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = Some(now());
                entry.api_version = api_version;
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version,
                time: Some(now()),
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    store_entries(new, entries);
}
