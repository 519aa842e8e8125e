//! The backup_schedule controller: creates a PostgresBackupRequest when a schedule is due,
//! never a second one while one of its requests is still running, and deletes its oldest
//! backups beyond `keep`.
//!
//! It never polls: each reconcile requeues exactly until the next due time, and a finished
//! request of the schedule wakes it (so a run skipped because one was still running happens as
//! soon as that one ends). Time comes from the context's [`Clock`](crate::clock::Clock).

pub mod retention;
pub mod timing;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::backup_schedule::PostgresBackupScheduleStatus;
use tusk_api::conditions::{FALSE, TRUE, reasons as condition_reasons, types};
use tusk_api::{
    PostgresBackup, PostgresBackupRequest, PostgresBackupRequestSpec, PostgresBackupSchedule,
    PostgresCluster, labels as api_labels, names,
};

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::error::{Error, Result, is_not_found};
use crate::events::{self, reasons};
use crate::labels::{self, COMPONENT_BACKUP};

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "backup-schedule";

/// The annotation on a request holding the moment (by the operator's clock) its schedule ran.
pub const SCHEDULED_AT_ANNOTATION: &str = "postgres.tusk.dev/scheduled-at";

/// The annotation on a request holding its schedule's whole name: the schedule label holds it
/// shortened with a hash when it is longer than a label value may be.
pub const SCHEDULE_ANNOTATION: &str = "postgres.tusk.dev/schedule";

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    Controller::new(
        Api::<PostgresBackupSchedule>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PostgresBackupRequest>::all(client.clone()),
        watcher::Config::default().labels(api_labels::SCHEDULE),
        |request| {
            let schedule = request
                .annotations()
                .get(SCHEDULE_ANNOTATION)
                .or_else(|| request.labels().get(api_labels::SCHEDULE))?
                .clone();
            Some(ObjectRef::new(&schedule).within(&request.namespace()?))
        },
    )
    .reconcile_all_on(context.clock.jumps())
    .with_config(Config::default().concurrency(context.config.concurrency.backup_schedule))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn error_policy(
    schedule: Arc<PostgresBackupSchedule>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    tracing::warn!(schedule = %schedule.name_any(), namespace = ?schedule.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(30))
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now)).unwrap_or(Duration::ZERO)
}

async fn reconcile(schedule: Arc<PostgresBackupSchedule>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    if schedule.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = schedule.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresBackupSchedule",
        field: "namespace",
    })?;
    let name = schedule.name_any();
    let client = &context.client;
    let cluster_name = schedule.spec.cluster.name.clone();
    let now = context.clock.now();
    let previous = schedule.status.clone().unwrap_or_default();
    let mut status = PostgresBackupScheduleStatus {
        observed_generation: schedule.metadata.generation,
        ..previous.clone()
    };

    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), &namespace);
    let cluster = match clusters.get_opt(&cluster_name).await {
        Ok(cluster) => cluster,
        Err(source) => {
            return Err(Error::Get {
                kind: "PostgresCluster",
                name: cluster_name,
                source,
            });
        }
    };
    let Some(cluster) = cluster else {
        status.next_run_at = None;
        status.conditions = conditions::merge(
            &previous.conditions,
            &[DesiredCondition::new(
                types::INVALID_SPEC,
                TRUE,
                condition_reasons::INVALID_SPEC,
                format!("PostgresCluster {cluster_name} does not exist"),
            )],
            schedule.metadata.generation,
            now,
        );
        write_status(&context, &schedule, &namespace, &previous, status).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let cluster_uid = cluster.uid().unwrap_or_default();
    let created_at = schedule
        .metadata
        .creation_timestamp
        .clone()
        .map(|time| time.0)
        .unwrap_or(now);

    let requests_api: Api<PostgresBackupRequest> = Api::namespaced(client.clone(), &namespace);
    let selector = format!(
        "{}={},{}={cluster_name}",
        api_labels::SCHEDULE,
        names::label_value(&name),
        api_labels::CLUSTER
    );
    let requests = requests_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackupRequest",
            source,
        })?
        .items;
    // The last run is what the status says, or what the requests say if a status write was lost.
    let last_run_at = requests
        .iter()
        .filter_map(|request| request.annotations().get(SCHEDULED_AT_ANNOTATION))
        .filter_map(|text| text.parse::<Timestamp>().ok())
        .chain(previous.last_run_at.clone().map(|time| time.0))
        .max();

    let mut action = Action::await_change();
    if schedule.spec.suspend {
        status.next_run_at = None;
    } else {
        let mut next = match timing::next_run(&schedule.spec, created_at, last_run_at, &cluster_uid)
        {
            Ok(next) => next,
            Err(error) => {
                status.next_run_at = None;
                status.conditions = conditions::merge(
                    &previous.conditions,
                    &[DesiredCondition::new(
                        types::INVALID_SPEC,
                        TRUE,
                        condition_reasons::INVALID_SPEC,
                        error.to_string(),
                    )],
                    schedule.metadata.generation,
                    now,
                );
                write_status(&context, &schedule, &namespace, &previous, status).await?;
                return Ok(Action::await_change());
            }
        };
        let running = requests.iter().any(|request| {
            !request
                .status
                .as_ref()
                .and_then(|status| status.phase)
                .is_some_and(|phase| phase.is_finished())
        });
        if now >= next && !running {
            let request_name = timing::request_name(&cluster_name, &name, now);
            create_request(
                &context,
                &schedule,
                &cluster,
                &namespace,
                &request_name,
                now,
            )
            .await?;
            status.last_request = Some(request_name);
            status.last_run_at = Some(Time(now));
            next = timing::next_run(&schedule.spec, created_at, Some(now), &cluster_uid)?;
        }
        status.next_run_at = Some(Time(next));
        // While one runs, its end wakes this schedule; otherwise wake exactly when due.
        if !(now >= next && running) {
            action = Action::requeue(until(now, next).max(Duration::from_secs(1)));
        }
    }
    status.conditions = conditions::merge(
        &previous.conditions,
        &[DesiredCondition::new(
            types::INVALID_SPEC,
            FALSE,
            condition_reasons::RECONCILED,
            "The schedule is valid",
        )],
        schedule.metadata.generation,
        now,
    );

    if let Some(keep) = schedule.spec.keep {
        let request_names: Vec<String> = requests.iter().map(ResourceExt::name_any).collect();
        prune(
            &context,
            &schedule,
            &namespace,
            &cluster_name,
            &request_names,
            keep,
        )
        .await?;
    }
    write_status(&context, &schedule, &namespace, &previous, status).await?;
    Ok(action)
}

async fn create_request(
    context: &Context,
    schedule: &PostgresBackupSchedule,
    cluster: &PostgresCluster,
    namespace: &str,
    request_name: &str,
    now: Timestamp,
) -> Result<()> {
    let cluster_name = cluster.name_any();
    let mut request = PostgresBackupRequest::new(
        request_name,
        PostgresBackupRequestSpec {
            cluster: schedule.spec.cluster.clone(),
        },
    );
    let mut request_labels = labels::for_cluster(&cluster_name, COMPONENT_BACKUP);
    request_labels.insert(
        api_labels::SCHEDULE.to_owned(),
        names::label_value(&schedule.name_any()),
    );
    request.metadata.labels = Some(request_labels);
    request.metadata.annotations = Some(
        [
            (SCHEDULED_AT_ANNOTATION.to_owned(), now.to_string()),
            (SCHEDULE_ANNOTATION.to_owned(), schedule.name_any()),
        ]
        .into_iter()
        .collect(),
    );
    request.metadata.owner_references = cluster.controller_owner_ref(&()).map(|owner| vec![owner]);
    let api: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), namespace);
    match api.create(&PostParams::default(), &request).await {
        Ok(_) => {}
        // The same minute's request already exists: a retried reconcile.
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(source) => {
            return Err(Error::Create {
                kind: "PostgresBackupRequest",
                name: request_name.to_owned(),
                source,
            });
        }
    }
    events::publish(
        &context.recorder,
        &schedule.object_ref(&()),
        EventType::Normal,
        reasons::BACKUP_SCHEDULED,
        "CreateBackupRequest",
        format!("Created PostgresBackupRequest {request_name} for cluster {cluster_name}"),
    )
    .await;
    Ok(())
}

async fn prune(
    context: &Context,
    schedule: &PostgresBackupSchedule,
    namespace: &str,
    cluster: &str,
    request_names: &[String],
    keep: i32,
) -> Result<()> {
    let backups_api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
    let backups = backups_api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackup",
            source,
        })?
        .items
        .into_iter()
        .filter(|backup| {
            retention::belongs_to(backup, &schedule.name_any(), cluster, request_names)
        })
        .collect();
    let requests_api: Api<PostgresBackupRequest> =
        Api::namespaced(context.client.clone(), namespace);
    for backup in retention::beyond_keep(backups, usize::try_from(keep).unwrap_or(usize::MAX)) {
        let name = backup.name_any();
        match backups_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => continue,
            Err(source) => {
                return Err(Error::Delete {
                    kind: "PostgresBackup",
                    name,
                    source,
                });
            }
        }
        // The request that made it has served its purpose too.
        if request_names.contains(&name) {
            match requests_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(source) => {
                    return Err(Error::Delete {
                        kind: "PostgresBackupRequest",
                        name,
                        source,
                    });
                }
            }
        }
        events::publish(
            &context.recorder,
            &schedule.object_ref(&()),
            EventType::Normal,
            reasons::BACKUP_PRUNED,
            "DeleteBackup",
            format!("Deleted PostgresBackup {name}: the schedule keeps the newest {keep}"),
        )
        .await;
    }
    Ok(())
}

async fn write_status(
    context: &Context,
    schedule: &PostgresBackupSchedule,
    namespace: &str,
    previous: &PostgresBackupScheduleStatus,
    status: PostgresBackupScheduleStatus,
) -> Result<()> {
    if *previous == status && schedule.status.is_some() {
        return Ok(());
    }
    let api: Api<PostgresBackupSchedule> = Api::namespaced(context.client.clone(), namespace);
    // A merge patch would leave a cleared nextRunAt in place, so null it explicitly.
    let mut body = serde_json::to_value(&status).map_err(|source| Error::Serialize {
        kind: "PostgresBackupScheduleStatus",
        source,
    })?;
    if status.next_run_at.is_none() {
        body["nextRunAt"] = serde_json::Value::Null;
    }
    api.patch_status(
        &schedule.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": body })),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        kind: "PostgresBackupSchedule",
        name: schedule.name_any(),
        source,
    })?;
    Ok(())
}
