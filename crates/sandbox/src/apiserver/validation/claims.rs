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

/// The top-level spec fields that differ, one `field: old -> new` a line. kube-apiserver
/// appends a diff of its internal Go structs here; the first line of the message is its text,
/// this summary stands in for the diff.
fn changed_fields(old: &Value, new: &Value) -> String {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut fields: Vec<&String> = old.keys().chain(new.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| old.get(*field) != new.get(*field))
        .map(|field| {
            let show = |value: Option<&Value>| value.map_or("null".to_string(), Value::to_string);
            format!(
                "{field}: {} -> {}",
                show(old.get(field)),
                show(new.get(field))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
