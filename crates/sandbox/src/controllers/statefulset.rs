//! The StatefulSet controller: stable pod names and claims, ordered start and stop, and rolling
//! updates from the highest ordinal down.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::revisions::{self, REVISION_LABEL};
use super::{
    Context, ReconcileError, delete_pod, is_available, is_ready, is_terminal, is_terminating,
    owned_pods, phase, pod_from_template, selector_query, settle, template_hash, with_labels,
    write_status,
};

pub(super) fn controller(client: &Client) -> Controller<StatefulSet> {
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
}

/// The ordinal in a pod name `<set>-<ordinal>`.
fn ordinal(set_name: &str, pod: &Pod) -> Option<usize> {
    pod.name_any()
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod) && !is_terminating(pod)
}

fn revision(pod: &Pod) -> Option<&str> {
    pod.labels().get(REVISION_LABEL).map(String::as_str)
}

fn claim_name(template: &PersistentVolumeClaim, set_name: &str, ordinal: usize) -> String {
    format!("{}-{set_name}-{ordinal}", template.name_any())
}

/// What the reconcile needs to know about one StatefulSet.
struct Set<'a> {
    set: &'a StatefulSet,
    name: String,
    namespace: String,
    owner: OwnerReference,
    update_revision: String,
}

impl Set<'_> {
    /// The pod for `ordinal`, at the update revision.
    fn new_pod(&self, ordinal: usize) -> Pod {
        let spec = &self.set.spec;
        let template = spec.template.clone();
        let mut pod = pod_from_template(&template, self.owner.clone(), &self.namespace);
        let pod_name = format!("{}-{ordinal}", self.name);
        let index = ordinal.to_string();
        pod.metadata.labels = Some(with_labels(
            pod.metadata.labels.as_ref(),
            &[
                (REVISION_LABEL, &self.update_revision),
                ("statefulset.kubernetes.io/pod-name", &pod_name),
                ("apps.kubernetes.io/pod-index", &index),
            ],
        ));
        pod.metadata.name = Some(pod_name.clone());
        let mut pod_spec = pod.spec.take().unwrap_or_default();
        pod_spec.hostname = Some(pod_name);
        pod_spec.subdomain = spec.service_name.clone();
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        for claim in spec.volume_claim_templates.iter().flatten() {
            volumes.retain(|volume| volume.name != claim.name_any());
            volumes.push(Volume {
                name: claim.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim, &self.name, ordinal),
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        pod.spec = Some(pod_spec);
        pod
    }

    /// Creates the claims of `ordinal` that do not exist yet. They outlive the pod; under the
    /// `whenDeleted: Delete` policy the StatefulSet owns them, so the collector removes them
    /// with it.
    async fn ensure_claims(
        &self,
        client: &Client,
        existing: &HashSet<String>,
        ordinal: usize,
    ) -> Result<(), kube::Error> {
        let spec = &self.set.spec;
        let delete_with_set = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|policy| policy.when_deleted.as_deref())
            == Some("Delete");
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &self.namespace);
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(template, &self.name, ordinal);
            if existing.contains(&name) {
                continue;
            }
            let mut claim = template.clone();
            claim.metadata.name = Some(name);
            claim.metadata.namespace = Some(self.namespace.clone());
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            let selector_labels: Vec<(&str, &str)> = spec
                .selector
                .match_labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            claim.metadata.labels = Some(with_labels(
                claim.metadata.labels.as_ref(),
                &selector_labels,
            ));
            if delete_with_set {
                claim.metadata.owner_references = Some(vec![self.owner.clone()]);
            }
            claim.status = None;
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Under `whenScaled: Delete`, makes a condemned pod the owner of its claims, so that the
    /// collector removes them once the pod is gone.
    async fn hand_claims_to_pod(
        &self,
        client: &Client,
        pod: &Pod,
        ordinal: usize,
    ) -> Result<(), kube::Error> {
        let spec = &self.set.spec;
        let delete_when_scaled = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|policy| policy.when_scaled.as_deref())
            == Some("Delete");
        let (Some(pod_owner), true) = (pod.controller_owner_ref(&()), delete_when_scaled) else {
            return Ok(());
        };
        let pod_owner = OwnerReference {
            controller: None,
            block_owner_deletion: None,
            ..pod_owner
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &self.namespace);
        for template in spec.volume_claim_templates.iter().flatten() {
            let name = claim_name(template, &self.name, ordinal);
            let Some(claim) = claims.get_opt(&name).await? else {
                continue;
            };
            let mut owners = claim.metadata.owner_references.clone().unwrap_or_default();
            if owners.iter().any(|o| o.uid == pod_owner.uid) {
                continue;
            }
            // The pod becomes the only owner: the set owning it too would keep it alive.
            owners.retain(|o| o.uid != self.owner.uid);
            owners.push(pod_owner.clone());
            let patch = json!({"metadata": {
                "ownerReferences": owners,
                "resourceVersion": claim.resource_version(),
            }});
            claims
                .patch(
                    &name,
                    &super::patch_params(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await?;
        }
        Ok(())
    }
}

pub(super) async fn reconcile(
    set: Arc<StatefulSet>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if set.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the pods; a deleting set makes no new ones.
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let spec = &set.spec;
    let name = set.name_any();
    let namespace = set.namespace().unwrap_or_default();
    let owner = set
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the StatefulSet has no uid".into()))?;
    let collision_count = set.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision_count.filter(|c| *c > 0));
    let update_revision = format!("{name}-{hash}");
    let this = Set {
        set: &set,
        name: name.clone(),
        namespace: namespace.clone(),
        owner,
        update_revision: update_revision.clone(),
    };
    let selector = selector_query(&spec.selector);
    let recorded = revisions::Owner {
        namespace: &namespace,
        selector: &selector,
        reference: &this.owner,
        annotations: set.annotations(),
    };
    let history = revisions::record(client, &recorded, &hash, &spec.template).await?;
    let pods = owned_pods(client, &namespace, &selector, &this.owner.uid).await?;
    let by_ordinal: BTreeMap<usize, &Pod> = pods
        .iter()
        .filter_map(|pod| Some((ordinal(&name, pod)?, pod)))
        .collect();

    let status = compute_status(&set, &pods, &update_revision);
    // A StatefulSet's pods carry their revision's whole name.
    let mut live: BTreeSet<String> = pods
        .iter()
        .filter_map(|pod| revision(pod).map(str::to_string))
        .collect();
    live.insert(update_revision.clone());
    live.extend(status.current_revision.clone());
    revisions::truncate_history(
        client,
        &namespace,
        history,
        &live,
        spec.revision_history_limit,
    )
    .await?;
    let done = || {
        settle(
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            spec.min_ready_seconds.unwrap_or(0),
        )
    };
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    write_status(&sets, &name, set.status.as_ref(), &status).await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let existing_claims: HashSet<String> = claims
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    // Bring up ordinals 0..replicas; under OrderedReady, one at a time and only past healthy
    // predecessors.
    let mut all_healthy = true;
    for ordinal in 0..replicas {
        this.ensure_claims(client, &existing_claims, ordinal)
            .await?;
        match by_ordinal.get(&ordinal) {
            None => {
                match pods_api
                    .create(&PostParams::default(), &this.new_pod(ordinal))
                    .await
                {
                    Ok(_) => {}
                    // The previous pod of this name is still on its way out.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
                all_healthy = false;
            }
            Some(pod) if is_terminal(pod) && !is_terminating(pod) => {
                // A failed (or exited) pod is replaced: deleted now, recreated once gone.
                delete_pod(client, pod).await?;
                all_healthy = false;
            }
            Some(pod) if !running_and_ready(pod) => all_healthy = false,
            Some(_) => continue,
        }
        if ordered {
            return Ok(done());
        }
    }

    // Scale down from the highest ordinal, one at a time once the rest are healthy.
    let condemned: Vec<&Pod> = by_ordinal
        .range(replicas..)
        .rev()
        .map(|(_, pod)| *pod)
        .collect();
    if !condemned.is_empty() {
        if ordered && (!all_healthy || condemned.iter().any(|pod| is_terminating(pod))) {
            return Ok(done());
        }
        for pod in condemned.iter().filter(|pod| !is_terminating(pod)) {
            if let Some(ordinal) = ordinal(&name, pod) {
                this.hand_claims_to_pod(client, pod, ordinal).await?;
            }
            delete_pod(client, pod).await?;
            if ordered {
                break;
            }
        }
        return Ok(done());
    }

    // Roll pods still at an older revision, highest ordinal first, one at a time.
    if rolls(&set) && all_healthy {
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(0);
        let outdated = by_ordinal
            .range(partition..replicas)
            .rev()
            .find(|(_, pod)| revision(pod) != Some(update_revision.as_str()));
        if let Some((_, pod)) = outdated {
            delete_pod(client, pod).await?;
        }
    }
    Ok(done())
}

/// Whether the controller rolls pods to a new template itself (RollingUpdate) or leaves that
/// to whoever deletes them (OnDelete).
fn rolls(set: &StatefulSet) -> bool {
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn compute_status(set: &StatefulSet, pods: &[Pod], update_revision: &str) -> StatefulSetStatus {
    let spec = &set.spec;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let previous = set.status.as_ref();
    let mut current_revision = previous
        .and_then(|s| s.current_revision.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.to_string());
    let count = |keep: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(pods.iter().filter(|pod| keep(pod)).count()).unwrap_or(i32::MAX)
    };
    let replicas = count(&|_| true);
    let ready = count(&|pod| phase(pod) == "Running" && is_ready(pod));
    let available = count(&|pod| phase(pod) == "Running" && is_available(pod, min_ready));
    let mut current = count(&|pod| revision(pod) == Some(current_revision.as_str()));
    let updated = count(&|pod| revision(pod) == Some(update_revision));
    if rolls(set) && updated == replicas && ready == replicas {
        current_revision = update_revision.to_string();
        current = updated;
    }
    StatefulSetStatus {
        observed_generation: set.meta().generation,
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision.to_string()),
        collision_count: Some(previous.and_then(|s| s.collision_count).unwrap_or(0)),
        conditions: previous.and_then(|s| s.conditions.clone()),
    }
}
