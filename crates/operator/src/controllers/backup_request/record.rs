//! Recording a finished backup. The Job reports what it stored in its request's status; a
//! token that can write that status is within a tenant's reach, so the report is only a claim.
//! The operator checks it against the object store, at the key tusk itself expects for this
//! request, reads the object through to compare its size and SHA-256, and only then creates
//! the PostgresBackup. Nothing else ever creates one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tusk_api::backup::{BackupEncryption, PostgresBackup, PostgresBackupSpec, S3Location};
use tusk_api::backup_request::BackupResult;
use tusk_api::common::{SecretKeySelector, TriggeredBy};
use tusk_api::{PostgresBackupRequest, PostgresCluster, labels as api_labels, names};

use crate::context::Context;
use crate::controllers::backup::store;
use crate::error::{Error, Result, is_conflict};

/// How recording ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The PostgresBackup of this name describes the stored object.
    Succeeded(String),
    /// Nothing was recorded; a sentence for the request's status.
    Failed(String),
}

/// The key tusk expects a request's backup under.
pub fn expected_key(cluster_prefix: &str, request: &PostgresBackupRequest) -> Option<String> {
    Some(names::base_backup_key(cluster_prefix, &request.uid()?))
}

/// Checks the Job's report against the store and records the PostgresBackup.
pub async fn record(
    context: &Context,
    request: &PostgresBackupRequest,
    result: &BackupResult,
    triggered_by: TriggeredBy,
    namespace: &str,
) -> Result<Recorded> {
    let name = request.name_any();
    let cluster_name = &request.spec.cluster.name;
    let clusters: Api<PostgresCluster> = Api::namespaced(context.client.clone(), namespace);
    let Some(cluster) = clusters
        .get_opt(cluster_name)
        .await
        .map_err(|source| Error::Get {
            kind: "PostgresCluster",
            name: cluster_name.clone(),
            source,
        })?
    else {
        return Ok(Recorded::Failed(format!(
            "PostgresCluster {cluster_name} was deleted before its backup could be recorded"
        )));
    };
    let store = store::open(context).await?;
    let cluster_prefix = store::prefix_of_cluster(&store, &cluster)?;
    let expected = expected_key(&cluster_prefix, request).ok_or(Error::MissingObjectKey {
        kind: "PostgresBackupRequest",
        field: "uid",
    })?;
    if result.key != expected {
        // Not ours to delete: the key may be anything the report's writer chose.
        return Ok(Recorded::Failed(
            "The backup Job reported an object that is not at the key tusk expects for this request; nothing was recorded".to_owned(),
        ));
    }
    let stored = store
        .digest(&expected)
        .await
        .map_err(|error| Error::StoreRead(error.to_string()))?;
    let Some(stored) = stored else {
        return Ok(Recorded::Failed(
            "The backup Job reported an object that is not in the object store; nothing was recorded".to_owned(),
        ));
    };
    let size_matches = u64::try_from(result.size).is_ok_and(|size| size == stored.size);
    if !size_matches || stored.sha256 != result.sha256 {
        discard(&store, &expected).await?;
        return Ok(Recorded::Failed(format!(
            "The stored object ({} bytes) does not match the backup Job's report ({} bytes, and its SHA-256); it was deleted and nothing was recorded",
            stored.size, result.size
        )));
    }

    let backup = backup_resource(request, &cluster, result, triggered_by, &store)?;
    let backups: Api<PostgresBackup> = Api::namespaced(context.client.clone(), namespace);
    match backups.create(&PostParams::default(), &backup).await {
        Ok(_) => Ok(Recorded::Succeeded(name)),
        Err(error) if is_conflict(&error) => {
            let existing = backups.get_opt(&name).await.map_err(|source| Error::Get {
                kind: "PostgresBackup",
                name: name.clone(),
                source,
            })?;
            if existing.is_some_and(|existing| existing.spec.s3.path == expected) {
                // Recorded by an earlier attempt of this same reconcile.
                return Ok(Recorded::Succeeded(name));
            }
            discard(&store, &expected).await?;
            Ok(Recorded::Failed(format!(
                "A PostgresBackup named {name} already exists and records another backup; this one was discarded. Request a backup under a name no PostgresBackup has"
            )))
        }
        Err(source) => Err(Error::Create {
            kind: "PostgresBackup",
            name,
            source,
        }),
    }
}

/// Deletes an object at a key tusk chose for this request, which nothing will record.
async fn discard(store: &tusk_backup::BackupStore, key: &str) -> Result<()> {
    store
        .delete_object(key)
        .await
        .map_err(|error| Error::StoreDelete(error.to_string()))
}

/// The PostgresBackup describing a checked backup, owned by its cluster.
pub fn backup_resource(
    request: &PostgresBackupRequest,
    cluster: &PostgresCluster,
    result: &BackupResult,
    triggered_by: TriggeredBy,
    store: &tusk_backup::BackupStore,
) -> Result<PostgresBackup> {
    let cluster_name = cluster.name_any();
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey {
            kind: "PostgresCluster",
            field: "uid",
        })?;
    let spec = PostgresBackupSpec {
        cluster: request.spec.cluster.clone(),
        display_name: request.name_any(),
        triggered_by,
        encryption: BackupEncryption {
            passphrase_secret_ref: SecretKeySelector {
                name: names::credentials_secret(&cluster_name),
                key: names::secret_keys::BACKUP_PASSPHRASE.to_owned(),
            },
            ..BackupEncryption::default()
        },
        s3: S3Location {
            bucket: store.bucket().to_owned(),
            endpoint: store.endpoint().map(str::to_owned),
            path: result.key.clone(),
        },
        compression: result.compression,
        size: result.size,
        sha256: Some(result.sha256.clone()),
        run_duration: Some(result.run_duration.clone()),
        start_lsn: Some(result.start_lsn.clone()),
        stop_lsn: Some(result.stop_lsn.clone()),
        timeline: Some(result.timeline),
        postgres_version: Some(result.postgres_version.clone()),
        deletion_policy: Default::default(),
    };
    Ok(PostgresBackup {
        metadata: ObjectMeta {
            name: Some(request.name_any()),
            namespace: request.namespace(),
            owner_references: Some(vec![owner]),
            labels: Some(
                [(api_labels::CLUSTER.to_owned(), cluster_name)]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}
