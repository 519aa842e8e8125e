//! The light reconcile of a restoring cluster.
//!
//! While a restore runs, nothing about the cluster changes but how far its instance got, which
//! the instance writes to its log, so the status is refreshed every two seconds. Applying every
//! child each time would be a dozen requests every two seconds that change nothing: between two
//! full reconciles ([`FULL_APPLY_INTERVAL`] apart, and at once when the spec changes), a
//! restoring cluster's reconcile reads its StatefulSet, pods, backup and log, publishes the
//! Events of its instance's failures, and writes its status only when it changed.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tusk_api::cluster::ClusterPhase;
use tusk_api::conditions::{TRUE, types};
use tusk_api::{PostgresBackup, PostgresCluster, names};

use super::{
    FAILING_RESYNC, RESTORE_PROGRESS_RESYNC, instance_pods, report_instance_failures,
    restore_progress, status, write_status,
};
use crate::conditions;
use crate::context::Context;
use crate::error::{Error, Result};

/// How long a restoring cluster goes without a full reconcile.
pub const FULL_APPLY_INTERVAL: SignedDuration = SignedDuration::from_secs(30);

/// Notes that the cluster was fully reconciled at its current generation.
pub fn record_full_apply(context: &Context, cluster: &PostgresCluster) {
    context
        .full_applies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            cluster.uid().unwrap_or_default(),
            (cluster.metadata.generation, context.clock.now()),
        );
}

/// Forgets a deleted cluster.
pub fn forget(context: &Context, cluster: &PostgresCluster) {
    context
        .full_applies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&cluster.uid().unwrap_or_default());
}

/// Whether the cluster was fully reconciled at its current generation within
/// [`FULL_APPLY_INTERVAL`] of `now`.
fn recently_applied(context: &Context, cluster: &PostgresCluster, now: Timestamp) -> bool {
    context
        .full_applies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cluster.uid().unwrap_or_default())
        .is_some_and(|(generation, at)| {
            *generation == cluster.metadata.generation
                && now.duration_since(*at) < FULL_APPLY_INTERVAL
        })
}

/// Refreshes a restoring cluster's status without applying its children, when it is restoring
/// and was fully reconciled recently; `None` when a full reconcile is due.
pub async fn refresh(
    context: &Context,
    cluster: &PostgresCluster,
    namespace: &str,
) -> Result<Option<Action>> {
    let now = context.clock.now();
    let restoring = cluster
        .status
        .as_ref()
        .is_some_and(|status| status.phase == Some(ClusterPhase::Restoring));
    if !restoring || !recently_applied(context, cluster, now) {
        return Ok(None);
    }
    let client = &context.client;
    let name = cluster.name_any();
    let Some(stateful_set) = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(&names::stateful_set(&name))
        .await
        .map_err(|source| Error::Get {
            kind: "StatefulSet",
            name: names::stateful_set(&name),
            source,
        })?
    else {
        return Ok(None);
    };
    if !status::restore_under_way(cluster, &stateful_set) {
        return Ok(None);
    }
    let pods = instance_pods(client, namespace, &name).await?;
    let previous = cluster.status.clone().unwrap_or_default();
    let restore_progress = match (
        status::instance_pod(&stateful_set, &pods),
        &cluster.spec.restore,
    ) {
        (Some(pod), Some(restore)) => {
            let backup = Api::<PostgresBackup>::namespaced(client.clone(), namespace)
                .get_opt(&restore.backup.name)
                .await
                .map_err(|source| Error::Get {
                    kind: "PostgresBackup",
                    name: restore.backup.name.clone(),
                    source,
                })?;
            restore_progress::progress(
                cluster,
                backup.as_ref(),
                restore_progress::read(client, pod).await,
                previous.restore_progress.as_ref(),
            )
        }
        _ => None,
    };
    let status = status::compute(&status::Observed {
        cluster,
        stateful_set: &stateful_set,
        pods: &pods,
        expanding_volumes: &[],
        last_backup: previous.last_backup.clone(),
        restore_progress,
        external_endpoint: status::external_endpoint(&context.config.tunnel, cluster),
        now,
    });
    report_instance_failures(context, cluster, &status, &stateful_set, &pods, None).await;
    if status != previous {
        write_status(client, namespace, &name, &status).await?;
    }
    let failing = conditions::find(&status.conditions, types::DEGRADED)
        .is_some_and(|condition| condition.status == TRUE);
    Ok(Some(Action::requeue(if failing {
        FAILING_RESYNC
    } else {
        RESTORE_PROGRESS_RESYNC
    })))
}
