//! kube-apiserver's validation of a PersistentVolumeClaim's spec: access modes required and
//! known, a storage request required and positive, and a spec that does not change after
//! creation except for a bound claim's storage request (which may grow, not shrink below what
//! the volume has), its `volumeAttributesClassName`, and a `volumeName` set once.

use serde_json::{Value, json};

use super::{
    Cause, array, forbidden, invalid, not_supported, one_of, quantity, quantity_text, required,
    required_because,
};

/// Access modes, sorted as kube-apiserver lists them.
const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// The storage request's field as kube-apiserver names it (a key of `resources`).
const STORAGE_FIELD: &str = "spec.resources[storage]";

/// Validates a claim's spec.
pub(super) fn claim_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let modes = array(spec, "accessModes");
    if modes.is_empty() {
        causes.push(required_because(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for mode in modes {
        if !mode.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)) {
            causes.push(not_supported("spec.accessModes", mode, ACCESS_MODES));
        }
    }
    let once_pod = modes.iter().any(|m| m == "ReadWriteOncePod");
    let others = modes
        .iter()
        .any(|m| m != "ReadWriteOncePod" && m.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)));
    if once_pod && others {
        causes.push(forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    match spec
        .pointer("/resources/requests/storage")
        .filter(|s| !s.is_null())
    {
        None => causes.push(required(STORAGE_FIELD)),
        Some(storage) => {
            if quantity(storage).is_some_and(|amount| amount <= 0.0) {
                causes.push(invalid(
                    STORAGE_FIELD,
                    &json!(quantity_text(storage)),
                    "must be greater than zero",
                ));
            }
        }
    }
    one_of(spec, "volumeMode", "spec", &["Block", "Filesystem"], causes);
}

/// `ValidatePersistentVolumeClaimUpdate`: what may change in a claim's spec.
pub(super) fn claim_update(spec: &Value, old_spec: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    let storage = |spec: &Value| spec.pointer("/resources/requests/storage").cloned();
    let mut comparable = spec.clone();
    let mut old_comparable = old_spec.clone();
    for claim in [&mut comparable, &mut old_comparable] {
        if let Some(fields) = claim.as_object_mut() {
            fields.remove("volumeAttributesClassName");
        }
    }
    if old_spec
        .get("volumeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        // A claim is bound to its volume once.
        set_or_remove(&mut old_comparable, "volumeName", spec.get("volumeName"));
    }
    if bound
        && comparable
            .pointer("/resources/requests")
            .is_some_and(Value::is_object)
    {
        match storage(old_spec) {
            Some(old_storage) => comparable["resources"]["requests"]["storage"] = old_storage,
            None => {
                if let Some(requests) = comparable
                    .pointer_mut("/resources/requests")
                    .and_then(Value::as_object_mut)
                {
                    requests.remove("storage");
                }
            }
        }
    }
    if comparable != old_comparable {
        causes.push(forbidden(
            "spec",
            &format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n{}",
                changed_fields(&old_comparable, &comparable)
            ),
        ));
    }
    let (Some(new_size), Some(old_size)) = (
        storage(spec).as_ref().and_then(quantity),
        storage(old_spec).as_ref().and_then(quantity),
    ) else {
        return;
    };
    // With RecoverVolumeExpansionFailure (on by default since 1.32), a request may shrink back
    // towards a failed expansion, but never to the volume's capacity or below.
    let capacity = old
        .pointer("/status/capacity/storage")
        .and_then(quantity)
        .unwrap_or(0.0);
    if new_size < old_size && new_size <= capacity {
        causes.push(forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<&Value>) {
    match (object.as_object_mut(), value) {
        (Some(fields), Some(value)) => {
            fields.insert(field.into(), value.clone());
        }
        (Some(fields), None) => {
            fields.remove(field);
        }
        _ => {}
    }
}

/// The fields of kube-apiserver's internal `core.PersistentVolumeClaimSpec`, in its order,
/// with the name each has in JSON.
const CLAIM_SPEC_FIELDS: [(&str, &str); 9] = [
    ("AccessModes", "accessModes"),
    ("Selector", "selector"),
    ("Resources", "resources"),
    ("VolumeName", "volumeName"),
    ("StorageClassName", "storageClassName"),
    ("VolumeMode", "volumeMode"),
    ("DataSource", "dataSource"),
    ("DataSourceRef", "dataSourceRef"),
    ("VolumeAttributesClassName", "volumeAttributesClassName"),
];

/// The difference between two claim specs in the shape of the `cmp.Diff` kube-apiserver
/// appends to its message: the struct, runs of unchanged fields elided, each changed field
/// as a `-` line and a `+` line with its Go name. The values are written as Go writes strings,
/// string pointers and access modes; other values (selectors, resources) are written as JSON
/// where Go prints its structs. cmp.Diff itself varies the space after `-`/`+` from run to run
/// (to keep callers from parsing it), so only the shape can match.
fn changed_fields(old: &Value, new: &Value) -> String {
    let mut lines = vec!["  core.PersistentVolumeClaimSpec{".to_string()];
    let mut identical = 0;
    for (go_name, json_name) in CLAIM_SPEC_FIELDS {
        let (before, after) = (old.get(json_name), new.get(json_name));
        if before == after {
            identical += 1;
            continue;
        }
        if identical > 0 {
            lines.push(elided(identical));
            identical = 0;
        }
        lines.push(format!("- \t{go_name}: {},", go_value(json_name, before)));
        lines.push(format!("+ \t{go_name}: {},", go_value(json_name, after)));
    }
    if identical > 0 {
        lines.push(elided(identical));
    }
    lines.push("  }".to_string());
    lines.join("\n")
}

fn elided(count: usize) -> String {
    let noun = if count == 1 { "field" } else { "fields" };
    format!("  \t... // {count} identical {noun}")
}

/// A claim spec field's value as Go's `%v`-like diff prints it.
fn go_value(json_name: &str, value: Option<&Value>) -> String {
    let pointer = matches!(
        json_name,
        "storageClassName" | "volumeMode" | "volumeAttributesClassName"
    );
    match (json_name, value) {
        ("volumeName", None) => "\"\"".to_string(),
        ("accessModes", Some(Value::Array(modes))) => format!(
            "[]core.PersistentVolumeAccessMode{{{}}}",
            modes
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (_, None | Some(Value::Null)) => "nil".to_string(),
        (_, Some(text @ Value::String(_))) if pointer => format!("&{text}"),
        (_, Some(other)) => other.to_string(),
    }
}
