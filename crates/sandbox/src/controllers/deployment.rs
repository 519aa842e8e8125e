//! The Deployment controller: one ReplicaSet per pod template, rolled from the old ones to the
//! new one under maxSurge/maxUnavailable (or all at once under Recreate), with the status and
//! conditions `kubectl rollout status` waits on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::event_recorder::EventRecorder;

use super::{
    Context, ReconcileError, blocking_owner, controller_uid, patch_params, scaled_value,
    selector_query, template_hash, with_labels, write_status,
};

const HASH_LABEL: &str = "pod-template-hash";
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The revisions a ReplicaSet had before a rollback made it the newest again.
const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's annotations a ReplicaSet does not take over (the controller's own, and
/// kubectl's record of the last apply), as kube-controller-manager skips them.
const NOT_COPIED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// The Deployment's annotations its ReplicaSets carry too (`kubernetes.io/change-cause`,
/// which `kubectl rollout history` shows, among them).
fn copied_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .annotations()
        .iter()
        .filter(|(key, _)| !NOT_COPIED_ANNOTATIONS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// The annotations that make a reused ReplicaSet (a rollback to its template) the newest
/// revision: the next revision number, the revisions it had before in its history, and the
/// Deployment's annotations; empty when it already carries them all.
fn reused_set_annotations(
    deployment: &Deployment,
    set: &ReplicaSet,
    next_revision: i64,
) -> BTreeMap<String, String> {
    let current = set.annotations();
    let mut wanted = copied_annotations(deployment);
    let had = current.get(REVISION_ANNOTATION);
    let revision = revision_number(set);
    if revision < next_revision {
        wanted.insert(REVISION_ANNOTATION.to_string(), next_revision.to_string());
        if let Some(had) = had {
            let history = match current.get(REVISION_HISTORY_ANNOTATION) {
                Some(history) if !history.is_empty() => format!("{history},{had}"),
                _ => had.clone(),
            };
            wanted.insert(REVISION_HISTORY_ANNOTATION.to_string(), history);
        }
    }
    wanted.retain(|key, value| current.get(key) != Some(value));
    wanted
}

pub(super) fn controller(client: &Client) -> Controller<Deployment> {
    Controller::new(Api::all(client.clone()), watcher::Config::default()).owns(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
}

fn spec_replicas(set: &ReplicaSet) -> i32 {
    set.spec.replicas.unwrap_or(0)
}

fn status_of(
    set: &ReplicaSet,
    field: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32,
) -> i32 {
    set.status.as_ref().map(field).unwrap_or(0)
}

fn revision_number(set: &ReplicaSet) -> i64 {
    set.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Where the Deployment controller reports what it does: kube-controller-manager's
/// `ScalingReplicaSet` Events on the Deployment.
struct Report<'a> {
    events: &'a EventRecorder,
    deployment: ObjectReference,
}

impl Report<'_> {
    async fn scaled(&self, set: &str, from: i32, to: i32) {
        let direction = if to > from { "up" } else { "down" };
        let message = format!("Scaled {direction} replica set {set} from {from} to {to}");
        self.events
            .record(&self.deployment, false, "ScalingReplicaSet", &message)
            .await;
    }
}

async fn scale(
    api: &Api<ReplicaSet>,
    report: &Report<'_>,
    set: &ReplicaSet,
    replicas: i32,
) -> Result<(), kube::Error> {
    let current = spec_replicas(set);
    if current == replicas {
        return Ok(());
    }
    let patch = json!({"spec": {"replicas": replicas}});
    api.patch(&set.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await?;
    report.scaled(&set.name_any(), current, replicas).await;
    Ok(())
}

pub(super) async fn reconcile(
    deployment: Arc<Deployment>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    if deployment.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let spec = &deployment.spec;
    let name = deployment.name_any();
    let namespace = deployment.namespace().unwrap_or_default();
    let owner = deployment
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the Deployment has no uid".into()))?;
    let desired = spec.replicas.unwrap_or(1).max(0);
    let report = Report {
        events: &context.deployment_events,
        deployment: deployment.object_ref(&()),
    };
    let sets_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let mut sets: Vec<ReplicaSet> = sets_api
        .list(&ListParams::default().labels(&selector_query(&spec.selector)))
        .await?
        .items
        .into_iter()
        .filter(|set| controller_uid(set).as_deref() == Some(owner.uid.as_str()))
        .collect();
    sets.sort_by_key(|set| set.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let collision_count = deployment.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collision_count.filter(|c| *c > 0));
    let new_name = format!("{name}-{hash}");
    let (new_sets, old_sets): (Vec<ReplicaSet>, Vec<ReplicaSet>) =
        sets.into_iter().partition(|set| set.name_any() == new_name);
    let new_set = new_sets.into_iter().next();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_surge = scaled_value(rolling.and_then(|r| r.max_surge.as_ref()), desired, true);
    let mut max_unavailable = scaled_value(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        false,
    );
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    if recreate {
        max_unavailable = desired;
    }

    // While a rollout is under way, look again when its progress deadline would pass.
    let next = match write_deployment_status(
        &deployment,
        new_set.as_ref(),
        &old_sets,
        desired,
        max_unavailable,
        client,
    )
    .await?
    {
        Some(deadline) => Action::requeue(deadline),
        None => Action::await_change(),
    };
    if spec.paused == Some(true) {
        return Ok(next);
    }

    let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
    prune_history(&sets_api, &old_sets, limit).await?;
    let old_total: i32 = old_sets.iter().map(spec_replicas).sum();
    let next_revision = old_sets.iter().map(revision_number).max().unwrap_or(0) + 1;
    let Some(new_set) = new_set else {
        let initial = if recreate {
            if old_total > 0 || old_sets.iter().any(|s| status_of(s, |st| st.replicas) > 0) {
                for set in &old_sets {
                    scale(&sets_api, &report, set, 0).await?;
                }
                return Ok(next);
            }
            desired
        } else {
            desired.min((desired + max_surge - old_total).max(0))
        };
        let revision = next_revision;
        if create_set(&deployment, &sets_api, &new_name, &hash, initial, revision).await? {
            report.scaled(&new_name, 0, initial).await;
        }
        let patch =
            json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
        Api::<Deployment>::namespaced(client.clone(), &namespace)
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        return Ok(next);
    };
    // A template seen before (a rollback) makes its ReplicaSet the newest revision again.
    let annotations = reused_set_annotations(&deployment, &new_set, next_revision);
    if !annotations.is_empty() {
        let patch = json!({"metadata": {"annotations": annotations}});
        sets_api
            .patch(&new_set.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await?;
    }
    let set_revision = revision_number(&new_set).max(next_revision).to_string();
    if deployment.annotations().get(REVISION_ANNOTATION) != Some(&set_revision) {
        let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: set_revision}}});
        Api::<Deployment>::namespaced(client.clone(), &namespace)
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await?;
    }

    if recreate {
        if old_total > 0 {
            for set in &old_sets {
                scale(&sets_api, &report, set, 0).await?;
            }
            return Ok(next);
        }
        if old_sets.iter().any(|s| status_of(s, |st| st.replicas) > 0) {
            // Recreate starts the new pods only once every old one is gone.
            return Ok(next);
        }
        scale(&sets_api, &report, &new_set, desired).await?;
        return Ok(next);
    }

    if old_total == 0 {
        scale(&sets_api, &report, &new_set, desired).await?;
        return Ok(next);
    }
    // Surge first: grow the new set within desired + maxSurge pods in all.
    let new_replicas = spec_replicas(&new_set);
    let all_total = old_total + new_replicas;
    let max_total = desired + max_surge;
    if new_replicas < desired && all_total < max_total {
        let grown = desired.min(new_replicas + (max_total - all_total));
        scale(&sets_api, &report, &new_set, grown).await?;
        return Ok(next);
    }
    // Then shrink the old sets while at least desired - maxUnavailable pods stay available,
    // removing their unavailable pods first since that costs no availability.
    let min_available = desired - max_unavailable;
    let new_unavailable =
        new_replicas - status_of(&new_set, |st| st.available_replicas.unwrap_or(0));
    let mut budget = all_total - min_available - new_unavailable;
    let mut remaining: Vec<(ReplicaSet, i32)> = old_sets
        .iter()
        .map(|s| (s.clone(), spec_replicas(s)))
        .collect();
    for (set, replicas) in remaining.iter_mut() {
        if budget <= 0 {
            break;
        }
        let unhealthy = *replicas - status_of(set, |st| st.available_replicas.unwrap_or(0));
        let removed = unhealthy.clamp(0, budget);
        *replicas -= removed;
        budget -= removed;
    }
    let available: i32 = old_sets
        .iter()
        .chain(std::iter::once(&new_set))
        .map(|s| status_of(s, |st| st.available_replicas.unwrap_or(0)))
        .sum();
    let mut scale_down = (available - min_available).min(budget.max(0));
    for (_, replicas) in remaining.iter_mut() {
        if scale_down <= 0 {
            break;
        }
        let removed = (*replicas).min(scale_down);
        *replicas -= removed;
        scale_down -= removed;
    }
    for (set, replicas) in &remaining {
        scale(&sets_api, &report, set, *replicas).await?;
    }
    Ok(next)
}

/// Deletes the oldest scaled-down ReplicaSets beyond `limit`, as revisionHistoryLimit asks.
async fn prune_history(
    api: &Api<ReplicaSet>,
    old_sets: &[ReplicaSet],
    limit: usize,
) -> Result<(), kube::Error> {
    let mut idle: Vec<&ReplicaSet> = old_sets
        .iter()
        .filter(|set| spec_replicas(set) == 0 && status_of(set, |st| st.replicas) == 0)
        .filter(|set| set.metadata.deletion_timestamp.is_none())
        .collect();
    if idle.len() <= limit {
        return Ok(());
    }
    idle.sort_by_key(|set| revision_number(set));
    for set in &idle[..idle.len() - limit] {
        match api
            .delete(&set.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn create_set(
    deployment: &Deployment,
    api: &Api<ReplicaSet>,
    name: &str,
    hash: &str,
    replicas: i32,
    revision: i64,
) -> Result<bool, ReconcileError> {
    let spec = &deployment.spec;
    let mut template = spec.template.clone();
    let template_meta = template.metadata.get_or_insert_with(Default::default);
    template_meta.labels = Some(with_labels(
        template_meta.labels.as_ref(),
        &[(HASH_LABEL, hash)],
    ));
    let labels = template_meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector.match_labels = Some(with_labels(
        selector.match_labels.as_ref(),
        &[(HASH_LABEL, hash)],
    ));
    let desired = spec.replicas.unwrap_or(1).to_string();
    let set = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: deployment.namespace(),
            labels,
            annotations: Some(
                copied_annotations(deployment)
                    .into_iter()
                    .chain([
                        (REVISION_ANNOTATION.to_string(), revision.to_string()),
                        (
                            "deployment.kubernetes.io/desired-replicas".to_string(),
                            desired,
                        ),
                    ])
                    .collect(),
            ),
            owner_references: deployment
                .controller_owner_ref(&())
                .map(|o| vec![blocking_owner(o)]),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &set).await {
        Ok(_) => Ok(true),
        // Made by an earlier pass that this one's list already missed; the next pass sees it.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// A condition carried over unchanged when it still says the same, so that an idle
/// Deployment's status (and its timestamps) stay put; `touch` refreshes its lastUpdateTime
/// anyway, as progress does.
fn condition(
    previous: &[DeploymentCondition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    touch: bool,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_.as_deref() == Some(type_));
    if let Some(old) = old
        && !touch
        && old.status.as_deref() == Some(status)
        && old.reason.as_deref() == Some(reason)
        && old.message.as_deref() == Some(message.as_str())
    {
        return old.clone();
    }
    let now =
        Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default());
    let transition = match old {
        Some(old) if old.status.as_deref() == Some(status) => old.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    DeploymentCondition {
        type_: Some(type_.to_string()),
        status: Some(status.to_string()),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(now),
        last_transition_time: transition,
    }
}

async fn write_deployment_status(
    deployment: &Deployment,
    new_set: Option<&ReplicaSet>,
    old_sets: &[ReplicaSet],
    desired: i32,
    max_unavailable: i32,
    client: &Client,
) -> Result<Option<Duration>, kube::Error> {
    let all = || old_sets.iter().chain(new_set);
    let replicas: i32 = all().map(|s| status_of(s, |st| st.replicas)).sum();
    let ready: i32 = all()
        .map(|s| status_of(s, |st| st.ready_replicas.unwrap_or(0)))
        .sum();
    let available: i32 = all()
        .map(|s| status_of(s, |st| st.available_replicas.unwrap_or(0)))
        .sum();
    let updated = new_set.map(|s| status_of(s, |st| st.replicas)).unwrap_or(0);
    let spec_total: i32 = all().map(spec_replicas).sum();
    let previous = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let available_condition = if available >= desired - max_unavailable {
        condition(
            &previous,
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            false,
        )
    } else {
        condition(
            &previous,
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            false,
        )
    };
    let mut recheck = None;
    let progressing = match new_set {
        Some(set)
            if updated == desired
                && replicas == desired
                && available == desired
                && spec_replicas(set) == desired =>
        {
            condition(
                &previous,
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!(
                    "ReplicaSet \"{}\" has successfully progressed.",
                    set.name_any()
                ),
                false,
            )
        }
        Some(set) => {
            let counts = (Some(replicas), Some(updated), Some(ready), Some(available));
            let progressed = deployment.status.as_ref().map(|s| {
                (
                    s.replicas,
                    s.updated_replicas,
                    s.ready_replicas,
                    s.available_replicas,
                )
            }) != Some(counts);
            let old = previous
                .iter()
                .find(|c| c.type_.as_deref() == Some("Progressing"));
            let timed_out =
                old.and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded");
            let since = old
                .and_then(|c| c.last_update_time.as_ref())
                .map(|t| t.0.as_second());
            let elapsed = since.map_or(0, |since| jiff::Timestamp::now().as_second() - since);
            let deadline = i64::from(deployment.spec.progress_deadline_seconds.unwrap_or(600));
            // i32::MAX is how a Deployment says it has no deadline.
            let bounded = deadline != i64::from(i32::MAX);
            // Once timed out, only new progress restarts the clock.
            if bounded && !progressed && (timed_out || elapsed >= deadline) {
                condition(
                    &previous,
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    format!(
                        "ReplicaSet \"{}\" has timed out progressing.",
                        set.name_any()
                    ),
                    false,
                )
            } else {
                if bounded {
                    let left = if progressed {
                        deadline
                    } else {
                        deadline - elapsed
                    };
                    recheck = Some(Duration::from_secs(left.unsigned_abs()));
                }
                condition(
                    &previous,
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{}\" is progressing.", set.name_any()),
                    progressed,
                )
            }
        }
        None => condition(
            &previous,
            "Progressing",
            true,
            "NewReplicaSetCreated",
            "Creating a new replica set.".into(),
            false,
        ),
    };
    let status = DeploymentStatus {
        observed_generation: deployment.meta().generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        terminating_replicas: None,
        collision_count: deployment.status.as_ref().and_then(|s| s.collision_count),
        conditions: Some(vec![available_condition, progressing]),
    };
    let api: Api<Deployment> =
        Api::namespaced(client.clone(), &deployment.namespace().unwrap_or_default());
    write_status(
        &api,
        &deployment.name_any(),
        deployment.status.as_ref(),
        &status,
    )
    .await?;
    Ok(recheck)
}
