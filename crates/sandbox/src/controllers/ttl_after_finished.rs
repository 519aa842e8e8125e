//! The TTL-after-finished controller: deletes a Job `ttlSecondsAfterFinished` seconds after it
//! reached Complete or Failed, as kube-controller-manager's `ttl-after-finished-controller`
//! does.
//!
//! Like the real one, it measures from the `lastTransitionTime` of the Complete or Failed
//! condition, reads the Job afresh before deleting it (its TTL may have been changed since the
//! cached copy), and deletes it with foreground propagation and a uid precondition, so that its
//! pods go first and a namesake created meanwhile is never touched.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::{Context, ReconcileError};

pub(super) fn controller(client: &Client) -> Controller<Job> {
    Controller::new(Api::all(client.clone()), watcher::Config::default())
}

/// When the Job finished (its Complete or Failed condition turned True), in seconds since the
/// epoch.
fn finished_at(job: &Job) -> Option<i64> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.as_second())
}

/// How long until the Job expires: `None` when it never does (no TTL, not finished, or already
/// being deleted), zero or less once it has.
fn seconds_left(job: &Job) -> Option<i64> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let expires = finished_at(job)? + i64::from(ttl);
    Some(expires - jiff::Timestamp::now().as_second())
}

pub(super) async fn reconcile(
    job: Arc<Job>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    match seconds_left(&job) {
        None => return Ok(Action::await_change()),
        Some(left) if left > 0 => {
            return Ok(Action::requeue(Duration::from_secs(left.unsigned_abs())));
        }
        Some(_) => {}
    }
    // The cached Job may be stale: decide on the stored one.
    let jobs: Api<Job> =
        Api::namespaced(context.client.clone(), &job.namespace().unwrap_or_default());
    let Some(fresh) = jobs.get_opt(&job.name_any()).await? else {
        return Ok(Action::await_change());
    };
    match seconds_left(&fresh) {
        None => return Ok(Action::await_change()),
        Some(left) if left > 0 => {
            return Ok(Action::requeue(Duration::from_secs(left.unsigned_abs())));
        }
        Some(_) => {}
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match jobs.delete(&fresh.name_any(), &params).await {
        Ok(_) => {}
        // Gone already, or replaced by a namesake that this verdict is not about.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(Action::await_change())
}
