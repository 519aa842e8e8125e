//! The gateway's two needs from Kubernetes: whether a PostgresCluster still exists, and the
//! gateway key, kept in a Secret of the operator's own namespace.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use tusk_api::{PostgresBackup, PostgresCluster};

use super::GatewayError;
use super::access::{ClusterDirectory, ClusterRecord};
use super::credentials::{ClusterIdentity, GatewayKey};

/// Asks the API server whether a PostgresCluster exists with the uid its credentials name, and
/// which cluster's backup it is restored from.
#[derive(Clone)]
pub struct KubeClusterDirectory {
    client: kube::Client,
}

impl KubeClusterDirectory {
    /// Looks clusters up with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl ClusterDirectory for KubeClusterDirectory {
    async fn lookup(&self, cluster: &ClusterIdentity) -> Result<Option<ClusterRecord>, String> {
        let clusters: Api<PostgresCluster> =
            Api::namespaced(self.client.clone(), &cluster.namespace);
        let Some(found) = clusters
            .get_opt(&cluster.name)
            .await
            .map_err(|error| error.to_string())?
        else {
            return Ok(None);
        };
        if found.metadata.uid.as_deref() != Some(&cluster.uid) {
            return Ok(None);
        }
        let Some(restore) = &found.spec.restore else {
            return Ok(Some(ClusterRecord::default()));
        };
        // The source is the cluster that owns the backup (an ownerReference only tusk sets),
        // in this namespace: the prefix tusk wrote that backup and its WAL under.
        let backups: Api<PostgresBackup> = Api::namespaced(self.client.clone(), &cluster.namespace);
        let backup = backups
            .get_opt(&restore.backup.name)
            .await
            .map_err(|error| error.to_string())?;
        let restore_source = backup.and_then(|backup| {
            let owner = backup
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|owner| {
                    owner.controller == Some(true)
                        && owner.kind == "PostgresCluster"
                        && owner.name == backup.spec.cluster.name
                })?;
            Some(ClusterIdentity {
                namespace: cluster.namespace.clone(),
                name: owner.name.clone(),
                uid: owner.uid.clone(),
            })
        });
        Ok(Some(ClusterRecord { restore_source }))
    }
}

/// Reads the gateway key from `namespace/name` (data key `key`), creating the Secret with a
/// random key when it does not exist. Replicas racing to create it all end up reading the one
/// that won.
pub async fn ensure_gateway_key(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<GatewayKey, GatewayError> {
    let failure = |message: String| GatewayError::Key {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message,
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(|error| failure(format!("cannot read it: {error}")))?;
    let secret = match existing {
        Some(secret) => secret,
        None => {
            let generated = GatewayKey::generate();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/name".to_owned(),
                        "tusk-operator".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".to_owned()),
                data: Some(BTreeMap::from([(
                    key.to_owned(),
                    ByteString(generated.as_bytes().to_vec()),
                )])),
                ..Secret::default()
            };
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    tracing::info!(%namespace, %name, "created the store gateway key");
                    created
                }
                Err(kube::Error::Api(status)) if status.code == 409 => secrets
                    .get(name)
                    .await
                    .map_err(|error| failure(format!("cannot read it: {error}")))?,
                Err(error) => return Err(failure(format!("cannot create it: {error}"))),
            }
        }
    };
    let bytes = secret
        .data
        .and_then(|mut data| data.remove(key))
        .ok_or_else(|| failure(format!("it has no key {key:?}")))?;
    GatewayKey::new(bytes.0).map_err(|error| failure(error.to_string()))
}
