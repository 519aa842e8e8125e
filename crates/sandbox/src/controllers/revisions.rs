//! The ControllerRevisions kube-controller-manager's StatefulSet and DaemonSet controllers keep
//! of their pod templates, which `kubectl rollout history` lists and `kubectl rollout undo`
//! applies back (each holds a strategic merge patch that replaces the template). Old revisions
//! beyond the workload's `revisionHistoryLimit` are deleted, as those controllers truncate their
//! history.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{controller_uid, patch_params, with_labels};

/// The label naming the template revision a pod was made from.
pub(super) const REVISION_LABEL: &str = "controller-revision-hash";

/// The workload whose template is recorded.
pub(super) struct Owner<'a> {
    pub namespace: &'a str,
    /// The workload's selector, as a label query: its revisions carry its template's labels.
    pub selector: &'a str,
    /// Its controller reference, which each revision carries.
    pub reference: &'a OwnerReference,
    /// Its annotations, which each revision copies (`kubernetes.io/change-cause` is what
    /// `rollout history` prints).
    pub annotations: &'a BTreeMap<String, String>,
}

/// Makes sure the template has its revision, named `<owner>-<hash>`: made with the next
/// revision number when the template is new, and renumbered as the newest when the template
/// went back to an earlier one (after `rollout undo`), as kube's controllers do. Returns the
/// owner's revisions as they were listed before this pass, for [`truncate_history`].
pub(super) async fn record(
    client: &Client,
    owner: &Owner<'_>,
    hash: &str,
    template: &PodTemplateSpec,
) -> Result<Vec<ControllerRevision>, kube::Error> {
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), owner.namespace);
    let name = format!("{}-{hash}", owner.reference.name);
    let listed = revisions
        .list(&ListParams::default().labels(owner.selector))
        .await?;
    let owned: Vec<ControllerRevision> = listed
        .items
        .into_iter()
        .filter(|r| controller_uid(r).as_deref() == Some(owner.reference.uid.as_str()))
        .collect();
    let newest_other = owned
        .iter()
        .filter(|r| r.name_any() != name)
        .filter_map(|r| r.revision)
        .max()
        .unwrap_or(0);
    if let Some(current) = owned.iter().find(|r| r.name_any() == name) {
        if current.revision.unwrap_or(0) <= newest_other {
            let renumbered = json!({"revision": newest_other + 1});
            revisions
                .patch(&name, &patch_params(), &Patch::Merge(&renumbered))
                .await?;
        }
        return Ok(owned);
    }
    let mut replacing = serde_json::to_value(template).unwrap_or_default();
    replacing["$patch"] = json!("replace");
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    let revision = ControllerRevision {
        metadata: kube::api::ObjectMeta {
            name: Some(name),
            namespace: Some(owner.namespace.to_string()),
            labels: Some(with_labels(labels, &[(REVISION_LABEL, hash)])),
            annotations: (!owner.annotations.is_empty()).then(|| owner.annotations.clone()),
            owner_references: Some(vec![owner.reference.clone()]),
            ..Default::default()
        },
        data: RawExtension(json!({"spec": {"template": replacing}})),
        revision: Some(newest_other + 1),
    };
    match revisions.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(owned),
        // Made already, by a pass that has not seen it in its list yet.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(owned),
        Err(error) => Err(error),
    }
}

/// Deletes the oldest of `revisions` beyond `limit` (the workload's `revisionHistoryLimit`),
/// counting only those no longer live: a revision named in `live` (the workload's current and
/// update revisions, and every revision one of its pods still runs) is never deleted, since a
/// rollout or `rollout undo` still needs it. kube's StatefulSet and DaemonSet controllers
/// truncate their history the same way.
pub(super) async fn truncate_history(
    client: &Client,
    namespace: &str,
    revisions: Vec<ControllerRevision>,
    live: &BTreeSet<String>,
    limit: Option<i32>,
) -> Result<(), kube::Error> {
    let limit = usize::try_from(limit.unwrap_or(10)).unwrap_or(0);
    let mut history: Vec<ControllerRevision> = revisions
        .into_iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    if history.len() <= limit {
        return Ok(());
    }
    history.sort_by_key(|r| r.revision.unwrap_or(0));
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for old in &history[..history.len() - limit] {
        match api.delete(&old.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            // Gone already: another pass deleted it.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
