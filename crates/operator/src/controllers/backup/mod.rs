//! The backup controller: keeps the finalizer `postgresbackup.postgres.tusk.dev/s3` on every
//! PostgresBackup, and on deletion removes the backup's data from the object store, then the
//! WAL no remaining backup of the cluster needs, before letting the object go.
//!
//! A backup whose deletionPolicy is Retain keeps its data, and its deletion deletes no WAL.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tusk_api::PostgresBackup;
use tusk_api::backup::DeletionPolicy;
use tusk_api::finalizers::BACKUP_STORAGE;
use tusk_backup::wal::{self, BackupPosition};

use crate::context::Context;
use crate::error::{Error, Result};
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
    finalizer(&api, BACKUP_STORAGE, backup, |event| async {
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
    .await
    .map_err(Error::from)
}

async fn cleanup(backup: &PostgresBackup, context: &Context, namespace: &str) -> Result<Action> {
    let name = backup.name_any();
    let reference = backup.object_ref(&());
    if backup.spec.deletion_policy == DeletionPolicy::Retain {
        events::publish(
            &context.recorder,
            &reference,
            EventType::Normal,
            reasons::FINALIZER,
            "DeleteBackupData",
            format!(
                "Keeping the data of backup {name} in S3 (deletionPolicy Retain): {}",
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
        format!("Deleting backup {name} from S3"),
    )
    .await;
    let store = store::open(backup, context).await?;
    store
        .delete_object(&backup.spec.s3.path)
        .await
        .map_err(|error| Error::StoreDelete(error.to_string()))?;

    let wal_cleanup_done = match store::wal_prefix_of(&backup.spec.s3.path) {
        Some(wal_prefix) => {
            let remaining = remaining_positions(backup, context, namespace).await?;
            let report = wal::cleanup(&store, &wal_prefix, &remaining)
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
            true
        }
        None => false,
    };
    if wal_cleanup_done {
        let api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
        api.patch_status(
            &name,
            &PatchParams {
                field_manager: Some(ssa::field_manager(CONTROLLER)),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"status": {"walCleanupDone": true}})),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            kind: "PostgresBackup",
            name,
            source,
        })?;
    }
    Ok(Action::await_change())
}

/// Where every other backup of the same cluster that is staying starts in the WAL.
async fn remaining_positions(
    backup: &PostgresBackup,
    context: &Context,
    namespace: &str,
) -> Result<Vec<BackupPosition>> {
    let api: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
    let backups = api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackup",
            source,
        })?;
    Ok(backups
        .into_iter()
        .filter(|other| {
            other.spec.cluster.name == backup.spec.cluster.name
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
        .collect())
}
