//! kube-apiserver's defaulting of the workload kinds the local runtime's controllers run, as
//! clients see it: `kubectl rollout status` refuses a StatefulSet whose update strategy is not
//! spelled out, and a Job's selector is the server's to choose.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// Sets `object[field]` to `value` unless it is there already.
fn default_field(object: &mut Value, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

/// The spec object, created empty when missing.
fn spec(object: &mut Value) -> &mut Value {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    &mut object["spec"]
}

/// Defaults a StatefulSet, Deployment, DaemonSet, Job, CronJob or Secret on every write, as the API server's
/// decoding does.
/// Other kinds are left alone.
pub(crate) fn apply(rt: &ResourceType, object: &mut Value) {
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("apps", "statefulsets") => stateful_set(spec(object)),
        ("apps", "deployments") => deployment(spec(object)),
        ("apps", "daemonsets") => daemon_set(spec(object)),
        ("batch", "jobs") => job(spec(object)),
        ("batch", "cronjobs") => cron_job(spec(object)),
        ("", "secrets") => secret(object),
        _ => {}
    }
}

/// A Secret's type defaults to `Opaque`, and its write-only `stringData` is merged into `data`
/// (a key in both takes the `stringData` value), as kube-apiserver's conversion of a v1 Secret
/// does: the stored object never has `stringData`.
fn secret(object: &mut Value) {
    use base64::Engine as _;
    default_field(object, "type", json!("Opaque"));
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !object.get("data").is_some_and(Value::is_object) {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        if let Value::String(text) = value {
            object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
}

fn stateful_set(spec: &mut Value) {
    default_field(spec, "replicas", json!(1));
    default_field(spec, "podManagementPolicy", json!("OrderedReady"));
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    let strategy = &mut spec["updateStrategy"];
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        default_field(strategy, "rollingUpdate", json!({}));
        default_field(&mut strategy["rollingUpdate"], "partition", json!(0));
    }
    default_field(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    let policy = &mut spec["persistentVolumeClaimRetentionPolicy"];
    default_field(policy, "whenDeleted", json!("Retain"));
    default_field(policy, "whenScaled", json!("Retain"));
}

fn deployment(spec: &mut Value) {
    default_field(spec, "replicas", json!(1));
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "progressDeadlineSeconds", json!(600));
    default_field(spec, "strategy", json!({"type": "RollingUpdate"}));
    let strategy = &mut spec["strategy"];
    default_field(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        default_field(strategy, "rollingUpdate", json!({}));
        let rolling = &mut strategy["rollingUpdate"];
        default_field(rolling, "maxSurge", json!("25%"));
        default_field(rolling, "maxUnavailable", json!("25%"));
    }
}

/// `kubectl rollout status ds/x` refuses a DaemonSet whose strategy is not spelled out.
fn daemon_set(spec: &mut Value) {
    default_field(spec, "revisionHistoryLimit", json!(10));
    default_field(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    let strategy = &mut spec["updateStrategy"];
    default_field(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        default_field(strategy, "rollingUpdate", json!({}));
        let rolling = &mut strategy["rollingUpdate"];
        default_field(rolling, "maxUnavailable", json!(1));
        default_field(rolling, "maxSurge", json!(0));
    }
}

fn cron_job(spec: &mut Value) {
    default_field(spec, "concurrencyPolicy", json!("Allow"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "successfulJobsHistoryLimit", json!(3));
    default_field(spec, "failedJobsHistoryLimit", json!(1));
}

fn job(spec: &mut Value) {
    // Both unset means one pod run once; parallelism alone means a work queue.
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec["completions"] = json!(1);
    }
    default_field(spec, "parallelism", json!(1));
    default_field(spec, "backoffLimit", json!(6));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    default_field(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
}

/// Gives a new Job the selector kube-apiserver generates from its uid, and the matching labels
/// on its pod template (unless the user asked for `manualSelector`).
pub(crate) fn job_selector(rt: &ResourceType, job: &mut Value) {
    if rt.group != "batch" || rt.plural != "jobs" {
        return;
    }
    let manual = job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    let (Some(uid), Some(name)) = (
        job.pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        job.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string),
    ) else {
        return;
    };
    if manual {
        return;
    }
    let spec = spec(job);
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    default_field(spec, "template", json!({}));
    default_field(&mut spec["template"], "metadata", json!({}));
    let metadata = &mut spec["template"]["metadata"];
    default_field(metadata, "labels", json!({}));
    let labels = &mut metadata["labels"];
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[key] = json!(value);
    }
}
