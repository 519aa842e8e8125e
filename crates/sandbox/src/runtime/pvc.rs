//! The local volume provisioner: every PersistentVolumeClaim is bound at once to a directory
//! of its own, with the capacity it requests; raising the request expands it, as a CSI driver
//! with volume expansion does. The directory goes when the claim does (reclaim policy Delete).

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::{Node, RuntimeOptions};

/// Where a claim's data lives, by the claim's uid: a claim deleted and created again under
/// the same name starts empty, as with a dynamically provisioned volume.
pub(crate) fn claim_dir(options: &RuntimeOptions, uid: &str) -> PathBuf {
    options.claims_dir().join(uid)
}

/// Binds and resizes claims until the runtime stops.
pub(crate) async fn provision(node: Arc<Node>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(node.client.clone());
    let stream = watcher(claims, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) => {
                bind(&node, &claim).await;
            }
            Ok(watcher::Event::Delete(claim)) => {
                if let Some(uid) = claim.uid() {
                    let _ = std::fs::remove_dir_all(claim_dir(&node.options, &uid));
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "the provisioner's claim watch failed; retrying"),
        }
    }
}

/// Writes the status a bound claim of this size has, unless it already has it.
async fn bind(node: &Node, claim: &PersistentVolumeClaim) {
    if claim.metadata.deletion_timestamp.is_some() {
        return;
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let requested = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned());
    let status = claim.status.clone().unwrap_or_default();
    let capacity = status.capacity.and_then(|c| c.get("storage").cloned());
    let bound = status.phase.as_deref() == Some("Bound");
    if bound && capacity == requested {
        return;
    }
    let access_modes = spec
        .access_modes
        .unwrap_or_else(|| vec!["ReadWriteOnce".to_string()]);
    let mut patch = json!({
        "status": {
            "phase": "Bound",
            "accessModes": access_modes,
        }
    });
    if let Some(requested) = requested {
        patch["status"]["capacity"] = json!({"storage": requested});
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(node.client.clone(), &claim.namespace().unwrap_or_default());
    if let Err(error) = api
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(%error, claim = %claim.name_any(), "cannot bind a claim");
    }
}
