//! The backup_request controller: starts a Job running `tusk backup run` for each
//! PostgresBackupRequest, follows it, and makes sure the request ends as Succeeded or Failed
//! with a reason. A request never stays Running forever: a failed Job fails it, a Job that
//! reports no progress for `backupJob.stallTimeout` is stopped and fails it, and the Job's
//! `activeDeadlineSeconds` is a backstop for when the operator itself is down.
//!
//! The Job writes the request's progress and reports what it stored; this controller writes
//! Pending (with the Job's name), checks the report against the object store and records the
//! PostgresBackup (see [`record`]), writes Succeeded or Failed, and publishes BackupStarted,
//! BackupSucceeded and BackupFailed. Each Job runs under its own ServiceAccount, whose Role
//! names its request alone.

pub mod build;
pub mod follow;
pub mod record;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::backup_request::{BackupRequestPhase, BackupResult};
use tusk_api::common::TriggeredBy;
use tusk_api::{
    PostgresBackup, PostgresBackupRequest, PostgresBackupSchedule, PostgresCluster,
    labels as api_labels, names,
};

use crate::context::Context;
use crate::error::{Error, Result, is_not_found};
use crate::events::{self, reasons};
use crate::ssa;
use follow::Verdict;

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "backup-request";

/// Set on a finished request once its BackupSucceeded or BackupFailed Event was published, so
/// that the Event is published once.
pub const OUTCOME_REPORTED_ANNOTATION: &str = "postgres.tusk.dev/outcome-reported";

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    Controller::new(
        Api::<PostgresBackupRequest>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(api_labels::BACKUP_REQUEST),
    )
    .reconcile_all_on(context.clock.jumps())
    .with_config(Config::default().concurrency(context.config.concurrency.backup_request))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn error_policy(
    request: Arc<PostgresBackupRequest>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    tracing::warn!(request = %request.name_any(), namespace = ?request.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(15))
}

fn forget_progress(context: &Context, request: &PostgresBackupRequest) {
    if let Some(uid) = request.uid() {
        context
            .backup_progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&uid);
    }
}

async fn reconcile(request: Arc<PostgresBackupRequest>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    if request.meta().deletion_timestamp.is_some() {
        forget_progress(&context, &request);
        return Ok(Action::await_change());
    }
    let namespace = request.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresBackupRequest",
        field: "namespace",
    })?;
    let name = request.name_any();
    let client = &context.client;
    let phase = request.status.as_ref().and_then(|status| status.phase);
    if phase.is_some_and(BackupRequestPhase::is_finished) {
        forget_progress(&context, &request);
        report_outcome(&context, &request, &namespace).await?;
        return Ok(
            match upload::abort_leftover(&context, &request, &namespace).await? {
                upload::Cleanup::Done => Action::await_change(),
                upload::Cleanup::WaitForPods(after) => Action::requeue(after),
            },
        );
    }

    if let Some(result) = request
        .status
        .as_ref()
        .and_then(|status| status.result.clone())
    {
        finish(&context, &request, &result, &namespace).await?;
        return Ok(Action::await_change());
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let job_name = names::backup_job(&name);
    let job = jobs.get_opt(&job_name).await.map_err(|source| Error::Get {
        kind: "Job",
        name: job_name.clone(),
        source,
    })?;
    let pods = match &job {
        Some(_) => {
            Api::<Pod>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await
                .map_err(|source| Error::List {
                    kind: "Pod",
                    source,
                })?
                .items
        }
        None => Vec::new(),
    };
    let now = context.clock.now();
    let bytes_done = request
        .status
        .as_ref()
        .and_then(|status| status.progress.as_ref())
        .map_or(-1, |progress| progress.bytes_done);
    let mark = {
        let mut marks = context
            .backup_progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let uid = request.uid().unwrap_or_default();
        let mark = follow::next_mark(marks.get(&uid), bytes_done, now);
        marks.insert(uid, mark.clone());
        mark
    };
    let stall_timeout = context.config.backup_job.stall_timeout;

    match follow::decide(&request, job.as_ref(), &pods, &mark, now, stall_timeout) {
        Verdict::StartJob => start_job(&context, &request, &namespace).await,
        Verdict::Wait(after) => Ok(Action::requeue(after.max(Duration::from_secs(1)))),
        Verdict::Fail {
            message,
            delete_job,
        } => {
            if delete_job {
                match jobs
                    .delete(
                        &job_name,
                        &DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Background),
                            ..DeleteParams::default()
                        },
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(error) if is_not_found(&error) => {}
                    Err(source) => {
                        return Err(Error::Delete {
                            kind: "Job",
                            name: job_name,
                            source,
                        });
                    }
                }
            }
            fail(&context, &request, &namespace, &message).await?;
            Ok(Action::await_change())
        }
        Verdict::ConfirmOutcome => {
            // The program reports its result just before it exits; the watch may have
            // shown the Job's completion first, so read the request itself.
            let api: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), &namespace);
            let fresh = api.get(&name).await.map_err(|source| Error::Get {
                kind: "PostgresBackupRequest",
                name: name.clone(),
                source,
            })?;
            let fresh_status = fresh.status.clone().unwrap_or_default();
            if fresh_status
                .phase
                .is_some_and(BackupRequestPhase::is_finished)
            {
                report_outcome(&context, &fresh, &namespace).await?;
            } else if let Some(result) = &fresh_status.result {
                finish(&context, &fresh, result, &namespace).await?;
            } else {
                fail(
                    &context,
                    &fresh,
                    &namespace,
                    "The backup Job exited without reporting success; see its logs",
                )
                .await?;
            }
            Ok(Action::await_change())
        }
    }
}

/// The PostgresCluster `request` names, in its namespace, if it exists.
async fn requested_cluster(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<Option<PostgresCluster>> {
    let cluster_name = &request.spec.cluster.name;
    Api::<PostgresCluster>::namespaced(context.client.clone(), namespace)
        .get_opt(cluster_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresCluster",
            name: cluster_name.clone(),
            source,
        })
}

async fn start_job(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<Action> {
    let client = &context.client;
    let cluster_name = &request.spec.cluster.name;
    let Some(cluster) = requested_cluster(context, request, namespace).await? else {
        fail(
            context,
            request,
            namespace,
            &format!("PostgresCluster {cluster_name} does not exist in this namespace"),
        )
        .await?;
        return Ok(Action::await_change());
    };

    // A request's PostgresBackup carries its name: refuse a name that one already has before
    // spending a backup on it (recording checks again, in case one appears meanwhile).
    let backups: Api<PostgresBackup> = Api::namespaced(client.clone(), namespace);
    let request_name = request.name_any();
    if backups
        .get_opt(&request_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresBackup",
            name: request_name.clone(),
            source,
        })?
        .is_some()
    {
        fail(
            context,
            request,
            namespace,
            &format!(
                "A PostgresBackup named {request_name} already exists; request a backup under a name no PostgresBackup has"
            ),
        )
        .await?;
        return Ok(Action::await_change());
    }

    adopt(context, request, &cluster, namespace).await?;
    // Said before the Job exists: once it does, its program reports Running on its own, and a
    // message written after that would put "waiting" on a backup that is under way.
    let mut waiting = json!({
        "message": "Waiting for the backup Job to start",
        "observedGeneration": request.metadata.generation,
    });
    if request
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .is_none()
    {
        waiting["phase"] = json!(BackupRequestPhase::Pending);
    }
    patch_status(context, request, namespace, waiting).await?;
    let (service_account, role, binding) = build::rbac(request)?;
    ssa::apply(
        &Api::namespaced(client.clone(), namespace),
        CONTROLLER,
        &service_account,
    )
    .await?;
    ssa::apply(
        &Api::namespaced(client.clone(), namespace),
        CONTROLLER,
        &role,
    )
    .await?;
    ssa::apply(
        &Api::namespaced(client.clone(), namespace),
        CONTROLLER,
        &binding,
    )
    .await?;
    let job = build::job(request, &cluster, &context.config)?;
    let job_name = job.name_any();
    match ssa::apply(
        &Api::<Job>::namespaced(client.clone(), namespace),
        CONTROLLER,
        &job,
    )
    .await
    {
        Ok(_) => {}
        // The API server refused the Job itself (invalid, forbidden by policy, over quota):
        // retrying cannot help, and the request must say why rather than wait forever.
        Err(Error::ApplyChild {
            source: kube::Error::Api(status),
            ..
        }) if (400..500).contains(&status.code) && status.code != 409 && status.code != 429 => {
            fail(
                context,
                request,
                namespace,
                &format!(
                    "The API server refused the backup Job {job_name}: {}",
                    status.message
                ),
            )
            .await?;
            return Ok(Action::await_change());
        }
        Err(error) => return Err(error),
    }

    patch_status(context, request, namespace, json!({ "jobName": job_name })).await?;
    events::publish(
        &context.recorder,
        &request.object_ref(&()),
        EventType::Normal,
        reasons::BACKUP_STARTED,
        "StartBackupJob",
        format!("Started Job {job_name} to back up cluster {cluster_name}"),
    )
    .await;
    Ok(Action::requeue(context.config.backup_job.stall_timeout))
}

/// Who asked for a backup. A customer can write anything into a request, so the answer comes
/// from what only tusk writes: a request is the system's when the cluster's own daily schedule
/// (whose spec tusk forces) names it as its latest request in its status, which customers
/// cannot write. Decided when the backup is recorded: a schedule starts no new request while
/// one of its own is unfinished, so it still names its request then.
async fn origin(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<TriggeredBy> {
    let schedule_name = names::default_schedule(&request.spec.cluster.name);
    let schedules: Api<PostgresBackupSchedule> = Api::namespaced(context.client.clone(), namespace);
    let schedule = schedules
        .get_opt(&schedule_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresBackupSchedule",
            name: schedule_name.clone(),
            source,
        })?;
    let named_by_system_schedule = schedule.is_some_and(|schedule| {
        schedule
            .status
            .as_ref()
            .and_then(|status| status.last_request.as_deref())
            == Some(request.name_any().as_str())
    });
    Ok(if named_by_system_schedule {
        TriggeredBy::System
    } else {
        TriggeredBy::User
    })
}

/// Records a finished backup (see [`record`]) and ends the request accordingly.
async fn finish(
    context: &Context,
    request: &PostgresBackupRequest,
    result: &BackupResult,
    namespace: &str,
) -> Result<()> {
    let triggered_by = origin(context, request, namespace).await?;
    match record::record(context, request, result, triggered_by, namespace).await? {
        record::Recorded::Succeeded(backup_name) => {
            patch_status(
                context,
                request,
                namespace,
                json!({
                    "triggeredBy": triggered_by,
                    "phase": BackupRequestPhase::Succeeded,
                    "finishedAt": Time(context.clock.now()),
                    "backupName": backup_name,
                    "message": format!("Backup {backup_name} is complete and checked"),
                }),
            )
            .await?;
            forget_progress(context, request);
            let mut succeeded = request.clone();
            let status = succeeded.status.get_or_insert_with(Default::default);
            status.phase = Some(BackupRequestPhase::Succeeded);
            status.backup_name = Some(backup_name);
            report_outcome(context, &succeeded, namespace).await
        }
        record::Recorded::Failed(message) => {
            events::publish(
                &context.recorder,
                &request.object_ref(&()),
                EventType::Warning,
                reasons::BACKUP_UNVERIFIED,
                "RecordBackup",
                message.clone(),
            )
            .await;
            fail(context, request, namespace, &message).await
        }
    }
}

/// A request made by a person has no owner; it gets the cluster as its owner, like the
/// schedule's requests, so that deleting the cluster deletes it too.
async fn adopt(
    context: &Context,
    request: &PostgresBackupRequest,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<()> {
    let owned = request
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true));
    let Some(owner) = cluster.controller_owner_ref(&()) else {
        return Ok(());
    };
    if owned {
        return Ok(());
    }
    let mut owners = request.owner_references().to_vec();
    owners.push(owner);
    let api: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), namespace);
    api.patch(
        &request.name_any(),
        &PatchParams {
            field_manager: Some(ssa::field_manager(CONTROLLER)),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"metadata": {"ownerReferences": owners}})),
    )
    .await
    .map_err(|source| Error::Patch {
        kind: "PostgresBackupRequest",
        name: request.name_any(),
        source,
    })?;
    Ok(())
}

async fn patch_status(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
    status: serde_json::Value,
) -> Result<()> {
    let api: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), namespace);
    api.patch_status(
        &request.name_any(),
        &PatchParams {
            field_manager: Some(ssa::field_manager(CONTROLLER)),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "PostgresBackupRequest",
        name: request.name_any(),
        source,
    })?;
    Ok(())
}

async fn fail(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
    message: &str,
) -> Result<()> {
    patch_status(
        context,
        request,
        namespace,
        json!({
            "phase": BackupRequestPhase::Failed,
            "message": message,
            "finishedAt": Time(context.clock.now()),
        }),
    )
    .await?;
    forget_progress(context, request);
    let mut failed = request.clone();
    let status = failed.status.get_or_insert_with(Default::default);
    status.phase = Some(BackupRequestPhase::Failed);
    status.message = Some(message.to_owned());
    report_outcome(context, &failed, namespace).await
}

/// Shortens the TTL of a succeeded request's Job from `backupJob.failedTtl`, which it started
/// with, to `backupJob.succeededTtl`: its outcome is recorded in the request, and its logs are
/// no longer needed for long.
async fn keep_job_for_success(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    let job_name = names::backup_job(&request.name_any());
    let Some(job) = jobs.get_opt(&job_name).await.map_err(|source| Error::Get {
        kind: "Job",
        name: job_name.clone(),
        source,
    })?
    else {
        return Ok(());
    };
    let ttl = context.config.backup_job.succeeded_ttl_seconds();
    let ours = job
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && Some(&owner.uid) == request.uid().as_ref());
    let current = job
        .spec
        .as_ref()
        .and_then(|spec| spec.ttl_seconds_after_finished);
    if !ours || current.is_some_and(|current| current <= ttl) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"resourceVersion": job.resource_version()},
        "spec": {"ttlSecondsAfterFinished": ttl},
    });
    merge_patch_if_present(&jobs, "Job", &job_name, &patch).await
}

/// Publishes BackupSucceeded or BackupFailed once per request.
async fn report_outcome(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<()> {
    if request
        .annotations()
        .contains_key(OUTCOME_REPORTED_ANNOTATION)
    {
        return Ok(());
    }
    let status = request.status.clone().unwrap_or_default();
    if status.phase == Some(BackupRequestPhase::Succeeded) {
        keep_job_for_success(context, request, namespace).await?;
    }
    let (type_, reason, note, outcome) = match status.phase {
        Some(BackupRequestPhase::Succeeded) => (
            EventType::Normal,
            reasons::BACKUP_SUCCEEDED,
            format!(
                "Backup of cluster {} stored as PostgresBackup {}",
                request.spec.cluster.name,
                status.backup_name.as_deref().unwrap_or("(unnamed)")
            ),
            "Succeeded",
        ),
        Some(BackupRequestPhase::Failed) => (
            EventType::Warning,
            reasons::BACKUP_FAILED,
            status
                .message
                .clone()
                .unwrap_or_else(|| "The backup failed".to_owned()),
            "Failed",
        ),
        _ => return Ok(()),
    };
    events::publish(
        &context.recorder,
        &request.object_ref(&()),
        type_,
        reason,
        "FollowBackupJob",
        note,
    )
    .await;
    let api: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {OUTCOME_REPORTED_ANNOTATION: outcome}}});
    merge_patch_if_present(&api, "PostgresBackupRequest", &request.name_any(), &patch).await
}

/// Merge-patches an object as this controller; an object that is gone needs no patch.
async fn merge_patch_if_present<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams {
        field_manager: Some(ssa::field_manager(CONTROLLER)),
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(source) => Err(Error::Patch {
            kind,
            name: name.to_owned(),
            source,
        }),
    }
}
