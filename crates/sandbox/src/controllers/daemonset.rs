//! The DaemonSet controller: one pod on each Node the template's node selector, affinity and
//! tolerations admit, replaced node by node when the template changes (`RollingUpdate`,
//! at most `maxUnavailable` nodes without an available pod at a time) or only when deleted
//! (`OnDelete`), as kube-controller-manager's daemon controller does.
//!
//! Like kube's, it does not bind its pods itself: each pod requires its node through node
//! affinity (`matchFields` on `metadata.name`) and the scheduler binds it. It tolerates the
//! taints kube's daemon pods tolerate, cordoning included, so `kubectl drain
//! --ignore-daemonsets` leaves it be.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::revisions::{self, REVISION_LABEL};
use super::{
    Context, ReconcileError, delete_pod, is_active, is_available, is_ready, owned_pods, phase,
    pod_from_template, scaled_value, selector_query, settle, template_hash, write_status,
};

/// The label naming the DaemonSet generation a daemon pod was made from.
const GENERATION_LABEL: &str = "pod-template-generation";

pub(super) fn controller(client: &Client) -> Controller<DaemonSet> {
    // Every Node change (added, relabelled, tainted, cordoned) may change where daemons run.
    let node_changes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|node| async move { node.ok().map(|_| ()) });
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .reconcile_all_on(node_changes)
}

/// The tolerations kube's daemon controller adds to every daemon pod, so that node conditions
/// and cordoning do not evict or keep out a daemon.
fn daemon_tolerations(spec: &mut PodSpec) {
    let wanted = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        (crate::scheduling::UNSCHEDULABLE_TAINT, "NoSchedule"),
    ];
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let present = tolerations.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.operator.as_deref() == Some("Exists")
                && t.effect.as_deref() == Some(effect)
        });
        if !present {
            tolerations.push(Toleration {
                key: Some(key.to_string()),
                operator: Some("Exists".to_string()),
                effect: Some(effect.to_string()),
                ..Toleration::default()
            });
        }
    }
}

/// The template's pod spec bound to `node` through required node affinity, replacing any
/// required affinity of the template, as kube's `ReplaceDaemonSetPodNodeNameNodeAffinity`.
fn spec_for_node(template: &PodSpec, node: &str) -> PodSpec {
    let mut spec = template.clone();
    daemon_tolerations(&mut spec);
    let affinity = json!({
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}],
        }]},
    });
    let mut affinity_spec = spec.affinity.take().unwrap_or_default();
    let mut node_affinity = affinity_spec.node_affinity.take().unwrap_or_default();
    node_affinity.required_during_scheduling_ignored_during_execution =
        serde_json::from_value(affinity["requiredDuringSchedulingIgnoredDuringExecution"].clone())
            .ok();
    affinity_spec.node_affinity = Some(node_affinity);
    spec.affinity = Some(affinity_spec);
    spec
}

/// The node a daemon pod is for: the one it runs on, or the one its affinity requires.
fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(node.clone());
    }
    let required = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required.node_selector_terms.iter().find_map(|term| {
        term.match_fields.iter().flatten().find_map(|field| {
            (field.key == "metadata.name" && field.operator == "In")
                .then(|| field.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

pub(super) async fn reconcile(
    set: Arc<DaemonSet>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let name = set.name_any();
    let namespace = set.namespace().unwrap_or_default();
    let spec = set.spec.clone();
    let owner = set
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the DaemonSet has no uid".into()))?;
    let template = spec.template.clone();
    let template_spec = template.spec.clone().unwrap_or_default();
    let hash = template_hash(
        &template,
        set.status.as_ref().and_then(|s| s.collision_count),
    );
    let generation = set.meta().generation.unwrap_or(0).to_string();

    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let selector = selector_query(&spec.selector);
    let recorded = revisions::Owner {
        namespace: &namespace,
        selector: &selector,
        reference: &owner,
        annotations: set.annotations(),
    };
    let history = revisions::record(client, &recorded, &hash, &template).await?;
    let pods = owned_pods(client, &namespace, &selector, &owner.uid).await?;
    // A DaemonSet's pods carry only their revision's hash.
    let live: BTreeSet<String> = pods
        .iter()
        .filter_map(|pod| pod.labels().get(REVISION_LABEL))
        .chain([&hash])
        .map(|pod_hash| format!("{}-{pod_hash}", owner.name))
        .collect();
    revisions::truncate_history(
        client,
        &namespace,
        history,
        &live,
        spec.revision_history_limit,
    )
    .await?;
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods.iter().filter(|pod| is_active(pod)) {
        by_node
            .entry(pod_node(pod).unwrap_or_default())
            .or_default()
            .push(pod);
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let updated = |pod: &Pod| pod.labels().get(REVISION_LABEL) == Some(&hash);

    let mut to_create: Vec<String> = Vec::new();
    let mut to_delete: Vec<&Pod> = Vec::new();
    let mut status = DaemonSetStatus {
        observed_generation: set.meta().generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        ..DaemonSetStatus::default()
    };
    let (mut available, mut updated_count, mut ready) = (0, 0, 0);
    // Nodes whose old pod may be replaced, and how many nodes lack an available pod.
    let mut replaceable: Vec<&Pod> = Vec::new();
    let mut unavailable = 0;
    let mut wanted_nodes = Vec::new();
    for node in &nodes {
        let node_name = node.name_any();
        let here = by_node.remove(&node_name).unwrap_or_default();
        let should_run =
            crate::scheduling::fits(&spec_for_node(&template_spec, &node_name), node).is_ok();
        if !should_run {
            status.number_misscheduled += i32::from(!here.is_empty());
            to_delete.extend(here);
            continue;
        }
        wanted_nodes.push(node_name.clone());
        status.desired_number_scheduled += 1;
        // A failed daemon is killed and made again, as kube's controller does.
        let (failed, mut here): (Vec<&Pod>, Vec<&Pod>) =
            here.into_iter().partition(|pod| phase(pod) == "Failed");
        to_delete.extend(failed);
        if here.is_empty() {
            to_create.push(node_name);
            unavailable += 1;
            continue;
        }
        status.current_number_scheduled += 1;
        // One daemon per node: the oldest stays.
        here.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        to_delete.extend(here.drain(1..));
        let pod = here[0];
        ready += i32::from(is_ready(pod));
        let pod_available = is_available(pod, min_ready);
        available += i32::from(pod_available);
        if updated(pod) {
            updated_count += 1;
            unavailable += i32::from(!pod_available);
        } else if !pod_available {
            // An old daemon that is not available anyway goes at once.
            to_delete.push(pod);
            unavailable += 1;
        } else {
            replaceable.push(pod);
        }
    }
    // Daemons of nodes that are gone.
    to_delete.extend(by_node.into_values().flatten());

    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let max_unavailable = strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone())
            .unwrap_or(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1));
        let budget = scaled_value(
            Some(&max_unavailable),
            status.desired_number_scheduled,
            true,
        )
        .max(1);
        let room = usize::try_from(budget - unavailable).unwrap_or(0);
        to_delete.extend(replaceable.into_iter().take(room));
    }

    status.number_ready = ready;
    status.updated_number_scheduled = Some(updated_count);
    status.number_available = Some(available);
    status.number_unavailable = Some(status.desired_number_scheduled - available);
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    write_status(&sets, &name, set.status.as_ref(), &status).await?;

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let reference = set.object_ref(&());
    for node_name in to_create {
        let mut pod = pod_from_template(&template, owner.clone(), &namespace);
        pod.metadata.generate_name = Some(format!("{name}-"));
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(REVISION_LABEL.to_string(), hash.clone());
        labels.insert(GENERATION_LABEL.to_string(), generation.clone());
        pod.spec = Some(spec_for_node(&template_spec, &node_name));
        let created = pods_api.create(&PostParams::default(), &pod).await?;
        let message = format!("Created pod: {}", created.name_any());
        context
            .daemonset_events
            .record(&reference, false, "SuccessfulCreate", &message)
            .await;
    }
    for pod in to_delete {
        delete_pod(client, pod).await?;
        let message = format!("Deleted pod: {}", pod.name_any());
        context
            .daemonset_events
            .record(&reference, false, "SuccessfulDelete", &message)
            .await;
    }
    tracing::trace!(daemonset = %name, nodes = ?wanted_nodes, "daemons placed");
    Ok(settle(ready, available, min_ready))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_pod_requires_its_node_and_tolerates_cordoning() {
        let template: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}]
            }}},
        }))
        .expect("spec");
        let spec = spec_for_node(&template, "n1");
        let pod = Pod {
            spec: Some(spec.clone()),
            ..Pod::default()
        };
        assert_eq!(pod_node(&pod).as_deref(), Some("n1"));
        let cordoned: Node = serde_json::from_value(
            json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}}),
        )
        .expect("node");
        assert_eq!(crate::scheduling::fits(&spec, &cordoned), Ok(()));
        let other: Node =
            serde_json::from_value(json!({"metadata": {"name": "n2"}})).expect("node");
        assert!(crate::scheduling::fits(&spec, &other).is_err());
        // Adding them twice adds nothing.
        let mut again = spec.clone();
        daemon_tolerations(&mut again);
        assert_eq!(again.tolerations, spec.tolerations);
    }
}
