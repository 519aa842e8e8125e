//! Aborting the multipart upload a finished request left behind. The backup Job aborts its
//! upload itself when it fails, but a Job that was killed (deadline, node loss, a pod deleted
//! without grace) cannot, and S3 keeps the parts of an unfinished upload forever. So the Job
//! records the upload's id in the request's status before it sends any data, and once the
//! request has ended and no pod of its Job runs any more, this aborts that upload with the
//! platform's credentials and clears the record. Deleting the cluster aborts the recorded
//! uploads of backups still in flight (see [`abort_recorded`]).
//!
//! The record is written through a token a tenant can reach, so it is only a claim: the upload
//! is aborted only at the exact key tusk expects for this request's backup, below its cluster's
//! own prefix, never at a key the record names otherwise.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use tusk_api::{PostgresBackupRequest, names};
use tusk_backup::BackupStore;

use crate::context::Context;
use crate::controllers::backup::store;
use crate::error::{Error, Result};

use super::record::expected_key;

/// How long to wait for the Job's pods to stop before aborting: an upload must not be aborted
/// while a live process may still add parts to it.
pub const POD_STOP_RECHECK: Duration = Duration::from_secs(10);

/// What became of a finished request's recorded upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing is recorded, or the record was dealt with and cleared.
    Done,
    /// A pod of the Job still runs; look again after this long.
    WaitForPods(Duration),
}

/// Whether a pod may still be running the backup program.
fn may_run(pod: &Pod) -> bool {
    !matches!(
        pod.status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Aborts the upload a finished request records, if any (see the module documentation).
pub async fn abort_leftover(
    context: &Context,
    request: &PostgresBackupRequest,
    namespace: &str,
) -> Result<Cleanup> {
    let Some(upload) = request
        .status
        .as_ref()
        .and_then(|status| status.upload.clone())
    else {
        return Ok(Cleanup::Done);
    };
    let name = request.name_any();
    let job_name = names::backup_job(&name);
    let pods = Api::<Pod>::namespaced(context.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .map_err(|source| Error::List {
            kind: "Pod",
            source,
        })?;
    if pods.items.iter().any(may_run) {
        return Ok(Cleanup::WaitForPods(POD_STOP_RECHECK));
    }

    let cluster = super::requested_cluster(context, request, namespace).await?;
    let store = store::open(context).await?;
    let aborted = match &cluster {
        Some(cluster) => {
            abort_recorded(&store, &store::prefix_of_cluster(&store, cluster)?, request).await?
        }
        None => false,
    };
    if aborted {
        tracing::info!(request = %name, %namespace, key = %upload.key, "aborted the unfinished upload of a finished backup request");
    } else {
        // Not this request's key (or its cluster is gone, and with it the prefix tusk could
        // check against): whoever wrote the record chose the key, so nothing is touched.
        tracing::warn!(request = %name, %namespace, "a finished backup request records an upload that is not at its own key; it was left alone");
    }
    super::patch_status(context, request, namespace, json!({ "upload": null })).await?;
    Ok(Cleanup::Done)
}

/// Aborts the upload `request` records, if it is at the key tusk expects for the request's
/// backup below `cluster_prefix`; returns whether it was. Aborting an upload that is already
/// gone succeeds.
pub async fn abort_recorded(
    store: &BackupStore,
    cluster_prefix: &str,
    request: &PostgresBackupRequest,
) -> Result<bool> {
    let Some(upload) = request
        .status
        .as_ref()
        .and_then(|status| status.upload.as_ref())
    else {
        return Ok(false);
    };
    if expected_key(cluster_prefix, request).as_deref() != Some(upload.key.as_str()) {
        return Ok(false);
    }
    store
        .abort_upload(&upload.key, &upload.upload_id)
        .await
        .map_err(|error| Error::StoreDelete(error.to_string()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn pod(phase: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: phase.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_an_upload_at_the_requests_own_key_is_aborted() {
        use tusk_api::PostgresBackupRequestSpec;
        use tusk_api::backup_request::{PostgresBackupRequestStatus, UploadInProgress};
        use tusk_api::common::ClusterReference;

        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store = BackupStore::new(&tusk_backup::StoreConfig {
            url: url.to_string(),
            ..Default::default()
        })
        .unwrap();
        let prefix = "shop/elephant/cluster-uid";
        let with_upload = |key: &str| {
            let mut request = PostgresBackupRequest::new(
                "nightly",
                PostgresBackupRequestSpec {
                    cluster: ClusterReference::new("elephant"),
                },
            );
            request.metadata.uid = Some("request-uid".into());
            request.status = Some(PostgresBackupRequestStatus {
                upload: Some(UploadInProgress {
                    key: key.into(),
                    upload_id: "upload-1".into(),
                }),
                ..Default::default()
            });
            request
        };
        let own = format!("{prefix}/base/request-uid.tar.gz.dare");
        assert!(
            abort_recorded(&store, prefix, &with_upload(&own))
                .await
                .unwrap()
        );
        for foreign in [
            "shop/other/other-uid/base/request-uid.tar.gz.dare",
            "shop/elephant/cluster-uid/base/another-request.tar.gz.dare",
            "shop/elephant/cluster-uid/wal/000000010000000000000001.gz.dare",
        ] {
            assert!(
                !abort_recorded(&store, prefix, &with_upload(foreign))
                    .await
                    .unwrap(),
                "{foreign}"
            );
        }
    }

    #[test]
    fn only_a_pod_that_has_stopped_for_good_cannot_add_parts() {
        assert!(may_run(&pod(Some("Running"))));
        assert!(may_run(&pod(Some("Pending"))));
        assert!(may_run(&pod(None)));
        assert!(!may_run(&pod(Some("Failed"))));
        assert!(!may_run(&pod(Some("Succeeded"))));
    }
}
