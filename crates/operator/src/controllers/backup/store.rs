//! Opening the object store a PostgresBackup's data lives in, with the operator's credentials.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tusk_api::PostgresBackup;
use tusk_backup::store::{BackupStore, StoreConfig};

use crate::context::Context;
use crate::error::{Error, Result};

/// The store configuration for the bucket and endpoint recorded in `backup`, using the
/// operator's configured scheme, region and credentials.
pub fn store_config(
    backup: &PostgresBackup,
    context: &Context,
    keys: Option<(String, String)>,
) -> StoreConfig {
    let settings = &context.config.store;
    let scheme = settings
        .url
        .split_once("://")
        .map_or("s3", |(scheme, _)| scheme);
    let url = if scheme == "file" {
        settings.url.clone()
    } else {
        format!("{scheme}://{}", backup.spec.s3.bucket)
    };
    let endpoint = backup.spec.s3.endpoint.clone();
    let allow_http = settings.allow_http
        || endpoint
            .as_deref()
            .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let (access_key_id, secret_access_key) = match keys {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (None, None),
    };
    StoreConfig {
        url,
        endpoint,
        region: settings.region.clone(),
        access_key_id,
        secret_access_key,
        allow_http,
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

/// Opens the store holding `backup`.
pub async fn open(backup: &PostgresBackup, context: &Context) -> Result<BackupStore> {
    let keys = read_keys(context).await?;
    BackupStore::new(&store_config(backup, context, keys))
        .map_err(|error| Error::StoreConfig(error.to_string()))
}

/// The WAL prefix of the cluster a backup belongs to, derived from the backup's key
/// (`<prefix>/<namespace>/<cluster>/base/<backup>.tar.gz.dare` → `.../wal`).
pub fn wal_prefix_of(backup_key: &str) -> Option<String> {
    let (cluster_prefix, _) = backup_key.rsplit_once("/base/")?;
    Some(format!("{cluster_prefix}/wal"))
}

#[cfg(test)]
mod tests {
    use super::wal_prefix_of;

    #[test]
    fn the_wal_prefix_sits_beside_the_base_backups() {
        assert_eq!(
            wal_prefix_of("backups/project-a/elephant/base/b1.tar.gz.dare").as_deref(),
            Some("backups/project-a/elephant/wal")
        );
        assert_eq!(
            wal_prefix_of("project-a/elephant/base/b1.tar.gz.dare").as_deref(),
            Some("project-a/elephant/wal")
        );
        assert_eq!(wal_prefix_of("elsewhere/b1"), None);
    }
}
