//! The ReplicaSet controller: keeps the number of active pods at `spec.replicas`.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::{
    Context, ReconcileError, delete_pod, is_active, is_available, is_ready, owned_pods, phase,
    pod_from_template, selector_query, settle, write_status,
};

pub(super) fn controller(client: &Client) -> Controller<ReplicaSet> {
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
}

/// The order in which surplus pods go, as kube-controller-manager ranks them: unscheduled
/// before scheduled, pending before running, not ready before ready, newest first.
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<i64>) {
    let unscheduled = u8::from(
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some(),
    );
    let running = u8::from(phase(pod) == "Running");
    let ready = u8::from(is_ready(pod));
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (unscheduled, running, ready, std::cmp::Reverse(created))
}

pub(super) async fn reconcile(
    set: Arc<ReplicaSet>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let spec = &set.spec;
    let name = set.name_any();
    let namespace = set.namespace().unwrap_or_default();
    let owner = set
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the ReplicaSet has no uid".into()))?;
    let selector = selector_query(&spec.selector);
    let pods = owned_pods(client, &namespace, &selector, &owner.uid).await?;
    let mut active: Vec<&Pod> = pods.iter().filter(|pod| is_active(pod)).collect();

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let count = |keep: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(active.iter().filter(|pod| keep(pod)).count()).unwrap_or(i32::MAX)
    };
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let status = ReplicaSetStatus {
        observed_generation: set.meta().generation,
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|pod| {
            template_labels
                .iter()
                .all(|(k, v)| pod.labels().get(k) == Some(v))
        })),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|pod| is_available(pod, min_ready))),
        terminating_replicas: None,
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    write_status(&sets, &name, set.status.as_ref(), &status).await?;

    let wanted = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    if active.len() < wanted {
        let template = spec.template.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        for _ in active.len()..wanted {
            let mut pod = pod_from_template(&template, owner.clone(), &namespace);
            pod.metadata.generate_name = Some(format!("{name}-"));
            let created = pods_api.create(&PostParams::default(), &pod).await?;
            let message = format!("Created pod: {}", created.name_any());
            context
                .replicaset_events
                .record(&set.object_ref(&()), false, "SuccessfulCreate", &message)
                .await;
        }
    } else if active.len() > wanted {
        active.sort_by_key(|pod| deletion_rank(pod));
        for pod in &active[..active.len() - wanted] {
            delete_pod(client, pod).await?;
            let message = format!("Deleted pod: {}", pod.name_any());
            context
                .replicaset_events
                .record(&set.object_ref(&()), false, "SuccessfulDelete", &message)
                .await;
        }
    }
    Ok(settle(
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
        min_ready,
    ))
}
