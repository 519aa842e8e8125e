//! The disruption controller: keeps each PodDisruptionBudget's status (`currentHealthy`,
//! `desiredHealthy`, `expectedPods`, `disruptionsAllowed`, the `DisruptionAllowed` condition)
//! current from the pods it selects, as kube-controller-manager's does, so that the eviction
//! subresource (`kubectl drain`) can decide.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use super::{Context, ReconcileError, is_ready, is_terminal, selector_query, write_status};

/// How long an evicted pod counts as disrupted while it has not gone yet (kube's
/// `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn controller(client: &Client) -> Controller<PodDisruptionBudget> {
    // Every pod change may change a budget's healthy count.
    let pod_changes = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|pod| async move { pod.ok().map(|_| ()) });
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .reconcile_all_on(pod_changes)
}

/// How many pods the controllers of `pods` want in all: each distinct controller's scale
/// counted once (a Deployment's, not its ReplicaSet's). None when a pod has no controller
/// whose scale is known, as kube then cannot compute a percentage or `maxUnavailable`.
async fn expected_scale(client: &Client, namespace: &str, pods: &[&Pod]) -> Option<i32> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    for pod in pods {
        let owner = pod
            .owner_references()
            .iter()
            .find(|owner| owner.controller == Some(true))?
            .clone();
        if scales.contains_key(&owner.uid) {
            continue;
        }
        let (uid, replicas) = match owner.kind.as_str() {
            "ReplicaSet" => {
                let set = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .ok()??;
                let parent = set
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .cloned();
                match parent {
                    Some(parent) => {
                        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
                            .get_opt(&parent.name)
                            .await
                            .ok()??;
                        let replicas = deployment.spec.replicas.unwrap_or(1);
                        (parent.uid, replicas)
                    }
                    None => (owner.uid.clone(), set.spec.replicas.unwrap_or(1)),
                }
            }
            "StatefulSet" => {
                let set = Api::<StatefulSet>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .ok()??;
                (owner.uid.clone(), set.spec.replicas.unwrap_or(1))
            }
            "ReplicationController" => {
                let set = Api::<ReplicationController>::namespaced(client.clone(), namespace)
                    .get_opt(&owner.name)
                    .await
                    .ok()??;
                (
                    owner.uid.clone(),
                    set.spec.and_then(|s| s.replicas).unwrap_or(1),
                )
            }
            _ => return None,
        };
        scales.insert(uid, replicas);
    }
    Some(scales.values().sum())
}

/// `value` of `total` (an int, or a percentage rounded up).
fn resolve(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(text) => {
            let percent: f64 = text.strip_suffix('%')?.parse().ok()?;
            Some((f64::from(total) * percent / 100.0).ceil() as i32)
        }
    }
}

pub(super) async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if pdb.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let namespace = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Pod> = match &spec.selector {
        // A budget without a selector selects no pod.
        None => Vec::new(),
        Some(selector) => {
            Api::<Pod>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default().labels(&selector_query(selector)))
                .await?
                .items
        }
    };
    let pods: Vec<&Pod> = pods.iter().filter(|pod| !is_terminal(pod)).collect();
    let now = jiff::Timestamp::now();

    // Evicted pods count as disrupted until they are gone or being deleted, or time out.
    let old = pdb.status.clone().unwrap_or_default();
    let mut disrupted = BTreeMap::new();
    for (name, at) in old.disrupted_pods.clone().unwrap_or_default() {
        let pending = pods
            .iter()
            .any(|pod| pod.name_any() == name && pod.metadata.deletion_timestamp.is_none());
        let fresh = now.duration_since(at.0).as_secs() < DELETION_TIMEOUT.as_secs() as i64;
        if pending && fresh {
            disrupted.insert(name, at);
        }
    }
    let healthy = pods
        .iter()
        .filter(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && is_ready(pod)
                && !disrupted.contains_key(&pod.name_any())
        })
        .count();
    let current_healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let count = i32::try_from(pods.len()).unwrap_or(i32::MAX);

    // (expected pods, desired healthy); None when they cannot be known: no disruption then.
    let budget = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), _) => Some((count, *min)),
        (Some(min), _) => expected_scale(client, &namespace, &pods)
            .await
            .and_then(|expected| Some((expected, resolve(min, expected)?))),
        (None, Some(max)) => expected_scale(client, &namespace, &pods)
            .await
            .and_then(|expected| Some((expected, expected - resolve(max, expected)?))),
        (None, None) => Some((count, 0)),
    };
    let (expected, desired, allowed) = match budget {
        Some((expected, desired)) => {
            let desired = desired.max(0);
            (expected, desired, (current_healthy - desired).max(0))
        }
        None => (0, 0, 0),
    };
    let allowed_now = allowed > 0;
    let transition = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .filter(|c| (c.status == "True") == allowed_now)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let condition = Condition {
        type_: "DisruptionAllowed".to_string(),
        status: if allowed_now { "True" } else { "False" }.to_string(),
        reason: if allowed_now {
            "SufficientPods"
        } else {
            "InsufficientPods"
        }
        .to_string(),
        message: String::new(),
        observed_generation: pdb.meta().generation,
        last_transition_time: transition,
    };
    let status = PodDisruptionBudgetStatus {
        current_healthy: Some(current_healthy),
        desired_healthy: Some(desired),
        expected_pods: Some(expected),
        disruptions_allowed: Some(allowed),
        observed_generation: pdb.meta().generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted.clone()),
        conditions: Some(vec![condition]),
    };
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    write_status(&api, &pdb.name_any(), pdb.status.as_ref(), &status).await?;
    // An evicted pod that never goes stops counting as disrupted after the timeout.
    Ok(if disrupted.is_empty() {
        Action::await_change()
    } else {
        Action::requeue(DELETION_TIMEOUT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(resolve(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(resolve(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(resolve(&IntOrString::String("half".into()), 3), None);
    }
}
