//! The object store as the operator reaches it: always the one its configuration names, with
//! its own credentials, and never a bucket or endpoint read from a custom resource. Also the
//! check that a PostgresBackup's recorded location is exactly where tusk writes that cluster's
//! backups, which is what keeps a hand-made or altered PostgresBackup from steering a deletion
//! or a restore into another cluster's data.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use tusk_api::{PostgresBackup, PostgresCluster, names};
use tusk_backup::store::{BackupStore, StoreConfig};

use crate::context::Context;
use crate::error::{Error, Result};

/// The configured store's settings, with the operator's keys when it has any.
pub fn store_config(context: &Context, keys: Option<(String, String)>) -> StoreConfig {
    let settings = &context.config.store;
    let (access_key_id, secret_access_key) = match keys {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (None, None),
    };
    StoreConfig {
        url: settings.url.clone(),
        endpoint: settings.endpoint.clone(),
        region: settings.region.clone(),
        access_key_id,
        secret_access_key,
        allow_http: settings.allow_http,
    }
}

/// Reads the operator's object-store keys from its Secret, when one is configured.
pub async fn read_keys(context: &Context) -> Result<Option<(String, String)>> {
    let Some(credentials) = &context.config.store.credentials else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(context.client.clone(), &credentials.namespace);
    let secret = api
        .get(&credentials.name)
        .await
        .map_err(|source| Error::Get {
            kind: "Secret",
            name: format!("{}/{}", credentials.namespace, credentials.name),
            source,
        })?;
    let value = |key: &str| -> Result<String> {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .ok_or_else(|| Error::SecretKeyMissing {
                namespace: credentials.namespace.clone(),
                name: credentials.name.clone(),
                key: key.to_owned(),
            })
    };
    Ok(Some((
        value(&credentials.access_key_id_key)?,
        value(&credentials.secret_access_key_key)?,
    )))
}

/// Opens the configured store.
pub async fn open(context: &Context) -> Result<BackupStore> {
    let keys = read_keys(context).await?;
    BackupStore::new(&store_config(context, keys))
        .map_err(|error| Error::StoreConfig(error.to_string()))
}

/// The prefix of one incarnation of a cluster in `store`.
pub fn cluster_prefix(
    store: &BackupStore,
    namespace: &str,
    cluster: &str,
    cluster_uid: &str,
) -> String {
    names::cluster_storage_prefix(store.prefix(), namespace, cluster, cluster_uid)
}

/// The prefix of a live cluster's objects.
pub fn prefix_of_cluster(store: &BackupStore, cluster: &PostgresCluster) -> Result<String> {
    let namespace = cluster.namespace().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "namespace",
    })?;
    let uid = cluster.uid().ok_or(Error::MissingObjectKey {
        kind: "PostgresCluster",
        field: "uid",
    })?;
    Ok(cluster_prefix(store, &namespace, &cluster.name_any(), &uid))
}

/// The uid of the PostgresCluster a backup belongs to, from its controller ownerReference,
/// which only tusk sets.
pub fn owning_cluster_uid(backup: &PostgresBackup) -> Option<String> {
    backup
        .owner_references()
        .iter()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == "PostgresCluster"
                && owner.name == backup.spec.cluster.name
        })
        .map(|owner| owner.uid.clone())
}

/// Checks that a PostgresBackup records exactly the location tusk writes for its cluster:
/// the configured bucket and endpoint, and a key directly below that cluster's `base/`
/// directory. Returns the cluster's prefix, or a sentence saying what differs. Nothing outside
/// that prefix is ever read or deleted on a PostgresBackup's word.
pub fn check_location(
    backup: &PostgresBackup,
    store: &BackupStore,
) -> std::result::Result<String, String> {
    let name = backup.name_any();
    let namespace = backup
        .namespace()
        .ok_or_else(|| format!("PostgresBackup {name} has no namespace"))?;
    let uid = owning_cluster_uid(backup).ok_or_else(|| {
        format!(
            "PostgresBackup {name} is not owned by PostgresCluster {}, so tusk did not record it",
            backup.spec.cluster.name
        )
    })?;
    let location = &backup.spec.s3;
    if location.bucket != store.bucket() {
        return Err(format!(
            "PostgresBackup {name} names bucket {:?}, not the configured backup bucket",
            shorten(&location.bucket)
        ));
    }
    if location.endpoint.as_deref() != store.endpoint() {
        return Err(format!(
            "PostgresBackup {name} names an endpoint that is not the configured object store"
        ));
    }
    let prefix = cluster_prefix(store, &namespace, &backup.spec.cluster.name, &uid);
    let base = format!("{prefix}/{}/", names::BASE_DIRECTORY);
    let valid_object = location.path.strip_prefix(&base).is_some_and(|object| {
        !object.is_empty()
            && object.ends_with(".tar.gz.dare")
            && object
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !object.contains("..")
    });
    if !valid_object {
        return Err(format!(
            "PostgresBackup {name} names object {:?}, which is not where tusk stores backups of cluster {}",
            shorten(&location.path),
            backup.spec.cluster.name
        ));
    }
    Ok(prefix)
}

/// A tenant-written value, cut short enough to quote in an Event.
fn shorten(value: &str) -> String {
    const LIMIT: usize = 120;
    let mut short: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(LIMIT)
        .collect();
    if value.chars().count() > LIMIT {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use tusk_api::backup::{PostgresBackupSpec, S3Location};
    use tusk_api::common::ClusterReference;

    fn store() -> BackupStore {
        BackupStore::new(&StoreConfig {
            url: "s3://backups/tusk".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            allow_http: true,
            ..StoreConfig::default()
        })
        .unwrap()
    }

    fn backup(bucket: &str, endpoint: Option<&str>, path: &str) -> PostgresBackup {
        let mut backup = PostgresBackup::new(
            "b1",
            PostgresBackupSpec {
                cluster: ClusterReference::new("elephant"),
                display_name: String::new(),
                triggered_by: Default::default(),
                encryption: Default::default(),
                s3: S3Location {
                    bucket: bucket.into(),
                    endpoint: endpoint.map(str::to_owned),
                    path: path.into(),
                },
                compression: Default::default(),
                size: 1,
                sha256: None,
                run_duration: None,
                start_lsn: None,
                stop_lsn: None,
                timeline: None,
                postgres_version: None,
                deletion_policy: Default::default(),
            },
        );
        backup.metadata.namespace = Some("project-a".into());
        backup.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "postgres.tusk.dev/v1".into(),
            kind: "PostgresCluster".into(),
            name: "elephant".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        backup
    }

    const ENDPOINT: Option<&str> = Some("http://127.0.0.1:9000");

    #[test]
    fn a_backup_where_tusk_put_it_passes() {
        let good = backup(
            "backups",
            ENDPOINT,
            "tusk/project-a/elephant/uid-1/base/req-1.tar.gz.dare",
        );
        assert_eq!(
            check_location(&good, &store()).unwrap(),
            "tusk/project-a/elephant/uid-1"
        );
    }

    #[test]
    fn every_other_location_is_refused() {
        let store = store();
        for (bucket, endpoint, path) in [
            // Another tenant's data.
            (
                "backups",
                ENDPOINT,
                "tusk/project-b/elephant/uid-1/base/req-1.tar.gz.dare",
            ),
            // The same name's previous incarnation.
            (
                "backups",
                ENDPOINT,
                "tusk/project-a/elephant/uid-0/base/req-1.tar.gz.dare",
            ),
            // The cluster's whole WAL archive, or its whole prefix.
            ("backups", ENDPOINT, "tusk/project-a/elephant/uid-1/wal"),
            ("backups", ENDPOINT, "tusk/project-a/elephant/uid-1/base/"),
            // Escapes.
            (
                "backups",
                ENDPOINT,
                "tusk/project-a/elephant/uid-1/base/../../../project-b/x.tar.gz.dare",
            ),
            (
                "backups",
                ENDPOINT,
                "tusk/project-a/elephant/uid-1/base/a/b.tar.gz.dare",
            ),
            // Another bucket or endpoint: requests the operator would sign for the tenant.
            (
                "other",
                ENDPOINT,
                "tusk/project-a/elephant/uid-1/base/req-1.tar.gz.dare",
            ),
            (
                "backups",
                Some("http://attacker.example:9000"),
                "tusk/project-a/elephant/uid-1/base/req-1.tar.gz.dare",
            ),
            (
                "backups",
                None,
                "tusk/project-a/elephant/uid-1/base/req-1.tar.gz.dare",
            ),
        ] {
            let candidate = backup(bucket, endpoint, path);
            assert!(
                check_location(&candidate, &store).is_err(),
                "{bucket} {endpoint:?} {path} was accepted"
            );
        }
        let mut unowned = backup(
            "backups",
            ENDPOINT,
            "tusk/project-a/elephant/uid-1/base/req-1.tar.gz.dare",
        );
        unowned.metadata.owner_references = None;
        assert!(check_location(&unowned, &store).is_err());
    }
}
