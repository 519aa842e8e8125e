//! The workload controllers of the local runtime: what kube-controller-manager runs for
//! StatefulSets, Deployments (through ReplicaSets), DaemonSets, Jobs (and their removal after
//! `ttlSecondsAfterFinished`), CronJobs, PodDisruptionBudgets and Services' Endpoints.
//!
//! Each is a kube-runtime [`Controller`](kube::runtime::Controller) talking to the API server
//! over HTTPS like the real controller-manager. Reconcilers read the children they act on with a
//! fresh list rather than from a cache, so a controller never acts twice on a stale view (the
//! real ones need "expectations" for that), and they write status only when it differs, so the
//! controllers are idle while nothing changes.

mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod job;
mod replicaset;
mod revisions;
mod statefulset;
mod ttl_after_finished;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The field manager every controller writes with.
const MANAGER: &str = "tusk-controller-manager";

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    job_backoff: Duration,
    error_backoff: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            // kube-controller-manager's pod failure backoff for Jobs starts at ten seconds.
            job_backoff: Duration::from_secs(10),
            error_backoff: Duration::from_secs(5),
        }
    }
}

impl ControllerOptions {
    /// The first delay before a Job replaces a failed pod; it doubles with each further
    /// failure, up to six minutes (default ten seconds, as kube-controller-manager).
    pub fn job_backoff(mut self, delay: Duration) -> Self {
        self.job_backoff = delay;
        self
    }

    /// How long a controller waits before retrying an object whose reconcile failed.
    pub fn error_backoff(mut self, delay: Duration) -> Self {
        self.error_backoff = delay;
        self
    }
}

/// A reconcile that could not finish; the object is retried after the error backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A request to the API server failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The object is missing a field the controller needs.
    #[error("{0}")]
    Invalid(String),
}

/// What every reconciler gets.
pub(crate) struct Context {
    pub client: Client,
    pub options: ControllerOptions,
    /// When each Job (by uid) last saw a pod fail, for the pod failure backoff.
    pub job_failures: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    /// The Deployment controller's Events (`ScalingReplicaSet`).
    pub deployment_events: crate::event_recorder::EventRecorder,
    /// The ReplicaSet controller's Events (`SuccessfulCreate`, `SuccessfulDelete`).
    pub replicaset_events: crate::event_recorder::EventRecorder,
    /// The DaemonSet controller's Events (`SuccessfulCreate`, `SuccessfulDelete`).
    pub daemonset_events: crate::event_recorder::EventRecorder,
    /// The CronJob controller's Events (`SuccessfulCreate`, `SawCompletedJob`, ...).
    pub cronjob_events: crate::event_recorder::EventRecorder,
}

/// Runs the StatefulSet, Deployment, ReplicaSet, DaemonSet, disruption (PodDisruptionBudget),
/// Job, CronJob, TTL-after-finished and Endpoints controllers until `shutdown`.
pub async fn run(client: kube::Client, options: ControllerOptions, shutdown: CancellationToken) {
    let context = Arc::new(Context {
        client: client.clone(),
        options,
        job_failures: Default::default(),
        deployment_events: crate::event_recorder::EventRecorder::new(
            client.clone(),
            "deployment-controller",
            None,
        ),
        replicaset_events: crate::event_recorder::EventRecorder::new(
            client.clone(),
            "replicaset-controller",
            None,
        ),
        daemonset_events: crate::event_recorder::EventRecorder::new(
            client.clone(),
            "daemonset-controller",
            None,
        ),
        cronjob_events: crate::event_recorder::EventRecorder::new(
            client.clone(),
            "cronjob-controller",
            None,
        ),
    });
    tokio::join!(
        drive(
            statefulset::controller(&client),
            statefulset::reconcile,
            &context,
            &shutdown
        ),
        drive(
            deployment::controller(&client),
            deployment::reconcile,
            &context,
            &shutdown
        ),
        drive(
            replicaset::controller(&client),
            replicaset::reconcile,
            &context,
            &shutdown
        ),
        drive(
            daemonset::controller(&client),
            daemonset::reconcile,
            &context,
            &shutdown
        ),
        drive(
            cronjob::controller(&client),
            cronjob::reconcile,
            &context,
            &shutdown
        ),
        drive(
            disruption::controller(&client),
            disruption::reconcile,
            &context,
            &shutdown
        ),
        drive(
            job::controller(&client),
            job::reconcile,
            &context,
            &shutdown
        ),
        job::release_orphans(client.clone(), shutdown.clone()),
        drive(
            ttl_after_finished::controller(&client),
            ttl_after_finished::reconcile,
            &context,
            &shutdown
        ),
        drive(
            endpoints::controller(&client),
            endpoints::reconcile,
            &context,
            &shutdown
        ),
        endpoints::remove_with_services(client.clone(), shutdown.clone()),
    );
}

/// Runs one controller until shutdown, logging reconcile failures.
async fn drive<K, F, Fut>(
    controller: Controller<K>,
    reconcile: F,
    context: &Arc<Context>,
    shutdown: &CancellationToken,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    F: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, ReconcileError>> + Send + 'static,
{
    let shutdown = shutdown.clone();
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            reconcile,
            |object: Arc<K>, error: &ReconcileError, context: Arc<Context>| {
                tracing::warn!(
                    kind = %K::kind(&()),
                    namespace = object.namespace().unwrap_or_default(),
                    name = object.name_any(),
                    %error,
                    "reconcile failed"
                );
                Action::requeue(context.options.error_backoff)
            },
            context.clone(),
        )
        .for_each(|_| async {})
        .await;
}

/// The pods in `namespace` that `owner_uid` controls, among those matching `selector`.
pub(crate) async fn owned_pods(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods.list(&ListParams::default().labels(selector)).await?;
    Ok(listed
        .items
        .into_iter()
        .filter(|pod| controller_uid(pod).as_deref() == Some(owner_uid))
        .collect())
}

/// The uid of the object's controller, if any.
pub(crate) fn controller_uid<K: Resource>(object: &K) -> Option<String> {
    object
        .owner_references()
        .iter()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.clone())
}

/// A label selector as the `labelSelector` query parameter spells it.
pub(crate) fn selector_query(selector: &LabelSelector) -> String {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.clone().unwrap_or_default().join(",");
        let key = &requirement.key;
        terms.push(match requirement.operator.as_str() {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        });
    }
    terms.join(",")
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// The pod's phase, `Pending` when the kubelet has not written one.
pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod has finished for good (Succeeded or Failed).
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the pod is being deleted.
pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod counts as active: neither finished nor being deleted.
pub(crate) fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_terminating(pod)
}

/// Whether the pod has been Ready for at least `min_ready_seconds`.
pub(crate) fn is_available(pod: &Pod, min_ready_seconds: i32) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")
        .and_then(|condition| condition.last_transition_time.as_ref());
    since.is_some_and(|since| {
        jiff::Timestamp::now().as_second() - since.0.as_second() >= i64::from(min_ready_seconds)
    })
}

/// What a controller does once it has acted: wait for the next change, or, while some pods
/// are Ready but not yet for `min_ready_seconds`, look again when they become available (no
/// event marks that moment).
pub(crate) fn settle(ready: i32, available: i32, min_ready_seconds: i32) -> Action {
    if min_ready_seconds > 0 && ready > available {
        Action::requeue(Duration::from_secs(min_ready_seconds.unsigned_abs().into()))
    } else {
        Action::await_change()
    }
}

/// A controller's reference to what it creates, as metav1.NewControllerRef makes it: the
/// owner's foreground deletion waits for the object (`blockOwnerDeletion`), terminating pods
/// included.
pub(crate) fn blocking_owner(owner: OwnerReference) -> OwnerReference {
    OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..owner
    }
}

/// The pod a controller creates from its template: the template's metadata and spec, owned by
/// `owner` (blocking its foreground deletion).
pub(crate) fn pod_from_template(
    template: &PodTemplateSpec,
    owner: OwnerReference,
    namespace: &str,
) -> Pod {
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.namespace = Some(namespace.to_string());
    metadata.owner_references = Some(vec![blocking_owner(owner)]);
    metadata.name = None;
    metadata.generate_name = None;
    metadata.resource_version = None;
    metadata.uid = None;
    Pod {
        metadata,
        spec: template.spec.clone(),
        status: None,
    }
}

/// Deletes a pod, only if it is still the one the controller looked at.
pub(crate) async fn delete_pod(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        // Already gone, or replaced by a namesake: either way this pod no longer exists.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Replaces the object's status with `status` unless it already says exactly that. Fields the
/// new status leaves out are removed, as a full status update would.
pub(crate) async fn write_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(());
    }
    let mut body = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(old) = current.and_then(|current| serde_json::to_value(current).ok()) {
        null_removed_fields(&old, &mut body);
    }
    let patch = serde_json::json!({ "status": body });
    api.patch_status(name, &patch_params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Turns `new` into a merge patch from `old`: every field `old` has and `new` lacks, at any
/// depth, becomes `null` so that the patch removes it.
fn null_removed_fields(old: &Value, new: &mut Value) {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return;
    };
    for (key, old_value) in old {
        match new.get_mut(key) {
            None => {
                new.insert(key.clone(), Value::Null);
            }
            Some(new_value) => null_removed_fields(old_value, new_value),
        }
    }
}

/// A pod template's hash as kube-controller-manager encodes it in `pod-template-hash` and
/// revision names: FNV-1a over the template (and the collision count), in an alphabet without
/// vowels so that it never spells a word.
pub(crate) fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    // Back through the typed template, so that a template without such values hashes exactly
    // as before (field order included).
    let mut canonical = serde_json::to_value(template).unwrap_or_default();
    drop_zero_values(&mut canonical);
    let canonical: PodTemplateSpec =
        serde_json::from_value(canonical).unwrap_or_else(|_| template.clone());
    feed(&serde_json::to_vec(&canonical).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string()
        .bytes()
        .map(|digit| ALPHABET[usize::from(digit) % ALPHABET.len()] as char)
        .collect()
}

/// Removes every `null` and empty object, at any depth: kube-controller-manager hashes the
/// decoded Go structs, in which `resources: {}` or `creationTimestamp: null` (what kubectl
/// writes back on `rollout undo`) are the same as leaving the field out.
fn drop_zero_values(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for field in map.values_mut() {
                drop_zero_values(field);
            }
            map.retain(|_, field| {
                !(field.is_null() || field.as_object().is_some_and(|o| o.is_empty()))
            });
        }
        Value::Array(items) => items.iter_mut().for_each(drop_zero_values),
        _ => {}
    }
}

/// Resolves an int-or-percent field against `total`, rounding up or down.
pub(crate) fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => {
            // Both rolling update fields default to 25%.
            let quarter = f64::from(total) * 0.25;
            (if round_up {
                quarter.ceil()
            } else {
                quarter.floor()
            }) as i32
        }
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(text)) => {
            let percent: f64 = text.trim_end_matches('%').parse().unwrap_or(0.0);
            let scaled = f64::from(total) * percent / 100.0;
            (if round_up {
                scaled.ceil()
            } else {
                scaled.floor()
            }) as i32
        }
    }
}

/// Labels merged: `base` first, then `extra` overriding.
pub(crate) fn with_labels(
    base: Option<&BTreeMap<String, String>>,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut labels = base.cloned().unwrap_or_default();
    for (key, value) in extra {
        labels.insert((*key).to_string(), (*value).to_string());
    }
    labels
}

/// The field-manager patch parameters every controller writes with.
pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "main", "image": image}]},
        }))
        .expect("template")
    }

    /// What kubectl writes back on `rollout undo` (Go's zero values spelled out) is the same
    /// template, so it finds the same ReplicaSet.
    #[test]
    fn template_hash_ignores_spelled_out_zero_values() {
        let spelled_out: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "main", "image": "v1", "resources": {}}]},
        }))
        .expect("template");
        assert_eq!(
            template_hash(&spelled_out, None),
            template_hash(&template("v1"), None)
        );
    }

    #[test]
    fn template_hash_is_stable_and_follows_the_template_and_collisions() {
        let hash = template_hash(&template("v1"), None);
        assert_eq!(hash, template_hash(&template("v1"), None));
        assert_ne!(hash, template_hash(&template("v2"), None));
        assert_ne!(hash, template_hash(&template("v1"), Some(1)));
        assert!(
            hash.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{hash} uses the vowel-free alphabet"
        );
    }

    #[test]
    fn surge_rounds_up_and_unavailability_rounds_down() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(scaled_value(Some(&quarter), 3, true), 1);
        assert_eq!(scaled_value(Some(&quarter), 3, false), 0);
        assert_eq!(scaled_value(None, 10, true), 3);
        assert_eq!(scaled_value(None, 10, false), 2);
        assert_eq!(scaled_value(Some(&IntOrString::Int(2)), 10, false), 2);
    }

    #[test]
    fn selectors_render_as_the_label_selector_query() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "db".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_query(&selector), "app=db,tier in (a,b),!legacy");
    }

    #[test]
    fn a_status_patch_removes_what_the_new_status_leaves_out() {
        let old = json!({"a": 1, "nested": {"keep": [1], "drop": [2]}, "gone": true});
        let mut new = json!({"a": 2, "nested": {"keep": [1]}});
        null_removed_fields(&old, &mut new);
        assert_eq!(
            new,
            json!({"a": 2, "nested": {"keep": [1], "drop": null}, "gone": null})
        );
    }
}
