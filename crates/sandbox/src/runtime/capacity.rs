//! The node's memory, as kube-scheduler's `NodeResourcesFit` filter counts it: a pod fits when
//! its memory request plus the requests of the pods already bound to the node (and not
//! finished) is at most the node's allocatable memory, which here is the machine's own
//! (`MemTotal` of `/proc/meminfo`). A pod that does not fit is left unbound, with the
//! `PodScheduled` condition and the `FailedScheduling` Event kube-scheduler gives it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::NODE_NAME;
use crate::apiserver::validation::quantity;

/// What kube-scheduler says of a pod no node has the memory for, on a one-node cluster.
pub(crate) const INSUFFICIENT_MEMORY: &str = "0/1 nodes are available: 1 Insufficient memory. \
     preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

/// The machine's memory in bytes, from `/proc/meminfo`.
pub(crate) fn node_memory() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// A container's memory request (its limit stands in when it gives only a limit, as the API
/// server's defaulting makes it).
fn container_memory(container: &Container) -> f64 {
    let resources = container.resources.as_ref();
    let memory = |bucket: Option<&BTreeMap<String, Quantity>>| bucket?.get("memory").cloned();
    memory(resources.and_then(|r| r.requests.as_ref()))
        .or_else(|| memory(resources.and_then(|r| r.limits.as_ref())))
        .and_then(|Quantity(text)| quantity(&Value::String(text)))
        .unwrap_or(0.0)
}

/// A pod's memory request: the sum over its containers, or its largest init container's when
/// that is more (init containers run one at a time, before the others).
pub(crate) fn pod_memory(pod: &Pod) -> f64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0.0;
    };
    let containers: f64 = spec.containers.iter().map(container_memory).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_memory)
        .fold(0.0, f64::max);
    containers.max(init)
}

/// Whether `pod` fits beside the pods already bound to this node.
pub(crate) async fn fits(client: &kube::Client, pod: &Pod) -> Result<bool, kube::Error> {
    let wanted = pod_memory(pod);
    if wanted <= 0.0 {
        return Ok(true);
    }
    let Some(allocatable) = node_memory() else {
        return Ok(true);
    };
    let bound: Api<Pod> = Api::all(client.clone());
    let bound = bound
        .list(&ListParams::default().fields(&format!("spec.nodeName={NODE_NAME}")))
        .await?;
    let taken: f64 = bound
        .items
        .iter()
        .filter(|other| other.metadata.uid != pod.metadata.uid)
        .filter(|other| {
            let phase = other.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .map(pod_memory)
        .sum();
    Ok(taken + wanted <= allocatable)
}

/// Whether kube-scheduler already found `pod` unschedulable (it is not tried again until it
/// changes, as nothing here frees memory for it but its own replacement).
pub(crate) fn marked_unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|condition| {
                condition.type_ == "PodScheduled"
                    && condition.status == "False"
                    && condition.reason.as_deref() == Some("Unschedulable")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        let container = |memory: &&str| serde_json::json!({"name": "c", "resources": {"requests": {"memory": memory}}});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": containers.iter().map(container).collect::<Vec<_>>(),
                "initContainers": init.iter().map(container).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_requests_its_containers_sum_or_its_largest_init_container() {
        assert_eq!(
            pod_memory(&pod(&["1Gi", "512Mi"], &[])),
            1.5 * 1024f64.powi(3)
        );
        assert_eq!(
            pod_memory(&pod(&["1Mi"], &["2Mi", "3Mi"])),
            3.0 * 1024f64.powi(2)
        );
        assert_eq!(pod_memory(&pod(&[], &[])), 0.0);
        assert!(node_memory().is_some_and(|memory| memory > 0.0));
    }
}
