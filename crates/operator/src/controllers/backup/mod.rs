//! The backup controller: keeps the finalizer `postgresbackup.postgres.tusk.dev/s3` on every
//! PostgresBackup, and on deletion removes the backup's data from the object store, then the
//! WAL no remaining backup of the cluster needs, before letting the object go.
//!
//! Only data at exactly the location tusk writes for the backup's cluster is deleted, in the
//! configured store: a PostgresBackup naming anything else goes with a Warning Event and
//! without a single request to any store. A backup whose deletionPolicy is Retain keeps its
//! data, and its deletion deletes no WAL; neither does a deletion while a backup of the same
//! cluster is in flight, nor one that would leave a live cluster without any archive.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Error as FinalizerError, Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::backup::DeletionPolicy;
use tusk_api::backup_request::BackupRequestPhase;
use tusk_api::finalizers::BACKUP_STORAGE;
use tusk_api::{PostgresBackup, PostgresBackupRequest, PostgresCluster, names};
use tusk_backup::wal::{self, BackupPosition};

use crate::context::Context;
use crate::error::{Error, Result, is_not_found};
use crate::events::{self, reasons};
use crate::ssa;

/// The controller's name, in metrics and its field manager.
pub const CONTROLLER: &str = "backup";

/// Runs the controller until `shutdown` completes.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    Controller::new(
        Api::<PostgresBackup>::all(client),
        watcher::Config::default(),
    )
    .with_config(Config::default().concurrency(context.config.concurrency.backup))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|_| futures::future::ready(()))
    .await;
}

fn error_policy(backup: Arc<PostgresBackup>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(backup = %backup.name_any(), namespace = ?backup.namespace(), %error, "reconcile failed");
    context.metrics.reconcile_failed(CONTROLLER, error);
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(backup: Arc<PostgresBackup>, context: Arc<Context>) -> Result<Action> {
    let _timer = context.metrics.reconcile_started(CONTROLLER);
    let namespace = backup.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresBackup",
        field: "namespace",
    })?;
    let api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), &namespace);
    // The watch may still show a backup whose cleanup has finished and which is gone: act on
    // the stored object, so that a finished deletion is neither repeated nor reported as a
    // failure.
    if backup.meta().deletion_timestamp.is_some() {
        let stored = api
            .get_opt(&backup.name_any())
            .await
            .map_err(|source| Error::Get {
                kind: "PostgresBackup",
                name: backup.name_any(),
                source,
            })?;
        if stored.is_none_or(|stored| stored.uid() != backup.uid()) {
            return Ok(Action::await_change());
        }
    }
    let outcome = finalizer(&api, BACKUP_STORAGE, backup, |event| async {
        match event {
            // Nothing to keep in step while the backup exists; the finalizer is the point.
            FinalizerEvent::Apply(_) => Ok(Action::await_change()),
            FinalizerEvent::Cleanup(backup) => {
                let result = cleanup(&backup, &context, &namespace).await;
                if let Err(error) = &result {
                    events::publish(
                        &context.recorder,
                        &backup.object_ref(&()),
                        EventType::Warning,
                        reasons::ERROR,
                        "DeleteBackupData",
                        error.to_string(),
                    )
                    .await;
                }
                result
            }
        }
    })
    .await;
    match outcome {
        // The backup went between the read above and the finalizer's removal: its cleanup is
        // done all the same.
        Err(FinalizerError::RemoveFinalizer(error)) if is_not_found(&error) => {
            Ok(Action::await_change())
        }
        other => other.map_err(Error::from),
    }
}

async fn cleanup(backup: &PostgresBackup, context: &Context, namespace: &str) -> Result<Action> {
    let name = backup.name_any();
    let reference = backup.object_ref(&());
    let store = store::open(context).await?;
    // Only a location exactly where tusk writes this cluster's backups is ever deleted. A
    // PostgresBackup that names anything else (another tenant's prefix, another bucket, another
    // endpoint) goes without tusk touching the store at all.
    let cluster_prefix = match store::check_location(backup, &store) {
        Ok(prefix) => prefix,
        Err(reason) => {
            events::publish(
                &context.recorder,
                &reference,
                EventType::Warning,
                reasons::LOCATION_MISMATCH,
                "DeleteBackupData",
                format!("Deleted no data: {reason}"),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    if backup.spec.deletion_policy == DeletionPolicy::Retain {
        events::publish(
            &context.recorder,
            &reference,
            EventType::Normal,
            reasons::FINALIZER,
            "DeleteBackupData",
            format!(
                "Keeping the data of backup {name} in the object store (deletionPolicy Retain): {}",
                backup.spec.s3.path
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    events::publish(
        &context.recorder,
        &reference,
        EventType::Normal,
        reasons::FINALIZER,
        "DeleteBackupData",
        format!("Deleting backup {name} from the object store"),
    )
    .await;
    store
        .delete_object(&backup.spec.s3.path)
        .await
        .map_err(|error| Error::StoreDelete(error.to_string()))?;
    events::publish(
        &context.recorder,
        &reference,
        EventType::Normal,
        reasons::BACKUP_DATA_DELETED,
        "DeleteBackupData",
        format!(
            "Deleted backup {name} from the object store: {}",
            backup.spec.s3.path
        ),
    )
    .await;

    let wal_prefix = names::wal_prefix(&cluster_prefix);
    let keep = match wal_to_keep(backup, context, namespace).await? {
        WalToKeep::Everything(why) => {
            events::publish(
                &context.recorder,
                &reference,
                EventType::Normal,
                reasons::FINALIZER,
                "DeleteWal",
                format!(
                    "Kept the archived WAL of cluster {}: {why}",
                    backup.spec.cluster.name
                ),
            )
            .await;
            return Ok(Action::await_change());
        }
        WalToKeep::From(positions) => positions,
    };
    let report = wal::cleanup(&store, &wal_prefix, &keep)
        .await
        .map_err(|error| Error::WalCleanup(error.to_string()))?;
    events::publish(
        &context.recorder,
        &reference,
        EventType::Normal,
        reasons::FINALIZER,
        "DeleteWal",
        format!(
            "Deleted {} archived WAL files no remaining backup of cluster {} needs; kept {}",
            report.deleted, backup.spec.cluster.name, report.kept
        ),
    )
    .await;
    let api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
    match api
        .patch_status(
            &name,
            &PatchParams {
                field_manager: Some(ssa::field_manager(CONTROLLER)),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"status": {"walCleanupDone": true}})),
        )
        .await
    {
        Ok(_) => {}
        // Gone already: the cleanup it records has happened all the same.
        Err(error) if is_not_found(&error) => {}
        Err(source) => {
            return Err(Error::PatchStatus {
                kind: "PostgresBackup",
                name,
                source,
            });
        }
    }
    Ok(Action::await_change())
}

/// Which archived WAL a deletion must keep.
enum WalToKeep {
    /// Keep it all, for this reason.
    Everything(String),
    /// Keep what any of these backups needs, and everything newer than the oldest of them.
    From(Vec<BackupPosition>),
}

/// What WAL the cluster still needs once `backup` is gone. A backup in flight needs WAL from a
/// start it has not recorded yet, and a live cluster with no backup left will need its archive
/// for the next one: in both cases nothing is deleted now; a later deletion trims it.
async fn wal_to_keep(
    backup: &PostgresBackup,
    context: &Context,
    namespace: &str,
) -> Result<WalToKeep> {
    let cluster_uid = store::owning_cluster_uid(backup);
    let requests: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), namespace);
    let in_flight = requests
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackupRequest",
            source,
        })?
        .into_iter()
        .any(|request| {
            request.spec.cluster.name == backup.spec.cluster.name
                && request.metadata.deletion_timestamp.is_none()
                && !request
                    .status
                    .as_ref()
                    .and_then(|status| status.phase)
                    .is_some_and(BackupRequestPhase::is_finished)
        });
    if in_flight {
        return Ok(WalToKeep::Everything(
            "a backup of it is in progress and needs the WAL from its start".to_owned(),
        ));
    }
    let api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
    let backups = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackup",
            source,
        })?;
    let remaining: Vec<BackupPosition> = backups
        .into_iter()
        .filter(|other| {
            other.spec.cluster.name == backup.spec.cluster.name
                && store::owning_cluster_uid(other) == cluster_uid
                && other.uid() != backup.uid()
                && other.metadata.deletion_timestamp.is_none()
        })
        .map(|other| BackupPosition {
            timeline: other
                .spec
                .timeline
                .and_then(|timeline| u32::try_from(timeline).ok())
                .unwrap_or(1),
            // An unknown start keeps all WAL: the cleanup refuses to guess.
            start_lsn: other.spec.start_lsn.clone().unwrap_or_default(),
        })
        .collect();
    if remaining.is_empty() {
        let clusters: Api<PostgresCluster> = Api::namespaced(context.client.clone(), namespace);
        let live = clusters
            .get_opt(&backup.spec.cluster.name)
            .await
            .map_err(|source| Error::Get {
                kind: "PostgresCluster",
                name: backup.spec.cluster.name.clone(),
                source,
            })?
            .is_some_and(|cluster| {
                cluster.metadata.deletion_timestamp.is_none() && cluster.uid() == cluster_uid
            });
        if live {
            return Ok(WalToKeep::Everything(
                "no other backup remains, and the cluster's next backup will start from it"
                    .to_owned(),
            ));
        }
    }
    Ok(WalToKeep::From(remaining))
}
