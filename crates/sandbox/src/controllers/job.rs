//! The Job controller: runs pods until enough succeed, replaces failed ones up to the backoff
//! limit, enforces activeDeadlineSeconds (ttlSecondsAfterFinished is [`super::ttl_after_finished`]'s).
//!
//! Pods are tracked with the `batch.kubernetes.io/job-tracking` finalizer, as the real
//! controller does: a finished pod is first recorded in `status.uncountedTerminatedPods`, then
//! its finalizer is removed, then it moves into the `succeeded`/`failed` counts. A pod can then
//! be deleted at any point without the Job losing count of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    Context, ReconcileError, delete_pod, is_active, is_ready, is_terminal, is_terminating,
    owned_pods, patch_params, phase, pod_from_template, with_labels, write_status,
};

/// The finalizer the controller holds on its pods until it has counted them.
pub(crate) const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The longest pod failure backoff, as kube-controller-manager caps it.
const MAX_BACKOFF: Duration = Duration::from_secs(360);

pub(super) fn controller(client: &Client) -> Controller<Job> {
    Controller::new(Api::all(client.clone()), watcher::Config::default())
        .owns(Api::<Pod>::all(client.clone()), watcher::Config::default())
}

fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Whether a finished or deleted pod counts as a failure: deleted pods that never succeeded do,
/// since they may never get the chance to reach the Failed phase.
fn counts_as_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed" || (is_terminating(pod) && phase(pod) != "Succeeded")
}

/// Removes the tracking finalizer from a pod, guarded by its resourceVersion.
async fn release(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    if !has_finalizer(pod) {
        return Ok(());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let remaining: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": remaining,
        "resourceVersion": pod.resource_version(),
    }});
    match api
        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Drops a Job's pod failure backoff clock once no more pods will be made for it.
fn forget_failures(context: &Context, job_uid: &str) {
    context
        .job_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(job_uid);
}

fn condition_true(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn add_condition(status: &mut JobStatus, type_: &str, reason: &str, message: &str) {
    if condition_true(status, type_) {
        return;
    }
    let at = now();
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(JobCondition {
            type_: type_.to_string(),
            status: "True".to_string(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            last_probe_time: Some(at.clone()),
            last_transition_time: Some(at),
        });
}

/// Sets a condition that can flip between True and False (Suspended), keeping it untouched
/// while it says the same.
fn set_condition(status: &mut JobStatus, type_: &str, value: &str, reason: &str, message: &str) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == value && c.reason.as_deref() == Some(reason))
    {
        return;
    }
    conditions.retain(|c| c.type_ != type_);
    let at = now();
    conditions.push(JobCondition {
        type_: type_.to_string(),
        status: value.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_probe_time: Some(at.clone()),
        last_transition_time: Some(at),
    });
}

fn to_count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) async fn reconcile(
    job: Arc<Job>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let client = &context.client;
    let name = job.name_any();
    let namespace = job.namespace().unwrap_or_default();
    let owner = job
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Invalid("the Job has no uid".into()))?;
    let selector = format!("{CONTROLLER_UID_LABEL}={}", owner.uid);
    let pods = owned_pods(client, &namespace, &selector, &owner.uid).await?;
    if job.meta().deletion_timestamp.is_some() {
        forget_failures(&context, &owner.uid);
        for pod in &pods {
            release(client, pod).await?;
        }
        return Ok(Action::await_change());
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    // Counts accumulate from the stored status, so they are read fresh: the cached object may
    // predate this controller's last write.
    let Some(job) = jobs.get_opt(&name).await? else {
        forget_failures(&context, &owner.uid);
        return Ok(Action::await_change());
    };
    if job.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return Ok(Action::await_change());
    }
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| ReconcileError::Invalid("the Job has no spec".into()))?;
    let previous = job.status.clone().unwrap_or_default();
    let mut status = previous.clone();

    // Count finished pods in two steps, so that none is lost or counted twice.
    let uncounted = previous
        .uncounted_terminated_pods
        .clone()
        .unwrap_or_default();
    let mut succeeded_uids: BTreeSet<String> = uncounted
        .succeeded
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut failed_uids: BTreeSet<String> = uncounted
        .failed
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut newly_failed = false;
    for pod in pods.iter().filter(|pod| has_finalizer(pod)) {
        if phase(pod) == "Succeeded" {
            succeeded_uids.insert(uid(pod));
        } else if counts_as_failed(pod) && failed_uids.insert(uid(pod)) {
            newly_failed = true;
        }
    }
    if newly_failed {
        let mut failures = context
            .job_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.insert(owner.uid.clone(), tokio::time::Instant::now());
    }
    let recorded = UncountedTerminatedPods {
        succeeded: Some(succeeded_uids.iter().cloned().collect()),
        failed: Some(failed_uids.iter().cloned().collect()),
    };
    // The status as stored, which the final write patches.
    let mut stored = previous.clone();
    if !succeeded_uids.is_empty() || !failed_uids.is_empty() {
        status.uncounted_terminated_pods = Some(recorded);
        write_status(&jobs, &name, Some(&previous), &status).await?;
        stored = status.clone();
        for pod in &pods {
            if succeeded_uids.contains(&uid(pod)) || failed_uids.contains(&uid(pod)) {
                release(client, pod).await?;
            }
        }
    }
    let succeeded = status.succeeded.unwrap_or(0) + to_count(succeeded_uids.len());
    let failed = status.failed.unwrap_or(0) + to_count(failed_uids.len());
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());

    let active: Vec<&Pod> = pods.iter().filter(|pod| is_active(pod)).collect();
    let terminating = pods
        .iter()
        .filter(|pod| is_terminating(pod) && !is_terminal(pod))
        .count();
    status.active = Some(to_count(active.len()));
    status.ready = Some(to_count(active.iter().filter(|pod| is_ready(pod)).count()));
    status.terminating = Some(to_count(terminating));
    let suspended = spec.suspend == Some(true);
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(now());
    }

    let finished = condition_true(&status, "Complete") || condition_true(&status, "Failed");
    if finished {
        forget_failures(&context, &owner.uid);
    }
    let mut requeue = None;
    if !finished {
        requeue = decide(&job, &mut status, &context, &active, &owner).await?;
        // A verdict is final once no pod of the Job is left running.
        if active.is_empty() && terminating == 0 {
            if let Some(reason) = target_reason(&status, "FailureTarget") {
                add_condition(&mut status, "Failed", &reason.0, &reason.1);
            } else if condition_true(&status, "SuccessCriteriaMet") {
                add_condition(
                    &mut status,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
                status.completion_time = Some(now());
            }
        }
    }
    write_status(&jobs, &name, Some(&stored), &status).await?;

    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn target_reason(status: &JobStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Judges an unfinished Job (deadline, backoff limit, completions) and starts or stops pods.
/// Returns when to look again if time alone can change the verdict.
async fn decide(
    job: &Job,
    status: &mut JobStatus,
    context: &Context,
    active: &[&Pod],
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Option<Duration>, ReconcileError> {
    let client = &context.client;
    let Some(spec) = job.spec.as_ref() else {
        return Ok(None);
    };
    if spec.suspend == Some(true) {
        // A suspended Job runs nothing and its deadline clock stops.
        set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended");
        for pod in active {
            delete_pod(client, pod).await?;
        }
        return Ok(None);
    }
    if condition_true(status, "Suspended") {
        set_condition(status, "Suspended", "False", "JobResumed", "Job resumed");
        status.start_time = Some(now());
    }
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let mut requeue = None;
    if target_reason(status, "FailureTarget").is_none() {
        let elapsed = status
            .start_time
            .as_ref()
            .map(|t| jiff::Timestamp::now().as_second() - t.0.as_second());
        if let (Some(deadline), Some(elapsed)) = (spec.active_deadline_seconds, elapsed) {
            if elapsed >= deadline {
                add_condition(
                    status,
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                );
            } else {
                requeue = Some(Duration::from_secs((deadline - elapsed).unsigned_abs()));
            }
        }
        if failed > spec.backoff_limit.unwrap_or(6) {
            add_condition(
                status,
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            );
        }
    }
    let complete = match spec.completions {
        Some(completions) => succeeded >= completions,
        None => succeeded > 0 && active.is_empty(),
    };
    if complete && target_reason(status, "FailureTarget").is_none() {
        add_condition(
            status,
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
    }
    let finishing = target_reason(status, "FailureTarget").is_some()
        || condition_true(status, "SuccessCriteriaMet");
    if finishing {
        for pod in active {
            delete_pod(client, pod).await?;
        }
        return Ok(None);
    }

    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let wanted = match spec.completions {
        Some(completions) => parallelism.min(completions - succeeded),
        None if succeeded > 0 => 0,
        None => parallelism,
    };
    let missing = usize::try_from(wanted)
        .unwrap_or(0)
        .saturating_sub(active.len());
    if missing == 0 {
        return Ok(requeue);
    }
    if failed > 0 {
        let exponent = u32::try_from(failed - 1).unwrap_or(0).min(16);
        let delay = context
            .options
            .job_backoff
            .saturating_mul(1 << exponent)
            .min(MAX_BACKOFF);
        let since = context
            .job_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&owner.uid)
            .map(|at| at.elapsed());
        if let Some(since) = since
            && since < delay
        {
            let wait = delay - since;
            return Ok(Some(requeue.map_or(wait, |r: Duration| r.min(wait))));
        }
    }
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let mut pod = pod_from_template(&spec.template, owner.clone(), &namespace);
    pod.metadata.generate_name = Some(format!("{name}-"));
    pod.metadata.labels = Some(with_labels(
        pod.metadata.labels.as_ref(),
        &[
            (JOB_NAME_LABEL, &name),
            ("job-name", &name),
            (CONTROLLER_UID_LABEL, &owner.uid),
            ("controller-uid", &owner.uid),
        ],
    ));
    pod.metadata.finalizers = Some(vec![TRACKING_FINALIZER.to_string()]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    for _ in 0..missing {
        pods.create(&PostParams::default(), &pod).await?;
    }
    Ok(requeue)
}

/// Releases the tracking finalizer of pods whose Job is gone, so that they can be deleted.
pub(super) async fn release_orphans(client: Client, shutdown: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().labels(JOB_NAME_LABEL);
    let stream = watcher(pods, config)
        .default_backoff()
        .applied_objects()
        .take_until(shutdown.cancelled_owned());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let Ok(pod) = event else {
            continue;
        };
        if !has_finalizer(&pod) {
            continue;
        }
        let Some(owner) = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Job")
            .cloned()
        else {
            continue;
        };
        let jobs: Api<Job> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let job_alive = match jobs.get_opt(&owner.name).await {
            Ok(Some(job)) => job.metadata.uid.as_deref() == Some(owner.uid.as_str()),
            Ok(None) => false,
            // Unknown: keep the finalizer rather than risk losing count.
            Err(_) => true,
        };
        if !job_alive && let Err(error) = release(&client, &pod).await {
            tracing::warn!(pod = pod.name_any(), %error, "cannot release an orphaned Job pod");
        }
    }
}
