//! What deleting a PostgresCluster does outside Kubernetes: its finalizer removes every object
//! the cluster has in the store (base backups, the whole WAL archive, leftovers of backups that
//! were never recorded, unfinished uploads of backups in flight) before the cluster goes,
//! whether or not it ever had a backup. Backups
//! whose deletionPolicy is Retain keep their object and the WAL from their start on.
//!
//! The prefix names the cluster's uid, so a cluster re-created under the same name starts with
//! an empty archive even while this cleanup is still running or was blocked.
//!
//! The instances are stopped before anything is removed: a running PostgreSQL archives WAL
//! until it exits (a segment it finishes, the one a backup switched, what is still pending at
//! shutdown), and a segment stored after the sweep would stay in the store for good.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource as _, ResourceExt};
use serde_json::json;
use tusk_api::backup::DeletionPolicy;
use tusk_api::conditions::{TRUE, reasons as condition_reasons, types};
use tusk_api::{PostgresBackup, PostgresBackupRequest, PostgresCluster, names};
use tusk_backup::wal::{self, BackupPosition};

use crate::conditions::{self, DesiredCondition};
use crate::context::Context;
use crate::controllers::backup::store;
use crate::controllers::backup_request::upload;
use crate::error::{Error, Result};
use crate::events::{self, reasons};

/// How long one cleanup waits for the instances to stop: beyond the instance pod's 60-second
/// termination grace period, so only a pod its node never confirms gone blocks the deletion.
const INSTANCES_STOP_WAIT: Duration = Duration::from_secs(75);

/// Removes the cluster's objects from the store; an error keeps the finalizer (and so the
/// cluster) until a retry succeeds.
pub async fn cleanup(
    cluster: &PostgresCluster,
    context: &Context,
    reference: &ObjectReference,
) -> Result<()> {
    let namespace = cluster.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "namespace",
    })?;
    let uid = cluster.uid();
    stop_instances(context, &namespace, &cluster.name_any()).await?;
    // The CA goes next: it is in the operator's namespace, where no ownerReference reaches.
    if let Some(uid) = &uid {
        super::tls::delete_ca(&context.client, &context.config.tls.ca_namespace, uid).await?;
    }
    let store = store::open(context).await?;
    let prefix = store::prefix_of_cluster(&store, cluster)?;

    // Backups in flight write multipart uploads, which are not objects: listing and deleting
    // the prefix does not see them. Their requests (deleted after the cluster) record them.
    let requests: Api<PostgresBackupRequest> = Api::namespaced(context.client.clone(), &namespace);
    for request in requests
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackupRequest",
            source,
        })?
        .into_iter()
        .filter(|request| request.spec.cluster.name == cluster.name_any())
    {
        upload::abort_recorded(&store, &prefix, &request).await?;
    }

    let backups: Api<PostgresBackup> = Api::namespaced(context.client.clone(), &namespace);
    let retained: Vec<PostgresBackup> = backups
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::List {
            kind: "PostgresBackup",
            source,
        })?
        .into_iter()
        .filter(|backup| {
            backup.spec.deletion_policy == DeletionPolicy::Retain
                && store::owning_cluster_uid(backup) == uid
                && store::check_location(backup, &store).is_ok()
        })
        .collect();

    let deleted = if retained.is_empty() {
        store
            .delete_prefix(&prefix)
            .await
            .map_err(|error| Error::StoreDelete(error.to_string()))?
    } else {
        let keep: Vec<&str> = retained
            .iter()
            .map(|backup| backup.spec.s3.path.as_str())
            .collect();
        let base = format!("{prefix}/{}", names::BASE_DIRECTORY);
        let mut deleted = 0;
        for object in store
            .list(&base)
            .await
            .map_err(|error| Error::StoreDelete(error.to_string()))?
        {
            if !keep.contains(&object.key.as_str()) {
                store
                    .delete_object(&object.key)
                    .await
                    .map_err(|error| Error::StoreDelete(error.to_string()))?;
                deleted += 1;
            }
        }
        let positions: Vec<BackupPosition> = retained
            .iter()
            .map(|backup| BackupPosition {
                timeline: backup
                    .spec
                    .timeline
                    .and_then(|timeline| u32::try_from(timeline).ok())
                    .unwrap_or(1),
                start_lsn: backup.spec.start_lsn.clone().unwrap_or_default(),
            })
            .collect();
        let report = wal::cleanup(&store, &names::wal_prefix(&prefix), &positions)
            .await
            .map_err(|error| Error::WalCleanup(error.to_string()))?;
        deleted + report.deleted
    };
    let note = if retained.is_empty() {
        format!(
            "Deleted the {deleted} objects of cluster {} from the object store",
            cluster.name_any()
        )
    } else {
        format!(
            "Deleted {deleted} objects of cluster {} from the object store; kept the {} backups whose deletionPolicy is Retain and the WAL they need",
            cluster.name_any(),
            retained.len()
        )
    };
    events::publish(
        &context.recorder,
        reference,
        EventType::Normal,
        reasons::FINALIZER,
        "DeleteClusterData",
        note,
    )
    .await;
    Ok(())
}

/// Scales the cluster's StatefulSet to zero and waits until none of its instance pods is left,
/// so that no PostgreSQL archives WAL into the prefix once it has been swept. The StatefulSet
/// itself goes with the cluster, through the garbage collector.
async fn stop_instances(context: &Context, namespace: &str, cluster: &str) -> Result<()> {
    let stateful_sets: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
    let name = names::stateful_set(cluster);
    let scaled = stateful_sets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await;
    match scaled {
        Ok(_) => {}
        Err(error) if crate::error::is_not_found(&error) => {}
        Err(source) => {
            return Err(Error::Patch {
                kind: "StatefulSet",
                name,
                source,
            });
        }
    }
    let deadline = tokio::time::Instant::now() + INSTANCES_STOP_WAIT;
    loop {
        let running = super::instance_pods(&context.client, namespace, cluster)
            .await?
            .len();
        if running == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::InstancesStillRunning(running));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Says on a deleted cluster that its deletion cannot proceed because [`cleanup`] failed with
/// `error`: a Warning `DeletionBlocked` Event (the Recorder counts its repeats, one per retry)
/// and the condition `DeletionBlocked` with the error, written only when it changes. The
/// cluster goes, condition and all, once a retry succeeds.
pub async fn report_blocked(context: &Context, cluster: &PostgresCluster, error: &Error) {
    let message = format!(
        "The cluster's data cannot be removed from the object store; the deletion is retried: {error}"
    );
    events::publish(
        &context.recorder,
        &cluster.object_ref(&()),
        EventType::Warning,
        condition_reasons::DELETION_BLOCKED,
        "DeleteClusterData",
        message.clone(),
    )
    .await;
    let previous = cluster
        .status
        .as_ref()
        .map(|status| status.conditions.clone())
        .unwrap_or_default();
    let blocked = DesiredCondition::new(
        types::DELETION_BLOCKED,
        TRUE,
        condition_reasons::DELETION_BLOCKED,
        message,
    );
    let conditions = conditions::merge(
        &previous,
        &[blocked],
        cluster.metadata.generation,
        context.clock.now(),
    );
    if conditions == previous {
        return;
    }
    let (Some(namespace), name) = (cluster.namespace(), cluster.name_any()) else {
        return;
    };
    let written = Api::<PostgresCluster>::namespaced(context.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "conditions": conditions } })),
        )
        .await;
    if let Err(error) = written {
        tracing::warn!(cluster = %name, %namespace, %error, "cannot write the DeletionBlocked condition");
    }
}
