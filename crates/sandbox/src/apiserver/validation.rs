//! kube-apiserver's validation of the built-in kinds' fields that tusk's objects (and its users')
//! set, with its 422 messages and field paths: pod specs (container and volume names, volume
//! mounts, requests within limits) wherever they appear, workload selectors matching their
//! template's labels, and the fields an update may not change.
//!
//! Persistent volume claims, Services, and the finer parts of a pod spec (ports, probes, enums)
//! have modules of their own.
//!
//! Only what changed is judged on an update: an object whose spec a write leaves alone (a status
//! update, a label change) is not newly refused, as the sandbox may hold objects stored before a
//! rule existed.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as TypedSelector;
use serde_json::{Value, json};

use super::ext::Cause;
use super::resources::ResourceType;
use super::selector::LabelSelector;

mod claims;
mod containers;
pub(crate) mod quantities;
mod service_spec;

/// A 422 cause.
fn cause(field: &str, reason: &'static str, message: String) -> Cause {
    Cause {
        field: field.to_string(),
        reason,
        message,
    }
}

/// A value as kube-apiserver prints it after `Invalid value:` (strings quoted, numbers and
/// booleans bare; structured values as JSON).
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// `Invalid value: <value>: <why>`.
fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    cause(
        field,
        "FieldValueInvalid",
        format!("Invalid value: {}: {why}", shown(value)),
    )
}

fn required(field: &str) -> Cause {
    cause(field, "FieldValueRequired", "Required value".into())
}

/// `Required value: <why>`.
fn required_because(field: &str, why: &str) -> Cause {
    cause(
        field,
        "FieldValueRequired",
        format!("Required value: {why}"),
    )
}

/// `Forbidden: <why>`.
fn forbidden(field: &str, why: &str) -> Cause {
    cause(field, "FieldValueForbidden", format!("Forbidden: {why}"))
}

/// `Unsupported value: <value>: supported values: "a", "b"`, the values listed in the order
/// kube-apiserver lists them (sorted where it sorts a set, as declared where it lists a slice).
fn not_supported(field: &str, value: &Value, supported: &[&str]) -> Cause {
    let listed: Vec<String> = supported.iter().map(|v| shown(&json!(v))).collect();
    cause(
        field,
        "FieldValueNotSupported",
        format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            listed.join(", ")
        ),
    )
}

/// An enum field that, when set, must hold one of `supported`.
fn one_of(object: &Value, name: &str, path: &str, supported: &[&str], causes: &mut Vec<Cause>) {
    if let Some(value) = object.get(name).filter(|v| !v.is_null())
        && !value.as_str().is_some_and(|v| supported.contains(&v))
    {
        causes.push(not_supported(&format!("{path}.{name}"), value, supported));
    }
}

fn immutable(field: &str, value: &Value) -> Cause {
    invalid(field, value, "field is immutable")
}

/// The message of apimachinery's `IsDNS1123Label` for an invalid value, or None when valid.
pub(crate) fn dns1123_label_error(value: &str) -> Option<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_string());
    }
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let alphanumeric_ends = value
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid_chars || !alphanumeric_ends {
        problems.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

/// Validates a built-in object (defaulted, in its storage form) on create (`old` None) or
/// update, returning kube-apiserver's causes.
pub(crate) fn validate(rt: &ResourceType, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let old_spec = old.map(|old| old.get("spec").unwrap_or(&Value::Null));
    if old_spec == Some(spec) {
        return causes;
    }
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "pods") => {
            pod_spec(spec, "spec", &mut causes);
            if let Some(old_spec) = old_spec {
                pod_update(spec, old_spec, &mut causes);
            }
        }
        ("apps", "deployments" | "replicasets") => {
            non_negative_replicas(spec, &mut causes);
            selector_and_template(spec, &mut causes);
            template_pod_spec(spec, &mut causes);
            template_restart_policy(spec, &["Always"], &mut causes);
            if let Some(old_spec) = old_spec
                && spec.get("selector") != old_spec.get("selector")
            {
                causes.push(immutable("spec.selector", &spec["selector"]));
            }
        }
        ("apps", "statefulsets") => {
            // kube-apiserver leaves a StatefulSet's pod spec to its pods: its volume mounts
            // may name the claim templates' volumes, which only the pods have.
            non_negative_replicas(spec, &mut causes);
            selector_and_template(spec, &mut causes);
            template_restart_policy(spec, &["Always"], &mut causes);
            if let Some(old_spec) = old_spec {
                stateful_set_update(spec, old_spec, &mut causes);
            }
        }
        ("batch", "jobs") => {
            let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
            if manual {
                selector_and_template(spec, &mut causes);
            }
            template_pod_spec(spec, &mut causes);
            template_restart_policy(spec, &["OnFailure", "Never"], &mut causes);
            if let Some(old_spec) = old_spec {
                for field in ["selector", "template"] {
                    if spec.get(field) != old_spec.get(field) {
                        causes.push(immutable(
                            &format!("spec.{field}"),
                            spec.get(field).unwrap_or(&Value::Null),
                        ));
                    }
                }
            }
        }
        ("", "persistentvolumeclaims") => {
            claims::claim_spec(spec, &mut causes);
            if let (Some(old), Some(old_spec)) = (old, old_spec) {
                claims::claim_update(spec, old_spec, old, &mut causes);
            }
        }
        ("", "services") => service_spec::service_spec(spec, &mut causes),
        _ => {}
    }
    causes
}

/// A workload's `spec.replicas`, which `ValidateNonnegativeField` keeps at 0 or more (the
/// `/scale` subresource checks its own copy).
fn non_negative_replicas(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(replicas) = spec
        .get("replicas")
        .filter(|r| r.as_i64().is_some_and(|n| n < 0))
    {
        causes.push(invalid("spec.replicas", replicas, containers::NEGATIVE));
    }
}

/// The restart policies a workload's pods may have: a Deployment's, ReplicaSet's or
/// StatefulSet's pods always restart, a Job's never or on failure. An unset policy is
/// `Always`, as the pod template's defaulting makes it.
fn template_restart_policy(spec: &Value, supported: &[&str], causes: &mut Vec<Cause>) {
    let policy = spec
        .pointer("/template/spec/restartPolicy")
        .filter(|p| !p.is_null())
        .cloned()
        .unwrap_or_else(|| json!("Always"));
    if !policy.as_str().is_some_and(|p| supported.contains(&p)) {
        causes.push(not_supported(
            "spec.template.spec.restartPolicy",
            &policy,
            supported,
        ));
    }
}

/// The pod template's spec of a workload, validated as a pod spec.
fn template_pod_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let template_spec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    pod_spec(template_spec, "spec.template.spec", causes);
}

/// A Deployment's, ReplicaSet's, StatefulSet's or (manual-selector) Job's selector: required,
/// and matching the template's labels.
fn selector_and_template(spec: &Value, causes: &mut Vec<Cause>) {
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => causes.push(required("spec.selector")),
        Some(selector) => {
            let labels = spec
                .pointer("/template/metadata/labels")
                .cloned()
                .unwrap_or(json!({}));
            if let Some(false) = selector_matches(selector, &labels) {
                causes.push(cause(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: `selector` does not match template `labels`",
                        go_string_map(&labels)
                    ),
                ));
            }
        }
    }
}

/// Whether a LabelSelector (JSON) selects the labels; None when it is not a selector or empty
/// (an empty selector is refused elsewhere, not judged against labels).
fn selector_matches(selector: &Value, labels: &Value) -> Option<bool> {
    let typed: TypedSelector = serde_json::from_value(selector.clone()).ok()?;
    let query = crate::controllers::selector_query(&typed);
    if query.is_empty() {
        return None;
    }
    let parsed = LabelSelector::parse(&query).ok()?;
    let labels: BTreeMap<String, String> = serde_json::from_value(labels.clone()).ok()?;
    Some(parsed.matches(&labels))
}

/// A `map[string]string` as Go's `%#v` prints it: `map[string]string{"app":"web"}`.
fn go_string_map(map: &Value) -> String {
    let entries: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{}:{}", shown(&json!(key)), shown(value)))
        .collect();
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// A pod spec at `path` (`spec`, or `spec.template.spec`).
fn pod_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut volumes = HashSet::new();
    for (index, volume) in array(spec, "volumes").iter().enumerate() {
        let field = format!("{path}.volumes[{index}].name");
        match volume.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => causes.push(required(&field)),
            name => {
                if let Some(why) = dns1123_label_error(name) {
                    causes.push(invalid(&field, &json!(name), &why));
                }
                if !volumes.insert(name.to_string()) {
                    causes.push(duplicate(&field, name));
                }
            }
        }
    }
    let containers = array(spec, "containers");
    if containers.is_empty() {
        causes.push(required(&format!("{path}.containers")));
    }
    // Init and regular containers share one namespace of names.
    let mut names = HashSet::new();
    for list in ["initContainers", "containers"] {
        for (index, container) in array(spec, list).iter().enumerate() {
            let container_path = format!("{path}.{list}[{index}]");
            container_spec(container, &container_path, &volumes, &mut names, causes);
        }
    }
    containers::pod_enums(spec, path, causes);
}

fn duplicate(field: &str, value: &str) -> Cause {
    cause(
        field,
        "FieldValueDuplicate",
        format!("Duplicate value: {}", shown(&json!(value))),
    )
}

fn array<'a>(object: &'a Value, field: &str) -> &'a [Value] {
    object
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn container_spec(
    container: &Value,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let name_field = format!("{path}.name");
    match container.get("name").and_then(Value::as_str).unwrap_or("") {
        "" => causes.push(required(&name_field)),
        name => {
            if let Some(why) = dns1123_label_error(name) {
                causes.push(invalid(&name_field, &json!(name), &why));
            }
            if !names.insert(name.to_string()) {
                causes.push(duplicate(&name_field, name));
            }
        }
    }
    containers::container_ports(container, path, causes);
    for (index, mount) in array(container, "volumeMounts").iter().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{index}]");
        match mount.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => causes.push(required(&format!("{mount_path}.name"))),
            name if !volumes.contains(name) => causes.push(cause(
                &format!("{mount_path}.name"),
                "FieldValueNotFound",
                format!("Not found: {}", shown(&json!(name))),
            )),
            _ => {}
        }
        if mount
            .get("mountPath")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(required(&format!("{mount_path}.mountPath")));
        }
    }
    containers::container_rules(container, path, causes);
    requests_within_limits(
        container.get("resources"),
        &format!("{path}.resources"),
        causes,
    );
    containers::container_probes(container, path, causes);
}

/// kube-apiserver's rule that a container requests no more of a resource than its limit.
fn requests_within_limits(resources: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(resources) = resources else {
        return;
    };
    let limits = resources.get("limits").and_then(Value::as_object);
    for (resource, request) in resources
        .get("requests")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(limit) = limits.and_then(|limits| limits.get(resource)) else {
            continue;
        };
        let (Some(request_amount), Some(limit_amount)) = (quantity(request), quantity(limit))
        else {
            continue;
        };
        if request_amount > limit_amount {
            causes.push(cause(
                &format!("{path}.requests"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: must be less than or equal to {resource} limit of {}",
                    shown(&Value::String(quantity_text(request))),
                    quantity_text(limit)
                ),
            ));
        }
    }
}

/// A quantity as written (`"500m"`, or a bare number).
fn quantity_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The amount a Kubernetes quantity (`1`, `500m`, `2Gi`, `1e3`) stands for, for comparisons.
pub(crate) fn quantity(value: &Value) -> Option<f64> {
    let text = match value {
        Value::Number(number) => return number.as_f64(),
        Value::String(text) => text.trim(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let exponent = exponent
                .strip_prefix('e')
                .or_else(|| exponent.strip_prefix('E'))?;
            10f64.powi(exponent.parse().ok()?)
        }
    };
    Some(number * scale)
}

/// The fields of a StatefulSet's spec an update may change.
const STATEFUL_SET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

fn stateful_set_update(spec: &Value, old_spec: &Value, causes: &mut Vec<Cause>) {
    let without_mutable = |spec: &Value| {
        let mut rest = spec.clone();
        if let Some(fields) = rest.as_object_mut() {
            for field in STATEFUL_SET_MUTABLE {
                fields.remove(*field);
            }
        }
        rest
    };
    if without_mutable(spec) != without_mutable(old_spec) {
        causes.push(cause(
            "spec",
            "FieldValueForbidden",
            "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into(),
        ));
    }
}

/// A pod's spec may change only in its containers' images, `activeDeadlineSeconds`,
/// `terminationGracePeriodSeconds` and added tolerations.
fn pod_update(spec: &Value, old_spec: &Value, causes: &mut Vec<Cause>) {
    let mut comparable = spec.clone();
    for list in ["containers", "initContainers"] {
        let old_images: Vec<Option<Value>> = array(old_spec, list)
            .iter()
            .map(|c| c.get("image").cloned())
            .collect();
        if let Some(containers) = comparable.get_mut(list).and_then(Value::as_array_mut) {
            for (container, old_image) in containers.iter_mut().zip(old_images) {
                match old_image {
                    Some(image) => container["image"] = image,
                    None => {
                        if let Some(fields) = container.as_object_mut() {
                            fields.remove("image");
                        }
                    }
                }
            }
        }
    }
    let old_tolerations = array(old_spec, "tolerations");
    let only_added = array(spec, "tolerations").starts_with(old_tolerations);
    let mut may_change = vec!["activeDeadlineSeconds", "terminationGracePeriodSeconds"];
    if only_added {
        may_change.push("tolerations");
    }
    for field in may_change {
        match (comparable.as_object_mut(), old_spec.get(field)) {
            (Some(fields), Some(old)) => {
                fields.insert(field.into(), old.clone());
            }
            (Some(fields), None) => {
                fields.remove(field);
            }
            _ => {}
        }
    }
    if &comparable != old_spec {
        causes.push(cause(
            "spec",
            "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_compare_across_suffixes() {
        let q = |s: &str| quantity(&json!(s)).unwrap();
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(quantity(&json!(2)), Some(2.0));
        assert_eq!(quantity(&json!("lots")), None);
    }

    #[test]
    fn labels_print_as_go_maps() {
        assert_eq!(
            go_string_map(&json!({"b": "2", "a": "1"})),
            r#"map[string]string{"a":"1", "b":"2"}"#
        );
    }

    #[test]
    fn dns_labels() {
        assert_eq!(dns1123_label_error("postgres"), None);
        assert!(dns1123_label_error("Postgres").is_some());
        assert!(
            dns1123_label_error(&"a".repeat(64))
                .unwrap()
                .starts_with("must be no more than 63 characters")
        );
    }
}
