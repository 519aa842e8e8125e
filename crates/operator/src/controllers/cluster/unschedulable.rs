//! A pod no node could take is replaced when the StatefulSet's template changes.
//!
//! The StatefulSet controller moves a pod to a new template only once every pod runs and is
//! ready, so a pod left unscheduled (a `memorySize` no node has the memory for) would keep the
//! old template whatever the spec says now: the case Kubernetes documents as needing the pod
//! deleted by hand after the template is fixed. The operator deletes it instead, so that
//! lowering `memorySize` is enough. A pod that was never bound to a node has run nothing, so
//! deleting it interrupts nothing.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};

use super::status;
use crate::error::{Error, Result};

/// The label the StatefulSet controller gives a pod: the revision of the template it was made
/// from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The instance pod, when it was never bound to a node, the scheduler found it unschedulable,
/// and it was made from a template older than the StatefulSet's current one.
pub fn outdated_pod<'a>(stateful_set: &'a StatefulSet, pods: &'a [Pod]) -> Option<&'a Pod> {
    let update_revision = stateful_set.status.as_ref()?.update_revision.as_deref()?;
    let pod = status::instance_pod(stateful_set, pods)?;
    let bound = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|node| !node.is_empty());
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|condition| {
                condition.type_ == "PodScheduled"
                    && condition.status == "False"
                    && condition.reason.as_deref() == Some("Unschedulable")
            })
        });
    let revision = pod.metadata.labels.as_ref()?.get(REVISION_LABEL)?;
    (!bound && unschedulable && revision != update_revision).then_some(pod)
}

/// Deletes `pod`, and only that incarnation of it (its uid is a precondition).
pub async fn replace(client: &kube::Client, namespace: &str, pod: &Pod) -> Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .delete(&name, &params)
        .await
    {
        Ok(_) => Ok(()),
        // Gone or replaced already.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Pod",
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stateful_set() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "elephant", "uid": "sts"},
            "spec": {"selector": {}, "serviceName": "x", "template": {}},
            "status": {"replicas": 1, "updateRevision": "elephant-new"}
        }))
        .unwrap()
    }

    fn pod(revision: &str, node: Option<&str>, scheduled: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "elephant-0",
                "labels": {REVISION_LABEL: revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "elephant", "uid": "sts", "controller": true}]
            },
            "spec": {"containers": [], "nodeName": node},
            "status": {"conditions": [{"type": "PodScheduled", "status": scheduled,
                "reason": if scheduled == "False" { "Unschedulable" } else { "" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_an_unscheduled_pod_of_an_old_template_is_replaced() {
        let sts = stateful_set();
        let stuck = [pod("elephant-old", None, "False")];
        assert!(outdated_pod(&sts, &stuck).is_some());
        // Of the current template: the scheduler keeps it until memory frees up.
        assert!(outdated_pod(&sts, &[pod("elephant-new", None, "False")]).is_none());
        // Bound to a node (running, or about to): the StatefulSet rolls it itself.
        assert!(outdated_pod(&sts, &[pod("elephant-old", Some("node"), "True")]).is_none());
        // Not found unschedulable (yet): the scheduler has not spoken.
        assert!(outdated_pod(&sts, &[pod("elephant-old", None, "True")]).is_none());
    }
}
